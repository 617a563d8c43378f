"""Compile the project's programs for a TPU slice on any host: `soundlm compile`.

    python -m soundlm.compile --topology v4-128 --program soundstorm_train --partitioning fsdp
    python -m soundlm.compile --topology v5e-16 --program soundstorm_train --search_batch

Whether a program compiles for a slice, fits in its HBM and how much work it
does is XLA's answer, and XLA gives it without the slice: with libtpu
installed (`pip install libtpu==0.0.42.*`, the version `jax[tpu]` pins for
jax 0.10.2), `jax.experimental.topologies` makes compile-only devices of any
slice, and each program is lowered from abstract inputs (shapes, dtypes and
shardings over a mesh of those devices: nothing is allocated) and compiled by
XLA:TPU as a job on the slice would compile it. Per program the report gives

* compiled or not, with XLA's error (a program too large for HBM fails here);
* bytes per device from XLA's memory analysis: arguments, outputs (less what
  the donated state aliases), temporaries, code, and their total against the
  chip's HBM;
* FLOPs per call: the whole computation (HLO before partitioning) and one
  device's share (after it), from XLA's cost analysis; loops count as often
  as they run (a decode's forward pass or cached step is compiled on its own
  and multiplied by its trip count, since XLA counts a loop body once);
* the roofline time at the chip's datasheet peaks, max(FLOPs / peak FLOP/s,
  bytes accessed / HBM bandwidth) per device: a lower bound, not a measurement;
* lowering and compile seconds on this host;
* with `--search_batch`, the largest global batch of a training step that
  compiles and fits (doubling, then bisection over whole batch shards).

Programs (`--program`, default all), each at `--size paper` or `tiny`:

* `<model>_train`: the training step exactly as `soundlm.trainer.Trainer`
  jits it (`Trainer.lower_step`: sharded state, donated, gin's `Trainer.*`),
  for the task and batch size of the model's run file (`gin/runs/...`; the
  crops below). Models: soundstorm, w2v_bert, codec, audiolm_{semantic,coarse,
  fine};
* `soundstorm_decode`: SoundStorm's whole MaskGIT decode (the paper's schedule,
  27 passes for 12 levels) of a `--seconds` window;
* `audiolm_{semantic,coarse,fine}_decode`: one window of a stage's KV-cached
  generation (`Decoder.generate`'s jit: prefill, then the sampling loop) as
  `soundlm.audiolm.sampling` runs it after the first window;
* `codec_encode`, `codec_decode`: SoundStream on `--seconds` of audio.

The mesh and logical axis rules come from `--partitioning`
(`gin/partitioning/<name>.gin`, or the run file's own when not given),
`--gin_file` and `--gin.NAME=VALUE` flags (e.g. `--gin.make_mesh.tensor=4`);
the codec is replicated, as `soundlm.codec.Codec` places it. `--table` runs
every combination of the topologies, partitionings and programs given and
writes one table (`--markdown BENCHMARKS.md` puts it into its block).
"""
import argparse
import dataclasses
import functools
import itertools
import logging
import math
import os
import re
import sys
import tempfile
import time
from typing import Callable, Mapping, Sequence

import gin
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from soundlm import checkpoints
from soundlm import gin_utils
from soundlm import models
from soundlm import partitioning
from soundlm import trainer as trainer_lib
from soundlm.audiolm.decoding import Decoder, SamplingConfig
from soundlm.audiolm.layouts import Layout
from soundlm.audiolm.model import DecoderLM, ModelConfig, StageConfig
from soundlm.bench import audiolm as audiolm_bench
from soundlm.bench import common
from soundlm.codec.model import SoundStream, SoundStreamConfig
from soundlm.layers import stack
from soundlm.soundstorm import decoding as storm_decoding
from soundlm.soundstorm import schedule as schedule_lib
from soundlm.soundstorm.model import SoundStormConfig, SoundStormModel

LIBTPU_REQUIREMENT = "libtpu==0.0.42.*"  # what jax[tpu] pins for jax 0.10.2
SEMANTIC_RATE_HZ = 25  # w2v-BERT tokens; SoundStorm windows are whole semantic frames
W2V_BERT_SAMPLE_RATE = 16_000
SIZES = ("paper", "tiny")

# --- slices --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Generation:
  """A TPU generation: libtpu's topology prefix and what a device holds."""
  libtpu: str          # prefix of libtpu's topology names ('v4:2x2x1')
  chip_config: str     # 'megacore': one device spans a chip's two TensorCores
  dims: int            # chips form a 3-D torus or a 2-D mesh
  cores_per_chip: int  # slice names count TensorCores (v4-8 is 4 chips)
  hbm_gib: float       # per device (datasheet)


GENERATIONS = {
    "v4": Generation("v4", "megacore", 3, 2, 32),
    "v5p": Generation("v5", "megacore", 3, 2, 95),
    "v5e": Generation("v5e", "default", 2, 1, 16),
    "v6e": Generation("v6e", "default", 2, 1, 32),
}
_SLICE_NAME = re.compile(r"(v4|v5p|v5e|v5litepod|v6e)-(\d+)")
_LIBTPU_NAME = re.compile(r"(v4|v5|v5e|v6e):(\d+(?:x\d+)+)")


