"""SoundStorm generation speed: `python -m soundlm.bench.soundstorm [--size paper]`.

Times the jitted level-by-level decode (default schedule (16, 1, ..., 1)) for
10, 20 and 30 s of codes at batch 1 and 8, and reports the matrix FLOPs of one
forward pass (counted from the parameter shapes and cross-checked with XLA's
cost analysis), the achieved TFLOP/s and their fraction of the device's peak.
Prints a table and writes JSON (`--out`).
"""
import argparse
import json
import logging
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from soundlm.soundstorm import decoding
from soundlm.soundstorm import schedule as schedule_lib
from soundlm.soundstorm.api import SoundStorm

CODEC_FRAME_RATE = 50
SIZES = {
    "tiny": dict(semantic_vocab=16, codebook_size=16, num_levels=4),
    "paper": dict(semantic_vocab=1024, codebook_size=1024, num_levels=12),
}
# Seconds of audio per size: the paper's 10/20/30 s, and short clips for the
# CPU smoke run (attention over 1500 frames dominates a tiny model on CPU).
DEFAULT_SECONDS = {"tiny": [1, 2, 3], "paper": [10, 20, 30]}
# Dense bf16 matrix peaks from vendor datasheets (TFLOP/s, no sparsity): a known
# default, flagged as such in the output; pass --peak_tflops for a measured one.
BF16_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("GH200", 989.0),
    ("A100", 312.0), ("L4", 121.0), ("TPU v4", 275.0), ("TPU v5 lite", 197.0),
    ("TPU v5e", 197.0), ("TPU v5p", 459.0), ("TPU v6", 918.0),
)


def device_peak_tflops(device_kind: str, dtype: str, override: float | None):
  """(peak TFLOP/s or None, where the figure comes from)."""
  if override is not None:
    return override, "--peak_tflops"
  if dtype != "bfloat16":
    return None, f"unknown for {dtype}"
  for name, peak in BF16_PEAK_TFLOPS:
    if name.lower() in device_kind.lower():
      return peak, f"known default for {name} (bf16 dense datasheet)"
  return None, f"unknown for {device_kind!r}"


def analytic_flops(model, variables, num_frames: int, batch: int) -> float:
  """Matrix FLOPs of one forward pass that computes one level's head.

  Every kernel inside the Conformer blocks is applied once per frame
  (2 FLOPs per weight and frame, depthwise convolutions included); attention
  adds Q.K^T and A.V, 4 T^2 (heads x head_dim) per layer; the head of the
  decoded level adds 2 D K per frame. Norms, activations and softmax are left out.
  """
  params = variables["params"]
  weights = sum(
      leaf.size for path, leaf in jax.tree_util.tree_leaves_with_path(params)
      if str(path[0].key).startswith("block_") and path[-1].key == "kernel")
  attention = 4 * num_frames * model.num_heads * model.head_dim * model.num_layers
  head = 2 * model.embed_dim * model.codebook_size
  return float(batch * num_frames * (2 * weights + attention + head))


def xla_flops(model, variables, semantic, codes) -> float | None:
  """XLA's own count for one forward pass, where the backend reports one."""
  apply = jax.jit(lambda v, s, c: model.apply(v, s, c, level=0))
  try:
    cost = apply.lower(variables, semantic, codes).compile().cost_analysis()
  except Exception as error:  # Not every backend implements cost analysis.
    logging.warning("no XLA cost analysis: %s", error)
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost["flops"]) if cost and "flops" in cost else None


