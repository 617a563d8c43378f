"""Shared pieces of the benchmarks: timing, FLOP counting, device peaks, reports.

    with compile_seconds() as compiled:            # trace + lower + XLA compile
      first = timed(fn, *args)                     # warm-up call, excluded
    t = time_calls(fn, *args, repeats=5)           # {'median_s', 'min_s', ...}
    flops = xla_cost(jitted_fn, *abstract_args)    # XLA's count for one call
    peak, source = device_peak_tflops(device.device_kind, 'bfloat16', override)
    bandwidth, source = device_bandwidth_tbps(device.device_kind, override)
    replace_markdown_section('BENCHMARKS.md', 'gpu-paper:runtime', tables)

Every timed call ends with `jax.block_until_ready` on its result, so the time
covers the device work, not just the dispatch. XLA's cost analysis counts the
body of a `while`/`scan`/`fori_loop` once, whatever its trip count: count one
iteration (a forward pass, a decode step) and multiply by the iterations.
"""
import contextlib
import datetime
import json
import logging
import math
import os
import platform
import re
import shlex
import statistics
import sys
import time
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Dense (no sparsity) bf16 matrix peaks from vendor datasheets, TFLOP/s per
# device. Substrings of `jax.Device.device_kind`, most specific first.
BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),      # SXM, e.g. 'NVIDIA H100 80GB HBM3'
    ("GH200", 989.0),
    ("H200", 989.0),
    ("A100", 312.0),
    ("L4", 121.0),
    ("TPU v4", 275.0),
    ("TPU v5 lite", 197.0),  # v5e
    ("TPU v5e", 197.0),
    ("TPU v5p", 459.0),
    ("TPU v5", 459.0),       # v5p reports 'TPU v5'
    ("TPU v6 lite", 918.0),  # Trillium
)


def device_peak_tflops(device_kind: str, dtype: str,
                       override: float | None = None) -> tuple[float | None, str]:
  """(peak TFLOP/s per device or None, where the figure comes from).

  The table holds bf16 datasheet peaks only; for other dtypes, or devices not
  in it, pass a measured or known figure as `override` (`--peak_tflops`).
  """
  if override is not None:
    if override <= 0:
      raise ValueError(f"peak_tflops must be > 0, got {override}")
    return float(override), "--peak_tflops"
  if jnp.dtype(dtype) != jnp.bfloat16:
    return None, f"no table entry for {jnp.dtype(dtype).name}; pass --peak_tflops"
  for name, peak in BF16_PEAK_TFLOPS:
    if name.lower() in device_kind.lower():
      return peak, f"{name} bf16 dense datasheet"
  return None, f"no table entry for {device_kind!r}; pass --peak_tflops"


# Peak memory bandwidth from vendor datasheets, TB/s per device: the yardstick
# of a decode step, which reads every weight and the KV cache once. Substrings
# of `jax.Device.device_kind`, most specific first ('GH200' before 'H200', the
# 80 GB A100s before the 40 GB ones).
MEMORY_BANDWIDTH_TBPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 2.0),
    ("H100 NVL", 3.9),
    ("H100", 3.35),            # SXM
    ("GH200", 4.0),
    ("H200", 4.8),
    ("A100-SXM4-80GB", 2.039),
    ("A100 80GB", 1.935),      # 'NVIDIA A100 80GB PCIe'
    ("A100", 1.555),           # 40 GB, SXM or PCIe
    ("L4", 0.3),
    ("TPU v4", 1.2),
    ("TPU v5 lite", 0.819),    # v5e
    ("TPU v5e", 0.819),
    ("TPU v5p", 2.765),
    ("TPU v5", 2.765),         # v5p reports 'TPU v5'
    ("TPU v6 lite", 1.64),     # v6e, Trillium
    ("TPU v6e", 1.64),
)


def device_bandwidth_tbps(device_kind: str,
                          override: float | None = None) -> tuple[float | None, str]:
  """(memory bandwidth in TB/s per device or None, where the figure comes from).

  CPUs and devices missing from the table get None: pass a measured or known
  figure as `override` (`--bandwidth_tbps`).
  """
  if override is not None:
    if override <= 0:
      raise ValueError(f"bandwidth_tbps must be > 0, got {override}")
    return float(override), "--bandwidth_tbps"
  for name, bandwidth in MEMORY_BANDWIDTH_TBPS:
    if name.lower() in device_kind.lower():
      return bandwidth, f"{name} datasheet"
  return None, f"no table entry for {device_kind!r}; pass --bandwidth_tbps"


