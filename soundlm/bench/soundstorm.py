"""SoundStorm generation speed: `python -m soundlm.bench.soundstorm [--size paper]`.

Times the jitted level-by-level decode (default schedule (16, 1, ..., 1)) for
10, 20 and 30 s of codes at batch 1 and 8, and reports the matrix FLOPs of one
forward pass (counted from the parameter shapes and cross-checked with XLA's
cost analysis), the achieved TFLOP/s and their fraction of the device's peak.
Prints a table and writes JSON (`--out`).
"""
import argparse

import jax
import jax.numpy as jnp
import numpy as np

from soundlm.bench import common
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
  config = model.config
  attention = 4 * num_frames * config.num_heads * config.head_dim * config.num_layers
  head = 2 * config.embed_dim * config.codebook_size
  return float(batch * num_frames * (2 * weights + attention + head))


def bench_case(storm, seconds: int, batch: int, schedule, repeats: int, seed: int):
  model = storm.model
  num_frames = seconds * CODEC_FRAME_RATE
  rng = np.random.default_rng(seed)
  semantic = jnp.asarray(rng.integers(
      0, model.semantic_vocab, (batch, num_frames // model.frames_per_semantic_token)),
      jnp.int32)
  run = lambda key: decoding.decode(  # noqa: E731  (jitted inside)
      model, storm.variables, semantic, None, key, schedule=schedule,
      num_frames=num_frames)
  timing = common.time_calls(run, jax.random.key(seed), repeats=repeats)
  result = run(jax.random.key(seed))
  codes = np.asarray(result.codes)
  if codes.min() < 0 or codes.max() >= model.codebook_size:
    raise RuntimeError("decode left mask ids or out-of-range codes")
  codes_in = jax.ShapeDtypeStruct((batch, num_frames, model.num_levels), jnp.int32)
  cost = common.xla_cost(lambda v, s, c: model.apply(v, s, c, level=0),
                         common.abstract(storm.variables), common.abstract(semantic),
                         codes_in)
  return dict(
      seconds=seconds, batch=batch, frames=num_frames,
      forward_passes=int(result.forward_passes),
      time_s=timing["median_s"], time_min_s=timing["min_s"], times_s=timing["times_s"],
      compile_and_first_run_s=timing["first_call_s"], compile_s=timing["compile_s"],
      flops_per_pass=analytic_flops(model, storm.variables, num_frames, batch),
      xla_flops_per_pass=cost and cost["flops"])


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
  dtype = args.dtype or common.default_dtype(device.platform)
  storm = SoundStorm.random(args.size, seed=args.seed, dtype=dtype, **SIZES[args.size])
  schedule = schedule_lib.paper_schedule(storm.model.num_levels,
                                         args.first_level_iterations)
  peak, peak_source = common.device_peak_tflops(device.device_kind, dtype,
                                                args.peak_tflops)

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
      num_params=storm.num_params(), schedule=list(schedule), repeats=args.repeats,
      peak_tflops=peak, peak_source=peak_source,
      command=common.command_line("soundlm.bench.soundstorm", argv),
      environment=common.environment(), results=rows)
  common.write_json(args.out, report)
  print(f"wrote {args.out}")
  return report


if __name__ == "__main__":
  main()