def bench_case(storm, seconds: int, batch: int, schedule, repeats: int, seed: int):
  model = storm.model
  num_frames = seconds * CODEC_FRAME_RATE
  rng = np.random.default_rng(seed)
  semantic = jnp.asarray(rng.integers(
      0, model.semantic_vocab, (batch, num_frames // model.frames_per_semantic_token)),
      jnp.int32)

  def run(key):
    result = decoding.decode(model, storm.variables, semantic, None, jax.random.key(key),
                             schedule=schedule, num_frames=num_frames)
    return jax.block_until_ready(result)

  start = time.perf_counter()
  result = run(0)
  first_call = time.perf_counter() - start
  times = []
  for i in range(repeats):
    start = time.perf_counter()
    run(i + 1)
    times.append(time.perf_counter() - start)
  codes = np.asarray(result.codes)
  if codes.min() < 0 or codes.max() >= model.codebook_size:
    raise RuntimeError("decode left mask ids or out-of-range codes")
  codes_in = jnp.zeros((batch, num_frames, model.num_levels), jnp.int32)
  return dict(
      seconds=seconds, batch=batch, frames=num_frames,
      forward_passes=int(result.forward_passes),
      time_s=statistics.median(times), time_min_s=min(times),
      compile_and_first_run_s=first_call,
      flops_per_pass=analytic_flops(model, storm.variables, num_frames, batch),
      xla_flops_per_pass=xla_flops(model, storm.variables, semantic, codes_in))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", choices=sorted(SIZES), default="paper")
  parser.add_argument("--seconds", type=int, nargs="+", default=None,
                      help="lengths to generate (default: 10 20 30 for paper, "
                           "1 2 3 for tiny)")
  parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
  parser.add_argument("--dtype", choices=["bfloat16", "float32"], default=None,
                      help="compute dtype (default: bfloat16 on accelerators, "
                           "float32 on CPU)")
  parser.add_argument("--first_level_iterations", type=int, default=16)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--peak_tflops", type=float, default=None,
                      help="device peak for the chosen dtype (overrides the known table)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default="soundstorm_bench.json")
  args = parser.parse_args(argv)
  seconds_list = args.seconds or DEFAULT_SECONDS[args.size]

  device = jax.devices()[0]
  dtype = args.dtype or ("float32" if device.platform == "cpu" else "bfloat16")
  storm = SoundStorm.random(args.size, seed=args.seed, dtype=dtype, **SIZES[args.size])
  schedule = schedule_lib.paper_schedule(storm.model.num_levels,
                                         args.first_level_iterations)
  peak, peak_source = device_peak_tflops(device.device_kind, dtype, args.peak_tflops)

  rows = []
  header = (f"{'sec':>4} {'batch':>5} {'passes':>6} {'time s':>8} {'first s':>8} "
            f"{'GFLOP/pass':>11} {'XLA GFLOP':>10} {'TFLOP/s':>8} {'of peak':>8}")
  print(f"SoundStorm {args.size}: {storm.num_params() / 1e6:.1f}M parameters, "
        f"{dtype}, schedule {schedule}, {device.device_kind} ({device.platform}), "
        f"peak {peak if peak is not None else '?'} TFLOP/s [{peak_source}]")
  print(header)
  for seconds in seconds_list:
    for batch in args.batch:
      row = bench_case(storm, seconds, batch, schedule, args.repeats, args.seed)
      row["achieved_tflops"] = (row["forward_passes"] * row["flops_per_pass"]
                                / row["time_s"] / 1e12)
      row["fraction_of_peak"] = row["achieved_tflops"] / peak if peak else None
      rows.append(row)
      xla = row["xla_flops_per_pass"]
      print(f"{seconds:>4} {batch:>5} {row['forward_passes']:>6} {row['time_s']:>8.3f} "
            f"{row['compile_and_first_run_s']:>8.2f} {row['flops_per_pass'] / 1e9:>11.4g} "
            f"{(xla / 1e9 if xla else float('nan')):>10.4g} "
            f"{row['achieved_tflops']:>8.3f} "
            + (f"{row['fraction_of_peak']:>8.1%}" if peak else f"{'?':>8}"), flush=True)

  report = dict(
      benchmark="soundstorm_generate", size=args.size, dtype=dtype,
      num_params=storm.num_params(), schedule=list(schedule),
      device_kind=device.device_kind, platform=device.platform,
      num_devices=jax.device_count(), host=platform.node(), jax_version=jax.__version__,
      peak_tflops=peak, peak_source=peak_source, results=rows)
  with open(args.out, "w") as f:
    json.dump(report, f, indent=2)
  print(f"wrote {args.out}")
  return report


if __name__ == "__main__":
  main()