def default_dtype(platform_name: str | None = None) -> str:
  """bf16 compute on accelerators, float32 on CPU (where bf16 matmuls are slow)."""
  platform_name = platform_name or jax.devices()[0].platform
  return "float32" if platform_name == "cpu" else "bfloat16"


def attention_implementation(choice: str, platform_name: str, dtype: str,
                             bidirectional: bool) -> str:
  """The `jax.nn.dot_product_attention` implementation a benchmark uses.

  'auto' takes cuDNN's fused kernel for bidirectional attention (SoundStorm)
  on GPU in 16-bit, and XLA elsewhere: the AR stages attend through a masked,
  biased KV cache and CPUs have no fused kernel. 'xla' or 'cudnn' force one.
  """
  if choice not in ("auto", "xla", "cudnn"):
    raise ValueError(f"attention must be 'auto', 'xla' or 'cudnn', got {choice!r}")
  if choice != "auto":
    return choice
  if bidirectional and platform_name == "gpu" and jnp.dtype(dtype).itemsize == 2:
    return "cudnn"
  return "xla"


def cast_floating(tree, dtype):
  """Casts the floating-point leaves of `tree` to `dtype` (e.g. inference weights)."""
  dtype = jnp.dtype(dtype)
  return jax.tree_util.tree_map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


# --- compile time ---------------------------------------------------------------

_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_active_compile_totals: list[list[float]] = []


def _on_duration(event: str, seconds: float, **kwargs):
  del kwargs
  if event in _COMPILE_EVENTS:
    for total in _active_compile_totals:
      total[0] += seconds


jax.monitoring.register_event_duration_secs_listener(_on_duration)


@contextlib.contextmanager
def compile_seconds():
  """Yields a one-element list that ends up holding the seconds JAX spent
  tracing, lowering and compiling inside the block (from jax.monitoring)."""
  total = [0.0]
  _active_compile_totals.append(total)
  try:
    yield total
  finally:
    _active_compile_totals.remove(total)


# --- timing --------------------------------------------------------------------

def timed(fn: Callable, *args, **kwargs) -> tuple[Any, float]:
  """(result, wall seconds) of one call, waiting for the device to finish."""
  start = time.perf_counter()
  result = jax.block_until_ready(fn(*args, **kwargs))
  return result, time.perf_counter() - start


def time_calls(fn: Callable, *args, repeats: int = 5, warmup: int = 1,
               **kwargs) -> dict:
  """Times `fn(*args)`: `warmup` untimed calls (compilation happens there), then
  `repeats` timed ones. Returns medians and spread in seconds, the first call's
  time and the compile time measured during the warm-up."""
  if repeats < 1 or warmup < 1:
    raise ValueError(f"repeats and warmup must be >= 1, got {repeats}, {warmup}")
  with compile_seconds() as compile_s:
    _, first = timed(fn, *args, **kwargs)
    for _ in range(warmup - 1):
      timed(fn, *args, **kwargs)
  times = [timed(fn, *args, **kwargs)[1] for _ in range(repeats)]
  return summarize(times, first_call_s=first, compile_s=compile_s[0])


def summarize(times: Sequence[float], **extra) -> dict:
  """Median, min, max and all times of repeated measurements."""
  return dict(median_s=statistics.median(times), min_s=min(times), max_s=max(times),
              times_s=list(times), **extra)


# --- FLOPs ---------------------------------------------------------------------

def xla_cost(fn: Callable, *args, static_argnums=(), **jit_kwargs) -> dict | None:
  """XLA's cost analysis of one call of `jax.jit(fn)` on `args` (arrays or
  `jax.ShapeDtypeStruct`s; nothing is allocated or run): {'flops',
  'bytes_accessed', 'transcendentals'}, or None where the backend has none.
  Loop bodies count once (see the module docstring).
  """
  return lowered_cost(jax.jit(fn, static_argnums=static_argnums, **jit_kwargs).lower(*args))