@dataclasses.dataclass(frozen=True)
class Slice:
  """A TPU slice by its chips' shape; `name` as the user gave it."""
  name: str
  generation: str
  shape: tuple[int, ...]

  @property
  def spec(self) -> Generation:
    return GENERATIONS[self.generation]

  @property
  def topology(self) -> str:
    return f"{self.spec.libtpu}:{'x'.join(map(str, self.shape))}"

  @property
  def num_devices(self) -> int:
    return math.prod(self.shape)

  @property
  def hbm_bytes(self) -> int:
    return int(self.spec.hbm_gib * 2**30)

  def wrap(self) -> tuple[bool, bool, bool]:
    """Torus links: a v4/v5p slice of whole 4x4x4 cubes wraps in every
    dimension; a v5e/v6e pod wraps along its full 16-chip sides."""
    if self.spec.dims == 3:
      return (min(self.shape) >= 4,) * 3
    return (self.shape[0] == 16, self.shape[1] == 16, False)

  def host_bounds(self) -> tuple[int, int, int]:
    """Chips per host in each dimension (2x2 for multi-chip slices)."""
    return (min(self.shape[0], 2), min(self.shape[1], 2), 1)


def _default_shape(chips: int, dims: int, name: str) -> tuple[int, ...]:
  """The usual shape of a power-of-two slice: each dimension grows to 2 in
  turn, then the last, ..., the first double in turn (v4-128: 4x4x4, v5e-128:
  8x16)."""
  if chips < 1 or chips & (chips - 1):
    raise ValueError(f"--topology {name}: {chips} chips has no default shape; give "
                     f"libtpu's form instead (e.g. v4:4x4x12)")
  shape = [1] * dims
  for step in range(chips.bit_length() - 1):
    axis = step if step < dims else dims - 1 - (step - dims) % dims
    shape[axis] *= 2
  return tuple(shape)


def parse_slice(name: str) -> Slice:
  """'v4-8', 'v5e-256', 'v5litepod-16', 'v5p-128', 'v6e-64', or libtpu's
  'v4:2x2x1' / 'v5e:4x4' / 'v5:2x2x1' (v5p)."""
  match = _SLICE_NAME.fullmatch(name)
  if match:
    generation = {"v5litepod": "v5e"}.get(match[1], match[1])
    spec, count = GENERATIONS[generation], int(match[2])
    if count % spec.cores_per_chip:
      raise ValueError(f"--topology {name}: {generation} slices count "
                       f"{spec.cores_per_chip} TensorCores per chip; {count} is not a "
                       "whole number of chips")
    return Slice(name, generation, _default_shape(count // spec.cores_per_chip, spec.dims,
                                                  name))
  match = _LIBTPU_NAME.fullmatch(name)
  if match:
    generation = next(g for g, s in GENERATIONS.items() if s.libtpu == match[1])
    shape = tuple(int(d) for d in match[2].split("x"))
    if len(shape) != GENERATIONS[generation].dims or min(shape) < 1:
      raise ValueError(f"--topology {name}: {generation} slices have "
                       f"{GENERATIONS[generation].dims} positive dimensions")
    return Slice(name, generation, shape)
  raise ValueError(f"--topology {name!r}: expected a slice such as v4-8, v4-128, v5e-16, "
                   "v5p-8, v6e-64, or libtpu's form such as v4:2x2x1 or v5e:4x4")


def _prepare_libtpu():
  """Checks that libtpu is installed and gives it the settings of a lone host,
  which it reads when it starts: compile-only devices touch no chip, so neither
  a lock on this host's TPUs nor a metadata server is needed."""
  if os.environ.get("TPU_LIBRARY_PATH") is None:
    import importlib.util
    if importlib.util.find_spec("libtpu") is None:
      raise RuntimeError("compiling for a TPU slice needs libtpu, XLA:TPU's compiler: "
                         f"pip install '{LIBTPU_REQUIREMENT}' (jax[tpu]'s pin for this jax)")
  for key, value in (("ALLOW_MULTIPLE_LIBTPU_LOAD", "1"), ("TPU_SKIP_MDS_QUERY", "1"),
                     ("TPU_ACCELERATOR_TYPE", "v4-8"), ("TPU_WORKER_ID", "0"),
                     ("TPU_WORKER_HOSTNAMES", "localhost")):
    os.environ.setdefault(key, value)


def libtpu_available() -> bool:
  """Whether libtpu can be found (for callers that skip rather than fail)."""
  import importlib.util
  return bool(os.environ.get("TPU_LIBRARY_PATH")) or importlib.util.find_spec(
      "libtpu") is not None


@functools.lru_cache(maxsize=None)
def slice_devices(tpu: Slice) -> tuple[jax.Device, ...]:
  """Compile-only devices of `tpu`."""
  from jax.experimental import topologies
  _prepare_libtpu()
  description = topologies.get_topology_desc(
      platform="tpu", topology_name=tpu.topology, chip_config_name=tpu.spec.chip_config,
      chips_per_host_bounds=tpu.host_bounds(), num_slices=1, wrap=tpu.wrap())
  devices = tuple(description.devices)
  if len(devices) != tpu.num_devices:
    raise RuntimeError(f"libtpu made {len(devices)} devices for {tpu.topology}, expected "
                       f"{tpu.num_devices}")
  return devices


# --- programs --------------------------------------------------------------------


