"""Gin plumbing: package-relative names, literal reads, T5X-style flags, clear
errors, and saved configs that parse in a fresh process."""
import argparse
import os
import subprocess
import sys

import gin
import pytest

from soundlm import gin_utils


@pytest.fixture
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_find_resolves_package_names_from_any_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert gin_utils.find("gin/runs/codec_tiny.gin") == gin_utils.GIN_ROOT / "gin/runs/codec_tiny.gin"
  (tmp_path / "mine.gin").write_text("")
  assert gin_utils.find("mine.gin") == tmp_path / "mine.gin"  # the current directory first
  extra = tmp_path / "extra"
  extra.mkdir()
  (extra / "other.gin").write_text("")
  monkeypatch.setattr(gin_utils, "_search_paths", [extra])
  assert gin_utils.find("other.gin") == extra / "other.gin"
  with pytest.raises(FileNotFoundError) as error:
    gin_utils.find("gin/runs/no_such.gin")
  for place in (tmp_path, gin_utils.GIN_ROOT, extra):
    assert str(place / "gin/runs/no_such.gin") in str(error.value)


def test_search_paths_are_registered_once(tmp_path, monkeypatch):
  added = []
  monkeypatch.setattr(gin_utils, "_search_paths", [])
  monkeypatch.setattr(gin, "add_config_file_search_path", added.append)
  gin_utils.register_search_paths([tmp_path])
  gin_utils.register_search_paths([tmp_path, str(tmp_path)])
  assert added == [str(gin_utils.GIN_ROOT), str(tmp_path)]


def test_read_literals_follows_includes_and_scopes_without_touching_gin(tmp_path,
                                                                        monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "base.gin").write_text(
      "import soundlm.no_such_module\n"  # imports are not the reader's business
      "pkg.Model.width = 8\n"
      "Model.depth = 2\n"
      "eval/Model.depth = 3\n"
      "other.Model.width = 100\n"
      "Model.layers = ['a', 'b']\n")
  (tmp_path / "top.gin").write_text(
      "include 'base.gin'\n"
      "Model.width = 16\n"
      "eval/Model.width = 32\n"
      "RATE = 5\n"
      "Other.rate = %RATE\n")
  before = gin.config_str()
  assert gin_utils.read_literals("top.gin", "pkg.Model") == {
      "width": 16, "depth": 2, "layers": ["a", "b"]}
  assert gin_utils.read_literals("top.gin", "pkg.Model", scope="eval") == {
      "width": 32, "depth": 3, "layers": ["a", "b"]}
  assert gin_utils.read_literals("top.gin", "Model", scope="eval/inner")["width"] == 32
  assert gin_utils.read_literals("base.gin", "pkg.Model")["width"] == 8  # not other.Model
  assert gin.config_str() == before
  with pytest.raises(ValueError, match=r"top\.gin: Other\.rate must be a literal, found '%RATE'"):
    gin_utils.read_literals("top.gin", "Other")
  (tmp_path / "nested.gin").write_text("Model.layers = [@Layer()]\n")
  with pytest.raises(ValueError, match=r"nested\.gin: Model\.layers must be a literal"):
    gin_utils.read_literals("nested.gin", "Model")
  (tmp_path / "broken.gin").write_text("include 'gone.gin'\n")
  with pytest.raises(FileNotFoundError, match=r"broken\.gin: include 'gone\.gin' does not exist"):
    gin_utils.read_literals("broken.gin", "Model")


def _parser():
  parser = argparse.ArgumentParser(prog="job")
  gin_utils.add_flags(parser)
  parser.add_argument("--workdir")
  return parser


def test_gin_dot_flags_become_bindings(tmp_path, clean_gin):
  args = gin_utils.parse_args(_parser(), [
      "--gin_file=gin/partitioning/data_parallel.gin", "--gin.make_mesh.fsdp=2",
      "--gin_bindings=make_mesh.tensor = 1", "--workdir=w",
      "--gin.scope/make_mesh.data=4", "--gin.TOKENS={'speech': '/a=b'}",
      f"--gin_search_paths={tmp_path},{tmp_path / 'b'}"])
  assert args.workdir == "w"
  assert args.gin_bindings == ["make_mesh.tensor = 1", "make_mesh.fsdp = 2",
                               "scope/make_mesh.data = 4", "TOKENS = {'speech': '/a=b'}"]
  gin_utils.parse_from_args(args)
  assert gin.query_parameter("make_mesh.fsdp") == 2
  assert gin.query_parameter("scope/make_mesh.data") == 4
  assert gin.query_parameter("%TOKENS") == {"speech": "/a=b"}


@pytest.mark.parametrize("argv, message", [
    (["--gin_bindings=X.y = 1", "--bogus=1"], "unrecognized arguments: --bogus=1"),
    (["--gin.Trainer.num_steps", "10"], "expected --gin.NAME=VALUE"),
])
def test_other_unknown_flags_are_refused(argv, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    gin_utils.parse_args(_parser(), argv)
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err


def test_gin_errors_become_one_clear_value_error(tmp_path, clean_gin):
  with pytest.raises(ValueError, match=r"invalid gin configuration: .*num_stepz"):
    gin_utils.parse(["gin/runs/lm_tiny.gin"], ["Trainer.num_stepz = 3"])
  gin.clear_config()
  bad_import = tmp_path / "bad_import.gin"
  bad_import.write_text("import soundlm.no_such_module\n")
  with pytest.raises(ValueError, match=r"invalid gin configuration: .*no_such_module"):
    gin_utils.parse([str(bad_import)])
  gin.clear_config()
  bad_include = tmp_path / "bad_include.gin"
  bad_include.write_text("include 'gin/runs/gone.gin'\n")
  with pytest.raises(ValueError, match=r"invalid gin configuration: .*gin/runs/gone\.gin"):
    gin_utils.parse([str(bad_include)])
  with pytest.raises(FileNotFoundError, match=r"--gin_file 'gin/runs/no_such\.gin' does not"):
    gin_utils.parse(["gin/runs/no_such.gin"])


# A fresh interpreter parses each saved config alone and reads a value back;
# nothing of soundlm is imported beforehand.
REPARSE = """
import sys
import gin
for path, steps in zip(sys.argv[1::2], sys.argv[2::2]):
  gin.clear_config()
  gin.parse_config_file(path)
  assert gin.query_parameter('Trainer.num_steps') == int(steps), path
print('parsed', (len(sys.argv) - 1) // 2)
"""


def test_saved_train_configs_parse_in_a_fresh_process(tmp_path, clean_gin):
  runs = {"gin/runs/codec_tiny.gin": (), "gin/runs/lm_tiny.gin": (),
          "gin/runs/semantic_tiny.gin": (), "gin/runs/soundstorm_tiny.gin": (),
          "gin/runs/audiolm_coarse_tiny.gin": (),
          "gin/quickstart/soundstorm.gin": ("TOKENS = {'speech': '/tokens'}",)}
  argv = []
  for index, (run, bindings) in enumerate(runs.items()):
    gin.clear_config()
    gin_utils.parse([run], [*bindings, f"Trainer.num_steps = {index + 7}"])
    saved = tmp_path / f"config{index}.gin"
    saved.write_text(gin.config_str())  # what `soundlm train` writes into its work dir
    assert saved.read_text().startswith("import soundlm.")
    argv += [str(saved), str(index + 7)]
  env = dict(os.environ, PYTHONPATH=str(gin_utils.GIN_ROOT.parent))
  result = subprocess.run([sys.executable, "-c", REPARSE, *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert f"parsed {len(runs)}" in result.stdout