def lowered_cost(lowered) -> dict | None:
  """`xla_cost` of an already lowered computation (`jax.jit(f).lower(...)`).

  Counts the lowered HLO, before SPMD partitioning, so the figure covers the
  whole (global) computation, and it needs no compilation; falls back to the
  compiled executable's analysis where the lowered one is unavailable (after
  partitioning, that counts one device's share).
  """
  cost = None
  for analyse in (lowered.cost_analysis, lambda: lowered.compile().cost_analysis()):
    try:
      cost = analyse()
    except Exception as error:  # Not every backend implements cost analysis.
      logging.info("XLA cost analysis unavailable here: %s", error)
      continue
    if isinstance(cost, (list, tuple)):
      cost = cost[0] if cost else None
    if cost and "flops" in cost:
      break
  if not cost or "flops" not in cost:
    logging.warning("no XLA cost analysis for this computation")
    return None
  return {"flops": float(cost["flops"]),
          "bytes_accessed": float(cost.get("bytes accessed", math.nan)),
          "transcendentals": float(cost.get("transcendentals", math.nan))}


def abstract(tree):
  """ShapeDtypeStructs of a tree of arrays (for `xla_cost` without device data)."""
  return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def throughput(flops: float | None, seconds: float, peak_tflops: float | None,
               num_devices: int = 1) -> dict:
  """Achieved TFLOP/s (all devices together) and its fraction of their peak."""
  if flops is None or seconds <= 0:
    return {"achieved_tflops": None, "fraction_of_peak": None}
  achieved = flops / seconds / 1e12
  fraction = achieved / (peak_tflops * num_devices) if peak_tflops else None
  return {"achieved_tflops": achieved, "fraction_of_peak": fraction}


def matmul_tflops(dtype: str, size: int | None = None, repeats: int = 5) -> float:
  """Measured TFLOP/s of one square matmul of `size` (default 1024 on CPU,
  8192 on accelerators): a realistic ceiling for the device (datasheet peaks
  are seldom reached)."""
  if size is None:
    size = 1024 if jax.devices()[0].platform == "cpu" else 8192
  key = jax.random.key(0)
  a = jax.random.normal(key, (size, size), jnp.dtype(dtype))
  b = jax.random.normal(jax.random.fold_in(key, 1), (size, size), jnp.dtype(dtype))
  matmul = jax.jit(jnp.matmul)
  timing = time_calls(matmul, a, b, repeats=repeats)
  return 2 * size ** 3 / timing["min_s"] / 1e12


# --- reports -------------------------------------------------------------------

def environment() -> dict:
  """Where and when a benchmark ran: device, counts, versions, host, UTC date."""
  import flax
  device = jax.devices()[0]
  return dict(device_kind=device.device_kind, platform=device.platform,
              num_devices=jax.device_count(), num_processes=jax.process_count(),
              jax_version=jax.__version__, flax_version=flax.__version__,
              python_version=platform.python_version(), host=platform.node(),
              cpus=os.cpu_count(),
              date=datetime.datetime.now(datetime.timezone.utc).strftime(
                  "%Y-%m-%d %H:%M UTC"))


def _plain(value):
  if isinstance(value, dict):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def write_json(path: str, report: dict):
  """Writes `report` (numpy scalars and non-finite floats made JSON-safe)."""
  directory = os.path.dirname(path)
  if directory:
    os.makedirs(directory, exist_ok=True)
  with open(path, "w") as f:
    json.dump(_plain(report), f, indent=2)
    f.write("\n")


def save_report(out_dir: str, name: str, report: dict, markdown: str):
  """Writes `<name>.json` and its rendered tables `<name>.md` into `out_dir`
  and prints the tables."""
  write_json(os.path.join(out_dir, f"{name}.json"), report)
  with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
    f.write(markdown)
  print(markdown)
  print(f"wrote {name}.json and {name}.md to {out_dir}")


def count_params(tree) -> int:
  """Number of scalars in a tree of arrays (a model's parameters)."""
  return int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))


def format_value(value, spec: str = "") -> str:
  """`value` with format `spec`; '-' for None (a figure that was not measured)."""
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "-"
  return format(value, spec)


def format_si(value, unit: str) -> str:
  """`value` with an SI prefix, 3 significant digits: 2.37e13 -> '23.7 TFLOP'."""
  if value is None or not math.isfinite(value):
    return "-"
  for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
    if abs(value) >= scale:
      return f"{value / scale:.3g} {prefix}{unit}"
  return f"{value:.3g} {unit}"


