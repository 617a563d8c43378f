"""k-means speed and memory: `python -m soundlm.bench.kmeans [--size tiny|paper]`.

Fits k-means (`soundlm.semantic.kmeans.fit_kmeans`, Lloyd passes split over
every device) on random embeddings of the size of a semantic tokenizer's
fit: the paper size is w2v-BERT XL's 1024-wide layer, K = 1024 (AudioLM) on
500k rows; tiny is the built-in corpus's scale. Reported per run: rows per
second of one Lloyd pass (median over the passes after the first, which
compiles), the bytes the rows take on the host, and the process's peak
resident memory.

Writes `kmeans.json` and `kmeans.md` into `--out_dir`; `--markdown FILE`
puts the table into FILE's marked block and `--from_json` re-renders a saved
report.
"""
import argparse
import resource
import time

import numpy as np

from soundlm import partitioning
from soundlm.bench import common
from soundlm.semantic.kmeans import fit_kmeans

SIZES = {"tiny": dict(rows=20_000, dim=64, clusters=64, batch=4096),
         "paper": dict(rows=500_000, dim=1024, clusters=1024, batch=16_384)}


def measure(args, argv) -> dict:
  settings = SIZES[args.size]
  rows = np.random.default_rng(0).standard_normal(
      (settings["rows"], settings["dim"])).astype(np.float32)
  mesh = partitioning.make_mesh()
  passes = []
  start = time.perf_counter()
  _, inertia = fit_kmeans(rows, settings["clusters"], num_iters=args.iters,
                          batch_size=settings["batch"], mesh=mesh,
                          on_iteration=lambda i, _: passes.append(time.perf_counter()))
  total = time.perf_counter() - start
  seconds = np.diff([start, *passes])  # the first includes normalising and k-means++
  steady = float(np.median(seconds[1:])) if len(seconds) > 1 else float(seconds[0])
  return {"benchmark": "kmeans", "size": args.size, **settings, "iters": args.iters,
          "devices": mesh.size, "first_pass_s": float(seconds[0]), "pass_s": steady,
          "rows_per_s": settings["rows"] / steady, "total_s": total,
          "rows_bytes": rows.nbytes,
          "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
          "inertia": [inertia[0], inertia[-1]], "environment": common.environment(),
          "command": common.command_line("soundlm.bench.kmeans", argv)}


def render(report: dict) -> str:
  return common.markdown_table(
      ["rows", "dim", "K", "devices", "first pass (s)", "pass (s)", "rows/s", "rows in memory",
       "peak RSS"],
      [[report["rows"], report["dim"], report["clusters"], report["devices"],
        f"{report['first_pass_s']:.2f}", f"{report['pass_s']:.3f}",
        common.format_si(report["rows_per_s"], ""), common.format_si(report["rows_bytes"], "B"),
        common.format_si(report["peak_rss_bytes"], "B")]])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
  parser.add_argument("--iters", type=int, default=5, help="Lloyd passes (>= 2)")
  common.add_output_flags(parser, "bench_out")
  args = parser.parse_args(argv)
  if args.iters < 2:
    parser.error(f"--iters must be >= 2 (the first pass compiles), got {args.iters}")
  return common.measure_or_render(args, argv, measure, render, save_as="kmeans")


if __name__ == "__main__":
  raise SystemExit(main())
