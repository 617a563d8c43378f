"""soundlm installed from its wheel, with no checkout on the path: the named
configs ship inside the package and every family loads from a work dir."""
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from soundlm import models
from soundlm.codec.api import Codec
from tests.test_models import tiny_configs, write_workdir

REPO = pathlib.Path(__file__).resolve().parents[1]
SOURCES = ("setup.py", "soundlm")

SCRIPT = """
import sys
import numpy as np
import soundlm
from soundlm import models
from soundlm.audiolm.api import AudioLM
from soundlm.codec.api import Codec
from soundlm.semantic.api import SemanticTokenizer
from soundlm.soundstorm.api import SoundStorm

site, workdirs, expected = sys.argv[1], sys.argv[2:-1], sys.argv[-1]
assert soundlm.__file__.startswith(site), f"imported {soundlm.__file__}, not the wheel"
for workdir in workdirs:
  models.load(workdir)
wav = np.load(expected + "/wav.npy")
codes = np.asarray(Codec.load(workdirs[0]).encode(wav))
np.testing.assert_array_equal(codes, np.load(expected + "/codes.npy"))
SoundStorm.random("tiny", 16, 16, 4).generate(np.zeros((1, 2), np.int32))
AudioLM.random("tiny", semantic_vocab=8, codebook_size=8, num_levels=4, num_coarse_levels=2)
SemanticTokenizer.random("tiny").tokenize(wav[:, :1280])
print("wheel ok")
"""


@pytest.mark.xdist_group("wheel")
def test_the_wheel_loads_every_family_from_work_dirs(tmp_path):
  source = tmp_path / "source"
  source.mkdir()
  for name in SOURCES:  # build outside the checkout: setuptools writes build/ in place
    copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
    copy(REPO / name, source / name)
  shutil.rmtree(source / "soundlm" / "__pycache__", ignore_errors=True)
  pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
  subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w",
                  str(tmp_path / "dist"), str(source)], check=True, cwd=tmp_path)
  wheel, = (tmp_path / "dist").glob("soundlm-*.whl")
  site = tmp_path / "site"
  subprocess.run([*pip, "install", "--no-deps", "--no-compile", "--target", str(site),
                  str(wheel)], check=True, cwd=tmp_path)

  workdirs = []
  for family, config in sorted(tiny_configs().items(), key=lambda x: x[0] != "soundstream"):
    workdir = tmp_path / family
    write_workdir(workdir, models.random(config, seed=2))
    workdirs.append(str(workdir))
  expected = tmp_path / "expected"
  expected.mkdir()
  wav = np.random.default_rng(0).normal(0, 0.1, (2, 1600)).astype(np.float32)
  np.save(expected / "wav.npy", wav)
  np.save(expected / "codes.npy", np.asarray(Codec.load(workdirs[0]).encode(wav)))

  env = {**os.environ, "PYTHONPATH": str(site)}
  run = subprocess.run([sys.executable, "-c", SCRIPT, str(site), *workdirs, str(expected)],
                       cwd=tmp_path, env=env, capture_output=True, text=True)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "wheel ok" in run.stdout