def verdict(met) -> str:
  """'yes' / 'no' for a target, '-' where it could not be measured."""
  return "-" if met is None else ("yes" if met else "no")


def targets_table(rows: Sequence[Sequence[str]]) -> str:
  """Markdown table of (target, goal, measured, met) rows."""
  return markdown_table(["target", "goal", "measured", "met"], rows)


def command_line(module: str, argv: Sequence[str] | None) -> str:
  """The shell command that reruns a benchmark with these arguments."""
  args = sys.argv[1:] if argv is None else list(argv)
  return shlex.join(["python", "-m", module, *args])


def replace_markdown_section(path: str, section: str, text: str):
  """Puts `text` between the lines `<!-- BEGIN section -->` and
  `<!-- END section -->` of the markdown file `path`, so that generated
  tables can be refreshed in a hand-written document."""
  with open(path) as f:
    document = f.read()
  begin, end = f"<!-- BEGIN {section} -->", f"<!-- END {section} -->"
  pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.DOTALL)
  if len(pattern.findall(document)) != 1:
    raise ValueError(f"{path} must hold exactly one '{begin}' ... '{end}' block")
  document = pattern.sub(lambda _: f"{begin}\n{text.rstrip()}\n{end}", document)
  with open(path, "w") as f:
    f.write(document)


def add_output_flags(parser, default_out_dir: str):
  """--out_dir, and the flags that refresh a markdown document from a report."""
  parser.add_argument("--out_dir", default=default_out_dir)
  parser.add_argument("--markdown", default=None,
                      help="also put the tables into this markdown file (e.g. BENCHMARKS.md) "
                           "between its '<!-- BEGIN SECTION -->' and '<!-- END SECTION -->' "
                           "lines")
  parser.add_argument("--section", default=None,
                      help="the block of --markdown to replace (default: "
                           "'<platform>-<size>:<benchmark>[-batch<N>]', e.g. "
                           "'gpu-paper:runtime-batch8')")
  parser.add_argument("--from_json", default=None,
                      help="measure nothing: render the tables of this saved report "
                           "(with --markdown, to regenerate a document)")


def measure_or_render(args, argv, measure: Callable, render: Callable,
                      save_as: str | None = None) -> int:
  """The end of a benchmark's main: measure (`measure(args, argv)` -> report,
  saved with `save_report` under `save_as` when given), or load the
  `--from_json` report, then put `render(report)` into the `--markdown`
  document's block."""
  if args.from_json:
    report = load_json(args.from_json)
  else:
    report = measure(args, argv)
    if save_as:
      save_report(args.out_dir, save_as, report, render(report))
  if args.markdown:
    section = args.section or default_section(report)
    replace_markdown_section(args.markdown, section, render(report))
    print(f"updated {args.markdown} [{section}]")
  return 0


def default_section(report: dict) -> str:
  """'<platform>-<size>:<benchmark>', plus '-batch<N>' for a report made at
  one batch size other than 1: e.g. 'gpu-paper:runtime-batch8'."""
  batch = report.get("batch")
  suffix = f"-batch{batch}" if isinstance(batch, int) and batch != 1 else ""
  return (f"{report['environment']['platform']}-{report['size']}:"
          f"{report['benchmark']}{suffix}")


def load_json(path: str) -> dict:
  """A report written by `write_json`, checked to be one."""
  with open(path) as f:
    report = json.load(f)
  if not isinstance(report, dict) or "benchmark" not in report:
    raise ValueError(f"{path} is not a benchmark report (no 'benchmark' field)")
  return report


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
  """A GitHub markdown table of already formatted cells."""
  lines = ["| " + " | ".join(headers) + " |",
           "|" + "|".join(" ---: " for _ in headers) + "|"]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


# --- models ----------------------------------------------------------------------

def audiolm_stage(config: str, stage: str):
  """(ModelConfig, Layout) of one AudioLM stage from `gin/audiolm/<config>.gin`
  (or a gin file path): the sizes, vocabularies and crops the runs use."""
  import gin
  from soundlm import gin_utils
  from soundlm.audiolm.layouts import Layout
  from soundlm.audiolm.model import ModelConfig
  path = gin_utils.find(config if config.endswith(".gin") else f"gin/audiolm/{config}.gin",
                        "config")
  with gin.unlock_config():
    gin.parse_config_file(str(path))
  with gin.config_scope(stage):
    return ModelConfig(), Layout(stage=stage)