@dataclasses.dataclass
class Setting:
  """What one compilation is of: the mesh, the rules, the batch and the window."""
  mesh: jax.sharding.Mesh
  rules: tuple
  size: str
  batch: int | None     # None: the program's default
  seconds: float | None  # None: the program's default

  @property
  def partitioner(self) -> partitioning.Partitioner:
    return partitioning.Partitioner.of(self.mesh, self.rules)


@dataclasses.dataclass(frozen=True)
class Work:
  """`fn(*args)` runs `times` per call of a program: the FLOPs are counted on
  these (a loop's body times its trip count; XLA counts a loop body once)."""
  fn: Callable
  args: tuple
  times: int = 1


@dataclasses.dataclass
class Built:
  """A lowered program, the work it does, and the rules its constraints use;
  `loops`: whether its work is counted on separately compiled pieces."""
  lowered: jax.stages.Lowered
  batch: int
  seconds: float | None
  work: Sequence[Work]
  rules: tuple
  loops: bool = False
  train_step: "TrainStep | None" = None  # a training program's, for the batch search


@dataclasses.dataclass(frozen=True)
class Program:
  name: str
  kind: str                                   # 'train' or 'inference'
  gin_files: Mapping[str, tuple[str, ...]]    # per size: what defines the model
  seconds: Mapping[str, float | None]         # per size: the default window
  build: Callable[["Program", Setting], Built]


def _replicated(mesh):
  return NamedSharding(mesh, PartitionSpec())


def _batched(mesh, shape, dtype) -> jax.ShapeDtypeStruct:
  """An abstract batch array split over the data axes."""
  return jax.ShapeDtypeStruct(shape, dtype,
                              sharding=partitioning.batch_sharding(mesh, len(shape)))


def _keys(mesh, batch: int) -> jax.ShapeDtypeStruct:
  """One abstract key per example (traced: nothing runs on the mesh's devices)."""
  return _batched(mesh, (batch,), jax.eval_shape(lambda: jax.random.key(0)).dtype)


def _variables(family_name: str, config, partitioner: partitioning.Partitioner):
  """Abstract inference variables of a model, laid out as `models.load` would."""
  abstract = models.FAMILIES[family_name].abstract_variables(config)
  return checkpoints.abstract_like(partitioning.unbox(abstract),
                                   partitioner.shardings(abstract))


def _check_batch(batch: int, mesh) -> int:
  shards = partitioning.num_batch_shards(mesh)
  if batch < 1 or batch % shards:
    raise ValueError(f"batch {batch} is not a positive multiple of the mesh's {shards} "
                     "batch shards (data x fsdp)")
  return batch


def _frames(seconds: float) -> int:
  """Semantic frames in a window of `seconds`, which must be whole."""
  frames = seconds * SEMANTIC_RATE_HZ
  if seconds <= 0 or abs(frames - round(frames)) > 1e-6:
    raise ValueError(f"--seconds {seconds}: windows are whole {SEMANTIC_RATE_HZ} Hz "
                     "semantic frames")
  return round(frames)


# Training steps -------------------------------------------------------------------

def _soundstorm_batch(task, seconds):
  config = task.model_config
  semantic = _frames(seconds)
  frames = semantic * config.frames_per_semantic_token
  return {"semantic": ((semantic,), jnp.int32),
          "codes": ((frames, config.num_levels), jnp.int32),
          "padding_mask": ((frames,), jnp.bool_)}


def _audiolm_batch(task, seconds):
  del seconds  # the layout's crop
  return {"tokens": ((task.layout.sequence_length(),), jnp.int32)}


def _w2v_bert_batch(task, seconds):
  del task
  return {"wav": ((round(seconds * W2V_BERT_SAMPLE_RATE),), jnp.float32)}


def _codec_batch(task, seconds):
  hop = task.model.hop_length
  samples = round(seconds * task.model_config.sample_rate / hop) * hop
  return {task.feature_key: ((samples,), jnp.float32)}


# Each training program's batch, as the run file's data pipeline makes it.
TRAIN_BATCHES = {"soundstorm_train": _soundstorm_batch, "w2v_bert_train": _w2v_bert_batch,
                 "codec_train": _codec_batch, "audiolm_semantic_train": _audiolm_batch,
                 "audiolm_coarse_train": _audiolm_batch, "audiolm_fine_train": _audiolm_batch}


def _configured(selector: str):
  """The object that a binding such as `train.task = @Task()` configures."""
  try:
    reference = gin.query_parameter(selector)
  except ValueError as error:
    raise ValueError(f"the gin configuration binds no {selector}") from error
  return reference.scoped_configurable_fn()


class TrainStep:
  """A `Trainer` of the gin-configured task, lowered at any batch size."""

  def __init__(self, program: str, setting: Setting):
    self.batch_spec = TRAIN_BATCHES[program]
    self.task = _configured("train.task")
    # The run file's global batch: `batch_size` of what `train.data` binds.
    self.default_batch = gin.query_parameter(
        f"{gin.query_parameter('train.data').selector}.batch_size")
    self._workdir = tempfile.TemporaryDirectory(prefix="soundlm-compile-")
    self.trainer = trainer_lib.Trainer(self.task, None, self._workdir.name,
                                       mesh=setting.mesh, rules=setting.rules,
                                       async_checkpoints=False)

  def lower(self, batch: int, seconds: float | None) -> tuple[jax.stages.Lowered, Work]:
    mesh = self.trainer.mesh
    arrays = {key: _batched(mesh, (_check_batch(batch, mesh), *shape), dtype)
              for key, (shape, dtype) in self.batch_spec(self.task, seconds).items()}
    lowered = self.trainer.lower_step(arrays)
    state = self.trainer.abstract_state(arrays)
    return lowered, Work(self.trainer.train_step, (state, arrays))

  def close(self):
    self.trainer.checkpointer.close()
    self._workdir.cleanup()


