"""Installs soundlm: JAX/Flax AudioLM, SoundStorm and SoundStream on device meshes."""
import setuptools

# Ranges known to resolve together with pip on Python 3.11 (CPU); for TPUs
# install `jax[tpu]` and for CUDA GPUs `jax[cuda12]` on top (see README).
INSTALL_REQUIRES = [
    "jax>=0.10,<0.12",
    "flax>=0.12,<0.13",
    "optax>=0.2.5,<0.3",
    "orbax-checkpoint>=0.12,<0.13",
    "gin-config>=0.5,<0.6",
    "numpy>=1.26",
    "soundfile>=0.13,<0.15",
    "tensorboardX>=2.6",
    "matplotlib>=3.8",
    # Data pipelines (soundlm/data only; imported lazily).
    "tensorflow>=2.20,<2.22",
    "tensorflow-datasets>=4.9.9,<5",
    "seqio>=0.0.20",
]

setuptools.setup(
    name="soundlm",
    version="0.1.0",
    description="AudioLM, SoundStorm and SoundStream in JAX/Flax, sharded over device meshes.",
    packages=setuptools.find_packages(include=["soundlm", "soundlm.*"]),
    package_data={
        # Gin configs (`gin/...` names resolve inside the package) and the
        # built-in speech and piano corpus ship with the package.
        "soundlm": ["gin/*/*.gin"],
        "soundlm.io.corpus": ["builtin/*/*/*.flac", "builtin/*/*/*.json",
                              "builtin/*/*/*.mid"],
    },
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    # jax[tpu] adds libtpu at the version matching jax (0.0.42.* for jax 0.10.2; a
    # 213 MB wheel): XLA:TPU's compiler, which `soundlm compile` and its tests use
    # to compile for TPU slices on a CPU host.
    # gcp-storage-emulator and gcsfs: a real GCS server on the loopback address
    # for the gs:// work-dir tests.
    # eval: the perceptual metrics of `soundlm eval` (soundlm.evaluation.metrics):
    # ViSQOL (pure Python; its [accel] numba kernels make it ~15x faster after a
    # one-off compile of ~30 s), wide-band PESQ (an sdist: needs a C compiler)
    # and STOI.
    extras_require={"test": ["pytest>=8", "pytest-xdist>=3.5", "jax[tpu]",
                             "gcp-storage-emulator>=2024.8", "gcsfs>=2024.2"],
                    "eval": ["visqol-python[accel]>=3.8,<4", "pesq>=0.0.4,<0.1",
                             "pystoi>=0.4,<0.5"]},
    entry_points={"console_scripts": ["soundlm=soundlm.cli:main"]},
)
