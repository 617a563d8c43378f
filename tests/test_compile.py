"""`soundlm.compile`: slices by name, and tiny programs compiled by XLA:TPU for a
v4 slice on this CPU host (libtpu's compile-only devices)."""
import math
import types

import jax
import pytest

from soundlm import compile as compile_lib
from soundlm import partitioning

needs_libtpu = pytest.mark.skipif(
    not compile_lib.libtpu_available(),
    reason=f"libtpu is not installed (pip install '{compile_lib.LIBTPU_REQUIREMENT}'); "
           "compiling for TPU slices needs XLA:TPU's compiler")

# A tiny AudioLM stage made wide enough that matrix products dominate its step,
# so that the 6N + attention count is a fair yardstick for XLA's.
WIDE = ["soundlm.audiolm.ModelConfig.embed_dim = 128",
        "soundlm.audiolm.ModelConfig.mlp_dim = 512",
        "soundlm.audiolm.ModelConfig.head_dim = 32"]


@pytest.mark.parametrize("name, topology, shape, wrap", [
    ("v4-8", "v4:2x2x1", (2, 2, 1), (False, False, False)),
    ("v4-32", "v4:2x2x4", (2, 2, 4), (False, False, False)),
    ("v4-128", "v4:4x4x4", (4, 4, 4), (True, True, True)),
    ("v5e-16", "v5e:4x4", (4, 4), (False, False, False)),
    ("v5litepod-128", "v5e:8x16", (8, 16), (False, True, False)),
    ("v5e-256", "v5e:16x16", (16, 16), (True, True, False)),
    ("v5p-8", "v5:2x2x1", (2, 2, 1), (False, False, False)),
    ("v4:4x4x12", "v4:4x4x12", (4, 4, 12), (True, True, True)),
])
def test_slices(name, topology, shape, wrap):
  tpu = compile_lib.parse_slice(name)
  assert (tpu.topology, tpu.shape, tpu.wrap()) == (topology, shape, wrap)
  assert tpu.num_devices == math.prod(shape)


@pytest.mark.parametrize("name, message", [
    ("v4-7", "whole number of chips"),
    ("v4-384", "no default shape"),
    ("v5e:4x4x4", "2 positive dimensions"),
    ("a100-8", "expected a slice"),
])
def test_bad_slices(name, message):
  with pytest.raises(ValueError, match=message):
    compile_lib.parse_slice(name)


def analytic_train_flops(row) -> float:
  """6 x matrix parameters x tokens + 12 x layers x (heads x head dim) x length x
  tokens for one step of the wide tiny coarse stage (no causal discount)."""
  embed, mlp, heads, head_dim, layers = 128, 512, 4, 32, 2
  vocab, length = 128, 40  # the tiny coarse layout's padded vocabulary and inputs
  matrix = layers * (4 * embed * heads * head_dim + 2 * embed * mlp) + embed * vocab
  tokens = row["batch"] * length
  return 6 * matrix * tokens + 12 * layers * heads * head_dim * length * tokens


@needs_libtpu
def test_tiny_training_step_on_v4_8():
  # At batch 64 the update of the replicated parameters, which every device
  # repeats, is a small part of a device's work.
  row = compile_lib.compile_program("v4-8", "audiolm_coarse_train", size="tiny",
                                    partitioning_name="data_parallel", gin_bindings=WIDE,
                                    batch=64)
  assert row["compiled"] and row["fits"] and row["error"] is None
  assert row["num_devices"] == 4 and row["device_kind"] == "TPU v4"
  assert row["mesh"] == {"data": 4, "fsdp": 1, "tensor": 1}
  for key in ("argument_bytes", "output_bytes", "temp_bytes", "total_bytes"):
    assert 0 < row[key] < row["hbm_bytes"], key
  assert row["alias_bytes"] > 0  # the donated state
  assert row["hbm_bytes"] == 32 * 2**30
  analytic = analytic_train_flops(row)
  assert row["flops"] == pytest.approx(analytic, rel=0.05)
  # Data parallel: each device does a quarter of the work.
  assert row["num_devices"] * row["flops_per_device"] == pytest.approx(analytic, rel=0.05)
  assert row["roofline_s"] >= row["flops_per_device"] / (275e12) > 0
  assert row["compile_s"] > 0 and row["lower_s"] > 0