def _build_train(program: Program, setting: Setting) -> Built:
  step = TrainStep(program.name, setting)
  try:
    batch = setting.batch or step.default_batch
    seconds = setting.seconds or program.seconds[setting.size]
    lowered, work = step.lower(batch, seconds)
  except BaseException:
    step.close()
    raise
  # A scanned layer stack is a loop: its work is counted on the unrolled step.
  config = step.task.model_config
  scanned = getattr(getattr(config, "model", config), "scan_layers", False)  # AudioLM: .model
  return Built(lowered, batch, seconds, [work], setting.rules, loops=scanned,
               train_step=step)


# Inference ---------------------------------------------------------------------------

def _inference_batch(setting: Setting) -> int:
  """`--batch`, by default one example per batch shard."""
  return _check_batch(setting.batch or partitioning.num_batch_shards(setting.mesh),
                      setting.mesh)


def _build_soundstorm_decode(program: Program, setting: Setting) -> Built:
  config = SoundStormConfig()
  model = SoundStormModel(config)
  mesh, partitioner = setting.mesh, setting.partitioner
  seconds = setting.seconds or program.seconds[setting.size]
  batch = _inference_batch(setting)
  semantic_frames = _frames(seconds)
  num_frames = semantic_frames * config.frames_per_semantic_token
  schedule = schedule_lib.paper_schedule(config.num_levels)
  variables = _variables("soundstorm", config, partitioner)
  semantic = _batched(mesh, (batch, semantic_frames), jnp.int32)
  codes = _batched(mesh, (batch, num_frames, config.num_levels), jnp.int32)

  def decode(variables, semantic, keys):
    return storm_decoding.decode(model, variables, semantic, None, keys,
                                 schedule=schedule, num_frames=num_frames).codes

  def forward_pass(variables, semantic, codes):
    return model.apply(variables, semantic, codes, level=0)

  with partitioner.activate():
    lowered = jax.jit(decode).lower(variables, semantic, _keys(mesh, batch))
  return Built(lowered, batch, seconds,
               [Work(forward_pass, (variables, semantic, codes), sum(schedule))],
               setting.rules, loops=True)


def _build_audiolm_decode(program: Program, setting: Setting) -> Built:
  stage = program.name.split("_")[1]
  config = ModelConfig()
  with gin.config_scope(stage):
    layout = Layout(stage=stage)
  mesh, partitioner = setting.mesh, setting.partitioner
  decoder = Decoder(DecoderLM(config, layout.padded_vocab_size), layout, partitioner)
  window = audiolm_bench.default_window(layout)
  batch = _inference_batch(setting)
  num_steps = window.steps + 1
  length = window.prompt + num_steps  # the cache `Decoder.generate` allocates
  params = _variables("audiolm", StageConfig(config, layout), partitioner)["params"]
  prompt = _batched(mesh, (batch, window.prompt), jnp.int32)
  token = _batched(mesh, (batch, 1), jnp.int32)
  offset = jax.ShapeDtypeStruct((), jnp.int32, sharding=_replicated(mesh))
  # Made here, outside the mesh's context: they run a little code eagerly.
  keys, _ = _keys(mesh, batch), decoder.param_shardings
  with partitioner.activate():
    lowered = decoder._jitted.lower(params, prompt, keys, offset, num_steps,
                                    SamplingConfig())
    make_cache = jax.jit(lambda p: decoder.init_cache(p, batch, length))
    cache = checkpoints.abstract_like(jax.eval_shape(make_cache, params),
                                      make_cache.lower(params).compile().output_shardings)
  return Built(lowered, batch, None,
               [Work(decoder._step, (params, cache, prompt)),
                Work(decoder._step, (params, cache, token), num_steps - 1)],
               setting.rules, loops=True)


def _build_codec(program: Program, setting: Setting) -> Built:
  config = SoundStreamConfig()
  model = SoundStream(config)
  # The codec is replicated and its batches split over the data axes, as `Codec` does.
  rules = partitioning.DATA_PARALLEL_RULES
  partitioner = partitioning.Partitioner.of(setting.mesh, rules)
  mesh = setting.mesh
  seconds = setting.seconds or program.seconds[setting.size]
  batch = _inference_batch(setting)
  frames = round(seconds * model.frame_rate)
  variables = _variables("soundstream", config, partitioner)
  if program.name == "codec_encode":
    inputs = _batched(mesh, (batch, frames * model.hop_length), jnp.float32)
    call = functools.partial(model.apply, num_levels=config.num_levels, method="encode")
  else:
    inputs = _batched(mesh, (batch, frames, config.num_levels), jnp.int32)
    call = functools.partial(model.apply, method="decode")
  with partitioner.activate():
    lowered = jax.jit(call).lower(variables, inputs)
  return Built(lowered, batch, seconds, [Work(call, (variables, inputs))], rules)


