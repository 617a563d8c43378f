"""The AudioLM decode benchmark at the tiny size: its split of generation into
prefill and decode loop is generation, and its report adds up."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from soundlm import rng as rng_lib
from soundlm.audiolm.model import DecoderLM
from soundlm.bench import audiolm as bench
from soundlm.bench import common


def expected_bytes(stage: str, batch: int, prompt: int, steps: int) -> tuple[int, float]:
  """(weight bytes, KV cache bytes read per step) of a float32 tiny stage,
  from its parameter count and its configuration."""
  config, layout = common.audiolm_stage("tiny", stage)
  shapes = jax.eval_shape(DecoderLM(config, layout.padded_vocab_size).init,
                          jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
  num_params = sum(x.size for x in jax.tree_util.tree_leaves(shapes["params"]))
  per_slot = 2 * config.num_layers * batch * config.num_heads * config.head_dim * 4
  return 4 * num_params, per_slot * (prompt + (steps + 1) / 2)


def test_prefill_then_decode_loop_is_generate():
  decoder, params = bench.build("tiny", "fine", "float32", seed=0)
  window = bench.default_window(decoder.layout, steps=3)
  prompt = jnp.asarray(np.random.default_rng(0).integers(
      0, decoder.layout.vocab_size, (2, window.prompt)), jnp.int32)
  rng = rng_lib.row_keys(3, 2)  # one key per row, as Decoder.generate makes them
  prefill, decode = bench.decode_functions(decoder, window)
  logits, cache = prefill(params, prompt)
  tokens = decode(params, cache, logits, rng, jnp.int32(window.targets))
  expected = decoder.generate(params, prompt, rng, num_steps=window.steps + 1,
                              target_offset=window.targets)
  np.testing.assert_array_equal(tokens, expected)
  assert bench.cache_bytes_per_slot(cache) == 2 * 2 * 2 * 4 * 8 * 4  # k, v; layers; B H D f32


def test_default_windows_follow_generation():
  _, fine = common.audiolm_stage("tiny", "fine")
  # A whole 8-frame chunk: 8 x 2 coarse ids and START, then 8 x 2 fine ids.
  assert bench.default_window(fine) == bench.Window(prompt=17, targets=0, steps=16)
  _, coarse = common.audiolm_stage("tiny", "coarse")
  # 8 semantic ids, START, 4 frames of context (x 2 acoustic frames x 2 levels).
  assert bench.default_window(coarse, steps=5) == bench.Window(prompt=25, targets=16, steps=5)
  with pytest.raises(ValueError, match="--steps"):
    bench.default_window(coarse, steps=0)


def test_tiny_report_is_consistent_and_regenerates_markdown(tmp_path):
  out = tmp_path / "out"
  bench.main(["--size", "tiny", "--stage", "coarse", "--batch", "3", "--steps", "3",
              "--repeats", "1", "--out_dir", str(out)])
  report = json.loads((out / "audiolm.json").read_text())
  assert report["benchmark"] == "audiolm" and report["dtype"] == "float32"
  assert report["command"].startswith("python -m soundlm.bench.audiolm --size tiny")
  assert report["bandwidth_tbps"] is None and "--bandwidth_tbps" in report["bandwidth_source"]
  (row,) = report["results"]
  assert (row["stage"], row["batch"], row["prompt"], row["steps"]) == ("coarse", 3, 25, 3)
  assert row["cache_length"] == 25 + 3 + 1
  decode_s = row["decode"]["median_s"]
  assert len(row["decode"]["times_s"]) == len(row["prefill"]["times_s"]) == 1
  assert row["compile_s"] > 0 and row["prefill"]["median_s"] > 0
  assert row["tokens_per_s"] == pytest.approx(3 * 3 / decode_s)
  assert row["ms_per_step"] == pytest.approx(1e3 * decode_s / 3)
  weights, cache = expected_bytes("coarse", 3, 25, 3)
  assert row["weight_bytes"] == weights
  assert row["cache_bytes_per_step"] == pytest.approx(cache)
  assert row["bytes_per_step"] == pytest.approx(weights + cache)
  # No bandwidth for a CPU: no floor. With one, the floor is bytes / bandwidth.
  assert row["fraction_of_floor"] is None and row["floor_ms_per_step"] is None
  window = bench.Window(row["prompt"], 16, row["steps"])
  with_bandwidth = bench.result_row("coarse", 3, window, row["num_params"],
                                    row["weight_bytes"], row, bandwidth_tbps=0.01)
  floor_ms = 1e3 * (weights + cache) / 0.01e12
  assert with_bandwidth["floor_ms_per_step"] == pytest.approx(floor_ms)
  assert with_bandwidth["fraction_of_floor"] == pytest.approx(floor_ms / row["ms_per_step"])
  assert "| 2 coarse | 3 | 25 | 3 |" in (out / "audiolm.md").read_text()

  document = tmp_path / "BENCHMARKS.md"
  document.write_text("<!-- BEGIN cpu-tiny:audiolm -->\nold\n<!-- END cpu-tiny:audiolm -->\n")
  bench.main(["--from_json", str(out / "audiolm.json"), "--markdown", str(document)])
  text = document.read_text()
  assert "old" not in text and (out / "audiolm.md").read_text().strip() in text


def test_bandwidth_table():
  assert common.device_bandwidth_tbps("NVIDIA H100 80GB HBM3") == (3.35, "H100 datasheet")
  assert common.device_bandwidth_tbps("NVIDIA H100 PCIe")[0] == 2.0
  assert common.device_bandwidth_tbps("NVIDIA GH200 480GB")[0] == 4.0
  assert common.device_bandwidth_tbps("NVIDIA H200")[0] == 4.8
  assert common.device_bandwidth_tbps("NVIDIA A100-SXM4-80GB")[0] == 2.039
  assert common.device_bandwidth_tbps("NVIDIA A100-SXM4-40GB")[0] == 1.555
  assert common.device_bandwidth_tbps("TPU v5 lite")[0] == 0.819
  assert common.device_bandwidth_tbps("cpu")[0] is None
  assert common.device_bandwidth_tbps("cpu", 0.5) == (0.5, "--bandwidth_tbps")
  with pytest.raises(ValueError, match="bandwidth_tbps"):
    common.device_bandwidth_tbps("cpu", 0.0)