@needs_libtpu
def test_too_large_batch_does_not_fit():
  row = compile_lib.compile_program("v4-8", "audiolm_coarse_train", size="tiny",
                                    partitioning_name="data_parallel", gin_bindings=WIDE,
                                    batch=2**22)
  assert row["batch"] == 2**22
  assert not row["fits"]
  if not row["compiled"]:
    assert "memory" in row["error"].lower() or "RESOURCE_EXHAUSTED" in row["error"]
  else:
    assert row["total_bytes"] > row["hbm_bytes"]


@needs_libtpu
def test_batch_must_divide_over_the_batch_shards():
  with pytest.raises(ValueError, match="batch shards"):
    compile_lib.compile_program("v4-8", "audiolm_fine_decode", size="tiny", batch=6)


def test_cli_reports_a_clear_error_without_topology(capsys):
  with pytest.raises(SystemExit) as exit_info:
    compile_lib.parse_flags(["--program", "codec_encode"])
  assert exit_info.value.code == 2
  assert "--topology" in capsys.readouterr().err


class FakeStep:
  """A training step whose bytes per device grow with the batch and which XLA
  refuses outright from `refused` on: the batch search without compiling."""

  def __init__(self, mesh, bytes_per_example: int, refused: int):
    self.trainer = types.SimpleNamespace(mesh=mesh)
    self.bytes_per_example, self.refused, self.lowered = bytes_per_example, refused, []

  def lower(self, batch, seconds):
    del seconds
    self.lowered.append(batch)
    return types.SimpleNamespace(compile=lambda: self._compile(batch)), None

  def _compile(self, batch):
    if batch >= self.refused:
      raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Ran out of memory on HBM")
    stats = types.SimpleNamespace(
        argument_size_in_bytes=batch * self.bytes_per_example, output_size_in_bytes=0,
        alias_size_in_bytes=0, temp_size_in_bytes=0, generated_code_size_in_bytes=0)
    return types.SimpleNamespace(memory_analysis=lambda: stats)


@pytest.mark.parametrize("known, bytes_per_example, refused, expected", [
    ({16: True}, 2**30 * 32 // 53, 10**6, 52),   # doubling past HBM, then bisection
    ({400: False}, 2**30 * 32 // 53, 10**6, 52),  # bisection below a batch that failed
    ({16: True}, 1, 100, 96),                    # XLA refuses before HBM is reached
    ({4: False}, 1, 10**6, 0),                    # not one example per shard fits
])
def test_batch_search(known, bytes_per_example, refused, expected):
  mesh = partitioning.make_mesh(data=4, devices=jax.devices()[:4])
  step = FakeStep(mesh, bytes_per_example, refused)
  found = compile_lib.largest_batch(step, None, compile_lib.parse_slice("v4-8"), known,
                                    report=lambda line: None)
  assert found == expected
  assert all(batch % 4 == 0 for batch in step.lowered)
  assert not set(known) & set(step.lowered)  # what is known is not compiled again


def test_resume_takes_back_compiled_rows(tmp_path, monkeypatch, capsys):
  row = dict(program="codec_encode", kind="inference", size="tiny", topology="v4-8",
             libtpu_topology="v4:2x2x1", device_kind="TPU v4", num_devices=4,
             hbm_bytes=32 * 2**30, mesh={"data": 4, "fsdp": 1, "tensor": 1},
             partitioning="data_parallel", scheme=None, settings=[], batch=4, seconds=1.0,
             compiled=True, error=None, fits=True, total_bytes=2**20, argument_bytes=2**19,
             temp_bytes=2**19, flops=1e9, flops_per_device=2.5e8, roofline_s=1e-3,
             compile_s=3.0, lower_s=1.0)
  compile_lib.common.write_json(str(tmp_path / "compile.json"),
                                dict(benchmark="compile", results=[row]))

  def refuse(*args, **kwargs):
    raise AssertionError("a row in the report was compiled again")
  monkeypatch.setattr(compile_lib, "compile_program", refuse)
  argv = ["--topology", "v4-8", "--program", "codec_encode", "--size", "tiny", "--resume",
          "--out_dir", str(tmp_path)]
  compile_lib.run(compile_lib.parse_flags(argv), argv)
  report = compile_lib.common.load_json(str(tmp_path / "compile.json"))
  assert [r["program"] for r in report["results"]] == ["codec_encode"]
  assert "| codec_encode | v4-8 | data_parallel (4,1,1) | 4 | yes |" in capsys.readouterr().out