def _programs() -> dict[str, Program]:
  audiolm = {"paper": ("gin/audiolm/paper.gin",), "tiny": ("gin/audiolm/tiny.gin",)}
  codec = {"paper": ("gin/codec/paper_16khz.gin",), "tiny": ("gin/codec/tiny.gin",)}
  no_window = {"paper": None, "tiny": None}
  programs = [
      Program("soundstorm_train", "train",
              {"paper": ("gin/runs/soundstorm_paper.gin",),
               "tiny": ("gin/runs/soundstorm_tiny.gin",)},
              {"paper": 30.0, "tiny": 0.64}, _build_train),
      Program("w2v_bert_train", "train",
              {"paper": ("gin/runs/semantic_paper.gin",),
               "tiny": ("gin/runs/semantic_tiny.gin",)},
              {"paper": 16.0, "tiny": 2.0}, _build_train),
      # No paper-size codec run file: the tiny run's recipe with the paper's codec.
      Program("codec_train", "train",
              {"paper": ("gin/runs/codec_tiny.gin", "gin/codec/paper_16khz.gin"),
               "tiny": ("gin/runs/codec_tiny.gin",)},
              {"paper": 1.0, "tiny": 0.5}, _build_train),
  ]
  programs += [Program(f"audiolm_{stage}_train", "train",
                       {"paper": (f"gin/runs/audiolm_{stage}.gin",),
                        "tiny": (f"gin/runs/audiolm_{stage}_tiny.gin",)},
                       no_window, _build_train)
               for stage in ("semantic", "coarse", "fine")]
  programs.append(Program("soundstorm_decode", "inference",
                          {"paper": ("gin/soundstorm/paper.gin",),
                           "tiny": ("gin/soundstorm/tiny.gin",)},
                          {"paper": 30.0, "tiny": 1.0}, _build_soundstorm_decode))
  programs += [Program(f"audiolm_{stage}_decode", "inference", audiolm, no_window,
                       _build_audiolm_decode) for stage in ("semantic", "coarse", "fine")]
  programs += [Program(f"codec_{call}", "inference", codec, {"paper": 10.0, "tiny": 1.0},
                       _build_codec) for call in ("encode", "decode")]
  return {p.name: p for p in programs}


PROGRAMS = _programs()

# `--table`: the paper-size programs of BENCHMARKS.md as (program, slice,
# partitioning, gin bindings), at the run files' batches (SoundStorm: 128
# windows of 30 s) and one example per batch shard for decoding. The SoundStorm
# rows on v4-8 show what scanning its layers and rematerialising its blocks
# change; the larger slices use the scanned stack, whose one compiled block
# keeps their compile time down (a looped step took 16 minutes to compile for
# v4-32 on a busy 2-core host; a v5e-256 step did not finish in 40 minutes).
# A batch search multiplies the compile time several-fold, so it is left out.
SCAN = "SoundStormConfig.scan_layers = True"
TABLE = (
    ("soundstorm_train", "v4-8", "data_parallel", ()),
    ("soundstorm_train", "v4-8", "fsdp", ()),
    ("soundstorm_train", "v4-8", "fsdp", (SCAN,)),
    ("soundstorm_train", "v4-8", "fsdp", ("SoundStormConfig.remat_policy = 'dots'",)),
    ("soundstorm_train", "v4-8", "fsdp", (SCAN, "SoundStormConfig.remat_policy = 'full'")),
    ("soundstorm_train", "v4-8", "fsdp_tensor", ()),
    ("soundstorm_train", "v4-32", "fsdp", ()),
    ("soundstorm_train", "v4-128", "fsdp", (SCAN,)),
    ("soundstorm_train", "v5e-16", "fsdp", (SCAN,)),
    ("soundstorm_train", "v5e-16", "fsdp", (SCAN, "SoundStormConfig.remat_policy = 'full'")),
    ("soundstorm_decode", "v4-8", "data_parallel", ()),
    ("audiolm_coarse_decode", "v4-8", "data_parallel", ()),
)

# --- compiling and analysing ------------------------------------------------------


def configure(program: Program, size: str, partitioning_name: str | None = None,
              gin_files: Sequence[str] = (), gin_bindings: Sequence[str] = ()):
  """Replaces gin's configuration with the program's files at `size`, then the
  partitioning file (`gin/partitioning/<name>.gin` or a path), then the
  caller's files and bindings."""
  if size not in program.gin_files:
    raise ValueError(f"--size {size!r}: expected one of {sorted(program.gin_files)}")
  partitioning_file = None
  if partitioning_name:
    partitioning_file = (partitioning_name if partitioning_name.endswith(".gin")
                         else f"gin/partitioning/{partitioning_name}.gin")
  files = [*program.gin_files[size], *([partitioning_file] if partitioning_file else []),
           *gin_files]
  gin.clear_config()
  # Run files name their token shards in TOKENS; nothing is read here.
  gin_utils.parse(files, ["TOKENS = None", *gin_bindings])


def _compile(lowered) -> tuple[jax.stages.Compiled | None, str | None, float]:
  """(executable or None, XLA's error or None, seconds)."""
  start = time.perf_counter()
  try:
    compiled = lowered.compile()
  except jax.errors.JaxRuntimeError as error:
    return None, str(error), time.perf_counter() - start
  return compiled, None, time.perf_counter() - start


def memory(compiled) -> dict:
  """Bytes per device from XLA's memory analysis; the total counts outputs that
  alias donated arguments once."""
  stats = compiled.memory_analysis()
  row = dict(argument_bytes=stats.argument_size_in_bytes,
             output_bytes=stats.output_size_in_bytes,
             alias_bytes=stats.alias_size_in_bytes, temp_bytes=stats.temp_size_in_bytes,
             code_bytes=stats.generated_code_size_in_bytes)
  row["total_bytes"] = (row["argument_bytes"] + row["output_bytes"] - row["alias_bytes"]
                        + row["temp_bytes"] + row["code_bytes"])
  return row


def _device_cost(compiled) -> tuple[float, float]:
  """(FLOPs, bytes accessed) of one device's share of a compiled program."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", math.nan)), float(cost.get("bytes accessed", math.nan))


def _strip(tree):
  """The same abstract arrays without shardings (for counting on this host)."""
  return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def work_cost(built: Built, compiled, mesh) -> dict:
  """FLOPs of the whole computation (unpartitioned HLO, counted on this host)
  and, per device, FLOPs and bytes accessed of the compiled program (of its
  loop bodies compiled alone, times their trip counts, when it loops; with
  scanned layer stacks unrolled, since XLA counts a loop body once)."""
  flops = 0.0
  with stack.unrolled():
    for work in built.work:
      cost = common.xla_cost(work.fn, *_strip(work.args))
      flops += work.times * cost["flops"] if cost else math.nan
  if not built.loops:
    device_flops, device_bytes = _device_cost(compiled)
  else:
    device_flops = device_bytes = 0.0
    with partitioning.activate(mesh, built.rules), stack.unrolled():
      for work in built.work:
        part, error, _ = _compile(jax.jit(work.fn).lower(*work.args))
        if part is None:
          raise RuntimeError(f"a loop body of the program compiled whole failed alone: "
                             f"{error}")
        part_flops, part_bytes = _device_cost(part)
        device_flops += work.times * part_flops
        device_bytes += work.times * part_bytes
  return dict(flops=flops, flops_per_device=device_flops,
              bytes_accessed_per_device=device_bytes)


def roofline(row: dict, device_kind: str) -> dict:
  """Seconds per call at the chip's datasheet bf16 peak and HBM bandwidth:
  max(FLOPs / peak, bytes / bandwidth) per device. A bound, not a measurement."""
  peak, _ = common.device_peak_tflops(device_kind, "bfloat16")
  bandwidth, _ = common.device_bandwidth_tbps(device_kind)
  compute = row["flops_per_device"] / (peak * 1e12) if peak else None
  traffic = row["bytes_accessed_per_device"] / (bandwidth * 1e12) if bandwidth else None
  known = [t for t in (compute, traffic) if t is not None and math.isfinite(t)]
  return dict(peak_tflops=peak, bandwidth_tbps=bandwidth, compute_bound_s=compute,
              memory_bound_s=traffic, roofline_s=max(known) if known else None)


def _fits(compiled, tpu: Slice) -> tuple[bool, dict]:
  stats = memory(compiled)
  return stats["total_bytes"] <= tpu.hbm_bytes, stats


def largest_batch(step: TrainStep, seconds, tpu: Slice, known: dict[int, bool],
                  report: Callable[[str], None]) -> int:
  """The largest global batch (a whole number of batch shards) whose step
  compiles and fits in HBM: doubling from what is known, then bisection.
  0 when not even one example per batch shard fits."""
  shards = partitioning.num_batch_shards(step.trainer.mesh)
  cache = {b // shards: fits for b, fits in known.items() if b % shards == 0}

  def fits(units: int) -> bool:
    if units not in cache:
      compiled, error, seconds_taken = _compile(step.lower(units * shards, seconds)[0])
      ok, stats = (False, None) if compiled is None else _fits(compiled, tpu)
      cache[units] = ok
      detail = (f"{stats['total_bytes'] / 1e9:.2f} GB" if stats else
                (error or "").splitlines()[0][:100])
      report(f"  batch {units * shards}: {'fits' if ok else 'does not fit'} "
             f"({detail}; {seconds_taken:.0f} s)")
    return cache[units]

  fitting = [u for u, ok in cache.items() if ok]
  low = max(fitting, default=0)
  high = min([u for u, ok in cache.items() if not ok and u > low], default=max(2 * low, 1))
  while high not in cache and fits(high):
    low, high = high, 2 * high
  while high - low > 1:
    middle = (low + high) // 2
    low, high = (middle, high) if fits(middle) else (low, middle)
  return low * shards


def compile_program(tpu: Slice | str, name: str, *, size: str = "paper",
                    partitioning_name: str | None = None, gin_files: Sequence[str] = (),
                    gin_bindings: Sequence[str] = (), batch: int | None = None,
                    seconds: float | None = None, search_batch: bool = False,
                    report: Callable[[str], None] = print) -> dict:
  """Compiles program `name` for slice `tpu`; returns its report row. A program
  that XLA cannot compile (too large for HBM, ...) gives a row with
  `compiled: False` and XLA's error, not an exception. Gin's configuration is
  the program's while it compiles, and cleared afterwards."""
  tpu = parse_slice(tpu) if isinstance(tpu, str) else tpu
  if name not in PROGRAMS:
    raise ValueError(f"--program {name!r}: expected one of {', '.join(PROGRAMS)}")
  program = PROGRAMS[name]
  if search_batch and program.kind != "train":
    raise ValueError(f"--search_batch: {name} is not a training step")
  configure(program, size, partitioning_name, gin_files, gin_bindings)
  try:
    return _compile_configured(program, tpu, size, partitioning_name, batch, seconds,
                               search_batch, report)
  finally:
    gin.clear_config()  # the program's configuration is not left behind


def _compile_configured(program: Program, tpu: Slice, size, partitioning_name, batch,
                        seconds, search_batch, report) -> dict:
  devices = slice_devices(tpu)
  mesh = partitioning.make_mesh(devices=devices)
  setting = Setting(mesh, partitioning.logical_axis_rules(), size, batch, seconds)
  row = dict(program=program.name, kind=program.kind, size=size, topology=tpu.name,
             libtpu_topology=tpu.topology, device_kind=devices[0].device_kind,
             num_devices=len(devices), hbm_bytes=tpu.hbm_bytes,
             mesh={axis: int(mesh.shape[axis]) for axis in partitioning.MESH_AXES},
             partitioning=partitioning_name or (
                 "run file's" if program.kind == "train" else "data_parallel"))
  start = time.perf_counter()
  built = program.build(program, setting)
  try:
    row.update(batch=built.batch, seconds=built.seconds,
               lower_s=time.perf_counter() - start)
    compiled, error, row["compile_s"] = _compile(built.lowered)
    row.update(compiled=compiled is not None, error=error)
    if compiled is None:
      row["fits"] = False
    else:
      row["fits"], stats = _fits(compiled, tpu)
      row.update(stats)
      row.update(work_cost(built, compiled, mesh))
      row.update(roofline(row, row["device_kind"]))
    if search_batch:
      report(f"{program.name} on {tpu.name}: searching the largest batch that fits")
      row["max_batch"] = largest_batch(built.train_step, built.seconds, tpu,
                                       {built.batch: row["fits"]}, report)
  finally:
    if built.train_step is not None:
      built.train_step.close()
  return row


# --- report ----------------------------------------------------------------------

def _gb(value) -> str:
  return common.format_value(value and value / 1e9, ".2f")


_OUT_OF_HBM = re.compile(r"required for (.+?) \(([\d.]+)G\) exceeds available HBM "
                         r"\(([\d.]+)G\)")


def _status(row: dict) -> str:
  """'yes', or why not in a few words (XLA's out-of-HBM figures when it gave them)."""
  if row["compiled"]:
    return "yes" if row["fits"] else "compiles, over HBM"
  error = (row["error"] or "?").strip()
  match = _OUT_OF_HBM.search(error)
  if match:
    return f"no: {match[1]} {float(match[2]):.1f} GB > {float(match[3]):.1f} GB HBM"
  return "no: " + error.splitlines()[0][:80].replace("|", "/")


def tables(report: dict) -> str:
  """Markdown: one row per (topology, partitioning, program)."""
  f = common.format_value
  rows = []
  for r in report["results"]:
    mesh = ",".join(str(r["mesh"][a]) for a in partitioning.MESH_AXES)
    compiled = r["compiled"]
    settings = "; ".join(b.split(".", 1)[-1].replace(" ", "") for b in r.get("settings", []))
    rows.append([
        r["program"] + (f" ({settings})" if settings else ""), r["topology"],
        f"{r['partitioning']} ({mesh})", r["batch"],
        _status(r),
        _gb(r.get("total_bytes")) if compiled else "-",
        f(compiled and 100 * r["total_bytes"] / r["hbm_bytes"], ".0f") if compiled else "-",
        _gb(r.get("argument_bytes")), _gb(r.get("temp_bytes")),
        common.format_si(r.get("flops"), "FLOP"),
        common.format_si(r.get("flops_per_device"), "FLOP"),
        f(r.get("roofline_s") and 1e3 * r["roofline_s"], ".2f"),
        f(r.get("compile_s"), ".0f"), f(r.get("max_batch"), "d")])
  table = common.markdown_table(
      ["program", "slice", "partitioning (data,fsdp,tensor)", "batch", "fits",
       "GB/device", "% of HBM", "arguments GB", "temporaries GB", "FLOP/call",
       "FLOP/device", "roofline bound (ms)", "compile (s)", "max batch"], rows)
  env = report["environment"]
  header = (f"Compiled for TPU slices on a {env['cpus']}-CPU host without a TPU (XLA:TPU "
            f"from libtpu {report['libtpu_version']}, jax {env['jax_version']}, "
            f"{env['date']}), size `{report['size']}`. Bytes per device from XLA's memory "
            "analysis (arguments + outputs - donated aliases + temporaries + code) against "
            "the chip's HBM (v4: 32 GiB, v5e: 16 GiB); FLOPs per call of the whole "
            "computation and per device from XLA's cost analysis (loops counted as often as "
            "they run). The roofline bound is max(FLOPs / bf16 datasheet peak, bytes "
            "accessed / HBM bandwidth) per device: **a lower bound on the time, not a "
            "measurement**. Compile time is this host's.\n\n"
            f"`{report['command']}`")
  return header + "\n\n" + table + "\n"


def summary_line(row: dict) -> str:
  f = common.format_value
  mesh = ",".join(str(row["mesh"][a]) for a in partitioning.MESH_AXES)
  line = (f"{row['program']:<24} {row['topology']:<8} {row['partitioning']:<34} "
          f"mesh {mesh:<8} batch {row['batch']:<5} {_status(row)}")
  if row["compiled"]:
    line += (f"  {_gb(row['total_bytes'])} GB/device  {common.format_si(row['flops'], 'FLOP')}"
             f"  bound {f(row['roofline_s'] and 1e3 * row['roofline_s'], '.2f')} ms"
             f"  compile {row['compile_s']:.0f} s")
  if "max_batch" in row:
    line += f"  max batch {row['max_batch']}"
  return line


def _libtpu_version() -> str | None:
  import importlib.metadata
  try:
    return importlib.metadata.version("libtpu")
  except importlib.metadata.PackageNotFoundError:
    return None


def _row_key(size, topology, scheme, name, settings) -> tuple:
  return (size, topology, scheme or "", name, tuple(settings))


def run(args, argv) -> dict:
  """`--table`'s programs, or every (topology, partitioning, program) of the
  flags, in that order. The report is rewritten after each program, so an
  interrupted run keeps what it compiled; `--resume` takes those rows back."""
  if args.table:
    combinations = [(parse_slice(tpu), scheme, name, bindings)
                    for name, tpu, scheme, bindings in TABLE]
  else:
    names = args.program or list(PROGRAMS)
    unknown = sorted(set(names) - set(PROGRAMS))
    if unknown:
      raise ValueError(f"--program {unknown}: expected among {', '.join(PROGRAMS)}")
    combinations = [(tpu, scheme, name, ()) for tpu, scheme, name in itertools.product(
        [parse_slice(t) for t in args.topology], args.partitioning or [None], names)]
  path = os.path.join(args.out_dir, "compile.json")
  done = {}
  if args.resume and os.path.exists(path):
    for row in common.load_json(path)["results"]:
      done[_row_key(row["size"], row["topology"], row.get("scheme"), row["program"],
                    row["settings"])] = row
  report = dict(benchmark="compile", size=args.size, environment=common.environment(),
                libtpu_version=_libtpu_version(),
                command=common.command_line("soundlm.compile", argv), results=[])
  for index, (tpu, scheme, name, bindings) in enumerate(combinations, 1):
    print(f"[{index}/{len(combinations)}] {name} on {tpu.name} ({scheme or 'default'} "
          f"partitioning) {'; '.join(bindings)}", flush=True)
    row = done.get(_row_key(args.size, tpu.name, scheme, name, bindings))
    if row is None:
      row = compile_program(
          tpu, name, size=args.size, partitioning_name=scheme, gin_files=args.gin_file,
          gin_bindings=[*bindings, *args.gin_bindings], batch=args.batch,
          seconds=args.seconds,
          search_batch=args.search_batch and PROGRAMS[name].kind == "train",
          report=lambda line: print(line, flush=True))
      row.update(scheme=scheme, settings=list(bindings))
    print(summary_line(row), flush=True)
    report["results"].append(row)
    common.write_json(path, report)
  common.save_report(args.out_dir, "compile", report, tables(report))
  return report


def parse_flags(argv=None) -> argparse.Namespace:
  """The command's flags (argparse exits with a usage message on bad ones)."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--topology", nargs="+", default=[],
                      help="TPU slices: v4-8, v4-128, v5e-16, v5p-8, v6e-64, or libtpu's "
                           "v4:2x2x1 / v5e:4x4 form")
  parser.add_argument("--program", nargs="+", default=None,
                      help=f"programs (default all): {', '.join(PROGRAMS)}")
  parser.add_argument("--partitioning", nargs="+", default=None,
                      help="gin/partitioning/ names or gin files (default: the run "
                           "file's for training steps, data parallel otherwise)")
  parser.add_argument("--size", default="paper", choices=SIZES)
  parser.add_argument("--batch", type=int, default=None,
                      help="global batch (default: the run file's for training steps, "
                           "one per batch shard otherwise)")
  parser.add_argument("--seconds", type=float, default=None,
                      help="window of SoundStorm, w2v-BERT and codec programs")
  parser.add_argument("--search_batch", action="store_true",
                      help="also find each training step's largest batch that fits")
  parser.add_argument("--resume", action="store_true",
                      help="reuse the programs already in OUT_DIR/compile.json (same size, "
                           "slice, partitioning and settings) instead of compiling them again")
  parser.add_argument("--table", action="store_true",
                      help="compile BENCHMARKS.md's list of programs, slices and "
                           "partitionings (TABLE) instead of --topology x --partitioning "
                           "x --program")
  gin_utils.add_flags(parser)
  common.add_output_flags(parser, "/tmp/soundlm_compile")
  args = gin_utils.parse_args(parser, argv)
  if not (args.topology or args.table or args.from_json):
    parser.error("--topology: name at least one TPU slice (e.g. v4-8)")
  args.section = args.section or f"tpu-{args.size}:compile"
  return args


def main(argv=None) -> int:
  args = parse_flags(argv)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", force=True)
  # Tracing and the FLOP counts run on this host's CPU; any accelerator it has is
  # left alone.
  jax.config.update("jax_platforms", "cpu")
  measured = []

  def measure(args, argv):
    measured.append(run(args, argv))
    return measured[-1]

  try:
    common.measure_or_render(args, argv, measure, tables)
  except (ValueError, RuntimeError, FileNotFoundError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  # Exit status 1 when a program does not fit: a launcher can refuse the job.
  return int(any(not row["fits"] for report in measured for row in report["results"]))


if __name__ == "__main__":
  sys.exit(main())
