"""The SoundStorm paper's runtime figure: `python -m soundlm.bench.runtime [--size paper]`.

For each generated length (5, 10, ..., 30 s at the paper size) times, with
random weights (the figure is about compute, not quality):

* SoundStream decoding of all Q levels to a waveform;
* SoundStorm with the paper's schedule (16 iterations on level 1, one on
  each finer level: 27 forward passes for Q = 12), codes out;
* AudioLM stage 2 (coarse) with its windows (10 s windows sliding by half a
  window, prompted by the previous window's codes) and stage 3 (fine) on
  independent 3 s chunks, as `soundlm.audiolm.sampling` generates them.

The first call at each shape is a warm-up (its compile time is reported on
its own); then `--repeats` timed calls, of which the medians are reported.
FLOPs per call come from XLA's cost analysis: one SoundStorm forward pass x
the passes; for the AR stages one prefill plus one KV-cached step x the
steps of each window. Achieved TFLOP/s are compared with the device's peak
(bf16 datasheet table or `--peak_tflops`) and with a measured large matmul.

Writes `runtime.json`, `runtime.md` (tables) and `runtime.png` (log-scale
runtime against length, as in the paper's figure) into `--out_dir`;
`--markdown FILE` also puts the plot and tables into FILE's marked block, and
`--from_json` re-renders a saved report without measuring (see
`launch/bench.sh`). At the paper size the tables open with the issue's
targets that the report measures.
"""
import argparse
import dataclasses
import functools
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from soundlm.audiolm import sampling
from soundlm.audiolm.decoding import Decoder, SamplingConfig
from soundlm.audiolm.model import DecoderLM
from soundlm.bench import common
from soundlm.codec.api import Codec
from soundlm.codec.model import SoundStream
from soundlm.soundstorm import decoding as storm_decoding
from soundlm.soundstorm import schedule as schedule_lib
from soundlm.soundstorm.api import SoundStorm

SEMANTIC_RATE, ACOUSTIC_RATE = 25, 50
SIZES = {
    # Named gin configurations of each model, and the lengths timed by default.
    "tiny": dict(codec="tiny", audiolm="tiny", seconds=(1, 2, 3),
                 soundstorm=dict(config="tiny", semantic_vocab=16, codebook_size=16,
                                 num_levels=4)),
    "paper": dict(codec="paper_16khz", audiolm="paper", seconds=(5, 10, 15, 20, 25, 30),
                  soundstorm=dict(config="paper", semantic_vocab=1024,
                                  codebook_size=1024, num_levels=12)),
}
COMPONENTS = ("codec", "soundstorm", "coarse", "fine")
LABELS = {"codec": "SoundStream decoding", "soundstorm": "SoundStorm",
          "coarse": "AudioLM stage 2 (coarse)", "fine": "AudioLM stage 3 (fine)",
          "audiolm": "AudioLM stages 2 + 3"}


def frames(seconds: float) -> int:
  """50 Hz codec frames in `seconds`, which must be whole 25 Hz semantic frames."""
  semantic = seconds * SEMANTIC_RATE
  if seconds <= 0 or abs(semantic - round(semantic)) > 1e-6:
    raise ValueError(f"--seconds {seconds}: lengths must be positive multiples of "
                     f"{1 / SEMANTIC_RATE} s (whole semantic frames)")
  return round(semantic) * (ACOUSTIC_RATE // SEMANTIC_RATE)


@dataclasses.dataclass
class Setup:
  """The settings every component is built and timed with."""
  size: str
  dtype: str
  batch: int
  repeats: int
  cast_params: bool
  attention: str          # 'auto', 'xla' or 'cudnn'
  first_level_iterations: int
  seed: int

  def attention_for(self, platform: str, model: str) -> str:
    """See `common.attention_implementation`; only SoundStorm is bidirectional."""
    return common.attention_implementation(self.attention, platform, self.dtype,
                                           bidirectional=model == "soundstorm")

  def weights(self, tree):
    """Inference weights: cast to the compute dtype once, not per use."""
    return common.cast_floating(tree, self.dtype) if self.cast_params else tree


# --- SoundStream -----------------------------------------------------------------

def codec_case(codec: Codec, setup: Setup, seconds: float) -> dict:
  model = SoundStream(dataclasses.replace(codec.model.config, dtype=setup.dtype))
  variables = setup.weights(codec.variables)
  rng = np.random.default_rng(setup.seed)
  codes = jnp.asarray(rng.integers(0, model.codebook_size,
                                   (setup.batch, frames(seconds), model.num_levels)),
                      jnp.int32)
  decode = lambda v, c: model.apply(v, c, method="decode")  # noqa: E731
  timing = common.time_calls(jax.jit(decode), variables, codes, repeats=setup.repeats)
  cost = common.xla_cost(decode, common.abstract(variables), common.abstract(codes))
  return dict(timing, flops=cost and cost["flops"], calls=1)


# --- SoundStorm ------------------------------------------------------------------

def soundstorm_case(storm: SoundStorm, setup: Setup, seconds: float) -> dict:
  model = storm.model
  variables = setup.weights(storm.variables)
  num_frames = frames(seconds)
  schedule = schedule_lib.paper_schedule(model.num_levels, setup.first_level_iterations)
  rng = np.random.default_rng(setup.seed)
  semantic = jnp.asarray(rng.integers(
      0, model.semantic_vocab,
      (setup.batch, num_frames // model.frames_per_semantic_token)), jnp.int32)
  generate = jax.jit(lambda v, s, key: storm_decoding.decode(
      model, v, s, None, key, schedule=schedule, num_frames=num_frames))
  timing = common.time_calls(generate, variables, semantic, jax.random.key(setup.seed),
                             repeats=setup.repeats)
  result = generate(variables, semantic, jax.random.key(setup.seed))
  codes = np.asarray(result.codes)
  if codes.min() < 0 or codes.max() >= model.codebook_size:
    raise RuntimeError("SoundStorm decode left mask ids or out-of-range codes")
  passes = int(result.forward_passes)
  codes_in = jax.ShapeDtypeStruct((setup.batch, num_frames, model.num_levels), jnp.int32)
  cost = common.xla_cost(lambda v, s, c: model.apply(v, s, c, level=0),
                         common.abstract(variables), common.abstract(semantic), codes_in)
  return dict(timing, flops=cost and cost["flops"] * passes, forward_passes=passes,
              flops_per_pass=cost and cost["flops"], schedule=list(schedule), calls=1)


# --- AudioLM stages 2 and 3 ---------------------------------------------------------

class RecordingDecoder:
  """A `Decoder` that records (batch, prompt length, steps) of each window it
  generates, so the FLOPs of a windowed generation can be counted."""

  def __init__(self, decoder: Decoder):
    self.decoder, self.layout, self.calls = decoder, decoder.layout, []

  def generate(self, params, prompt, rng, **kwargs):
    self.calls.append((int(prompt.shape[0]), int(prompt.shape[1]), int(kwargs["num_steps"])))
    return self.decoder.generate(params, prompt, rng, **kwargs)


@functools.lru_cache(maxsize=None)
def _window_flops(decoder: Decoder, params_shapes, batch: int, prompt: int,
                  steps: int) -> float | None:
  """One window: a prefill of `prompt` tokens, then `steps - 1` cached steps."""
  params = jax.tree_util.tree_unflatten(*params_shapes)
  cache = jax.eval_shape(lambda p: decoder.init_cache(p, batch, prompt + steps), params)

  def apply(p, c, tokens):
    return decoder.model.apply({"params": p, "cache": c}, tokens, decode=True,
                               mutable=["cache"])
  prefill = common.xla_cost(apply, params, cache,
                            jax.ShapeDtypeStruct((batch, prompt), jnp.int32))
  step = common.xla_cost(apply, params, cache, jax.ShapeDtypeStruct((batch, 1), jnp.int32))
  if prefill is None or step is None:
    return None
  return prefill["flops"] + (steps - 1) * step["flops"]


def ar_case(decoder: Decoder, params, setup: Setup, seconds: float) -> dict:
  layout = decoder.layout
  rng = np.random.default_rng(setup.seed)
  recorder = RecordingDecoder(decoder)
  config = SamplingConfig()
  if layout.stage == "coarse":
    semantic = rng.integers(0, layout.semantic_vocab,
                            (setup.batch, frames(seconds) * SEMANTIC_RATE // ACOUSTIC_RATE)
                            ).astype(np.int32)
    run = lambda: sampling.generate_coarse(  # noqa: E731
        recorder, params, semantic, jax.random.key(setup.seed), config=config)
  else:
    coarse = rng.integers(0, layout.codebook_size,
                          (setup.batch, frames(seconds),
                           layout.num_coarse_levels)).astype(np.int32)
    run = lambda: sampling.generate_fine(  # noqa: E731
        recorder, params, coarse, jax.random.key(setup.seed), config=config)
  timing = common.time_calls(run, repeats=setup.repeats)
  runs = 1 + setup.repeats
  if len(recorder.calls) % runs:
    raise RuntimeError(f"{layout.stage}: generation made a varying number of windows")
  windows = recorder.calls[:len(recorder.calls) // runs]
  shapes = jax.tree_util.tree_flatten(common.abstract(params))
  flops = [_window_flops(decoder, (shapes[1], tuple(shapes[0])), *w) for w in windows]
  steps = sum(w[2] for w in windows)
  return dict(timing, flops=None if None in flops else sum(flops), calls=len(windows),
              windows=[dict(batch=b, prompt=p, steps=n) for b, p, n in windows],
              sequential_steps=steps, ms_per_step=1e3 * timing["median_s"] / steps)


# --- the whole figure ------------------------------------------------------------

@functools.partial(jax.jit, static_argnums=0)
def _init_decoder(model: DecoderLM, rng):
  """One compilation per distinct model (the tiny stages share theirs)."""
  return model.init(rng, jnp.zeros((1, 1), jnp.int32))


def build(setup: Setup) -> dict:
  """Random-weight models of the named size, in the compute dtype."""
  size = SIZES[setup.size]
  platform = jax.devices()[0].platform
  models = {"codec": Codec.random(size["codec"], seed=setup.seed)}
  models["soundstorm"] = SoundStorm.random(
      seed=setup.seed, dtype=setup.dtype,
      attention_implementation=setup.attention_for(platform, "soundstorm"),
      **size["soundstorm"])
  for stage in ("coarse", "fine"):
    config, layout = common.audiolm_stage(size["audiolm"], stage)
    config = dataclasses.replace(config, dtype=setup.dtype,
                                 attention_implementation=setup.attention_for(
                                     platform, stage))
    model = DecoderLM(config, layout.padded_vocab_size)
    params = _init_decoder(model, jax.random.key(setup.seed))["params"]
    models[stage] = (Decoder(model, layout), setup.weights(params))
  return models


def num_params(models) -> dict:
  count = common.count_params
  return {"codec": count(models["codec"].variables["params"]),
          "soundstorm": models["soundstorm"].num_params(),
          "coarse": count(models["coarse"][1]), "fine": count(models["fine"][1])}


def run_length(models, setup: Setup, seconds: float, peak, matmul_peak) -> dict:
  cases = {
      "codec": lambda: codec_case(models["codec"], setup, seconds),
      "soundstorm": lambda: soundstorm_case(models["soundstorm"], setup, seconds),
      "coarse": lambda: ar_case(*models["coarse"], setup, seconds),
      "fine": lambda: ar_case(*models["fine"], setup, seconds),
  }
  row = {"seconds": seconds, "frames": frames(seconds), "batch": setup.batch}
  for name, case in cases.items():
    result = case()
    result.update(common.throughput(result["flops"], result["median_s"], peak))
    result["fraction_of_matmul"] = (result["achieved_tflops"] / matmul_peak
                                    if result["achieved_tflops"] else None)
    row[name] = result
  row["audiolm_s"] = row["coarse"]["median_s"] + row["fine"]["median_s"]
  row["ar_over_soundstorm"] = row["audiolm_s"] / row["soundstorm"]["median_s"]
  return row


def over_floor(report: dict, row: dict) -> float | None:
  """SoundStorm's time over its compute floor: its FLOPs at the measured
  matmul rate (the issue's yardstick: 27 passes over 1500 frames ~ 48 ms)."""
  flops = row["soundstorm"]["flops"]
  if not flops:
    return None
  return row["soundstorm"]["median_s"] / (flops / (report["matmul_tflops"] * 1e12))


def targets(report: dict) -> list[list[str]]:
  """The issue's targets that this report measures (paper size, 30 s)."""
  rows = [r for r in report["results"] if r["seconds"] == 30]
  if report["size"] != "paper" or not rows:
    return []
  row, batch = rows[0], report["batch"]
  f = common.format_value
  found = []
  if batch == 1:
    storm = row["soundstorm"]["median_s"]
    found.append(["SoundStorm, 30 s, batch 1", "<= 0.15 s", f"{storm:.3f} s",
                  common.verdict(storm <= 0.15)])
    steps = (row["coarse"]["ms_per_step"], row["fine"]["ms_per_step"])
    found.append(["AudioLM stages 2 and 3, batch 1", "<= 1 ms per step",
                  f"{steps[0]:.3f} / {steps[1]:.3f} ms", common.verdict(max(steps) <= 1.0)])
  if batch == 8:
    ratio = over_floor(report, row)
    found.append(["SoundStorm, 30 s, batch 8", "< 2x the compute floor",
                  f(ratio, ".2f") + "x", common.verdict(ratio and ratio < 2.0)])
  found.append(["AR / SoundStorm at 30 s", "reported (paper: about 100x)",
                f"{row['ar_over_soundstorm']:.1f}x", "-"])
  return found


def tables(report: dict) -> str:
  """Markdown: targets; runtimes and ratio; FLOPs and throughput; compile times."""
  rows = report["results"]
  f = common.format_value
  runtime = common.markdown_table(
      ["audio (s)", "SoundStream decode (s)", "SoundStorm (s)", "SoundStorm / floor",
       "AudioLM stage 2 (s)", "AudioLM stage 3 (s)", "stages 2+3 (s)", "AR / SoundStorm",
       "stage 2 ms/step", "stage 3 ms/step"],
      [[f"{r['seconds']:g}", f(r["codec"]["median_s"], ".4f"),
        f(r["soundstorm"]["median_s"], ".4f"), f(over_floor(report, r), ".2f") + "x",
        f(r["coarse"]["median_s"], ".3f"), f(r["fine"]["median_s"], ".3f"),
        f(r["audiolm_s"], ".3f"), f(r["ar_over_soundstorm"], ".1f") + "x",
        f(r["coarse"]["ms_per_step"], ".3f"), f(r["fine"]["ms_per_step"], ".3f")]
       for r in rows])
  peak = "% of peak" if report["peak_tflops"] else "% of peak (unknown)"
  flops = common.markdown_table(
      ["audio (s)", "component", "calls", "GFLOP", "TFLOP/s", peak, "% of matmul"],
      [[f"{r['seconds']:g}", LABELS[name], r[name]["calls"],
        f(r[name]["flops"] and r[name]["flops"] / 1e9, ".2f"),
        f(r[name]["achieved_tflops"], ".3f"),
        f(r[name]["fraction_of_peak"] and 100 * r[name]["fraction_of_peak"], ".1f"),
        f(r[name]["fraction_of_matmul"] and 100 * r[name]["fraction_of_matmul"], ".1f")]
       for r in rows for name in COMPONENTS])
  compile_table = common.markdown_table(
      ["audio (s)"] + [f"{LABELS[n]} compile (s)" for n in COMPONENTS],
      [[f"{r['seconds']:g}"] + [f(r[n]["compile_s"], ".2f") for n in COMPONENTS] for r in rows])
  env = report["environment"]
  header = (f"Runtime at size `{report['size']}`, batch {report['batch']}, "
            f"{report['dtype']}, on {env['device_kind']} ({env['platform']}), "
            f"jax {env['jax_version']}, {env['date']}; median of {report['repeats']} "
            f"timed calls after a warm-up.\n\n`{report['command']}`")
  goals = targets(report)
  parts = [header] + ([common.targets_table(goals)] if goals else []) + [
      runtime,
      f"FLOPs per call (XLA cost analysis) and throughput (peak "
      f"{f(report['peak_tflops'], '.0f')} TFLOP/s: {report['peak_source']}; measured "
      f"matmul {report['matmul_tflops']:.2f} TFLOP/s):",
      flops, "Compile time (first call at each shape, excluded above):", compile_table]
  return "\n\n".join(parts) + "\n"


def plot(report: dict, path: str):
  """Log-scale runtime against generated length, one line per component."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows = report["results"]
  seconds = [r["seconds"] for r in rows]
  series = {"audiolm": [r["audiolm_s"] for r in rows]}
  series.update({n: [r[n]["median_s"] for r in rows] for n in ("coarse", "fine",
                                                                "soundstorm", "codec")})
  styles = {"audiolm": dict(marker="o", linestyle="-", color="tab:red"),
            "coarse": dict(marker="^", linestyle="--", color="tab:orange"),
            "fine": dict(marker="v", linestyle="--", color="tab:purple"),
            "soundstorm": dict(marker="s", linestyle="-", color="tab:blue"),
            "codec": dict(marker="D", linestyle="-", color="tab:green")}
  fig, ax = plt.subplots(figsize=(6, 4), dpi=150)
  for name, values in series.items():
    ax.plot(seconds, values, label=LABELS[name], **styles[name])
  ax.set_yscale("log")
  ax.set_xticks(seconds)
  ax.set_xlabel("Length of generated audio (s)")
  ax.set_ylabel("Runtime (s)")
  env = report["environment"]
  ax.set_title(f"{env['device_kind']} ({env['platform']}), size {report['size']}, "
               f"batch {report['batch']}, {report['dtype']}", fontsize=9)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--size", choices=sorted(SIZES), default="paper")
  parser.add_argument("--seconds", type=float, nargs="+", default=None,
                      help="generated lengths (default: 5 10 ... 30 for paper, 1 2 3 for tiny)")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=3, help="timed calls per case")
  parser.add_argument("--dtype", choices=["bfloat16", "float32"], default=None,
                      help="compute dtype (default: bfloat16 on accelerators, float32 on CPU)")
  parser.add_argument("--no_cast_params", dest="cast_params", action="store_false",
                      help="keep float32 weights (cast at every use) instead of casting "
                           "them once to the compute dtype")
  parser.add_argument("--attention", choices=["auto", "xla", "cudnn"], default="auto",
                      help="auto: cuDNN for SoundStorm on GPU in bf16, XLA otherwise")
  parser.add_argument("--first_level_iterations", type=int, default=16)
  parser.add_argument("--peak_tflops", type=float, default=None,
                      help="device peak for the dtype (overrides the datasheet table)")
  parser.add_argument("--seed", type=int, default=0)
  common.add_output_flags(parser, "runtime_results")
  args = parser.parse_args(argv)
  if args.from_json:
    report = common.load_json(args.from_json)
    png = os.path.join(os.path.dirname(args.from_json), "runtime.png")
  else:
    report = run(args, argv)
    png = os.path.join(args.out_dir, "runtime.png")
  if args.markdown:
    section = args.section or common.default_section(report)
    common.replace_markdown_section(args.markdown, section,
                                    markdown_with_plot(report, png, args.markdown))
    print(f"updated {args.markdown} [{section}]")
  return 0


def markdown_with_plot(report: dict, png: str, markdown_path: str) -> str:
  """The tables, preceded by the plot where it lies inside the document's
  repository (a link that resolves wherever the document is read)."""
  text = tables(report)
  relative = os.path.relpath(os.path.abspath(png),
                             os.path.dirname(os.path.abspath(markdown_path)))
  inside = not os.path.relpath(os.path.abspath(png),
                               _repository(markdown_path)).startswith("..")
  if os.path.isfile(png) and inside:
    text = f"![runtime against generated length]({relative})\n\n{text}"
  return text


def _repository(path: str) -> str:
  """The git work tree holding `path` (the nearest folder up with a .git),
  else the folder of `path`."""
  folder = pathlib.Path(path).absolute().parent
  return str(next((p for p in (folder, *folder.parents) if (p / ".git").exists()), folder))


def run(args, argv) -> dict:
  """Measures every length; writes runtime.json, runtime.md and runtime.png."""
  if args.batch < 1 or args.repeats < 1:
    raise ValueError(f"--batch and --repeats must be >= 1, got {args.batch}, {args.repeats}")
  seconds_list = args.seconds or SIZES[args.size]["seconds"]
  for seconds in seconds_list:
    frames(seconds)  # Refuses lengths that are not whole semantic frames.
  device = jax.devices()[0]
  setup = Setup(size=args.size, dtype=args.dtype or common.default_dtype(device.platform),
                batch=args.batch, repeats=args.repeats, cast_params=args.cast_params,
                attention=args.attention, first_level_iterations=args.first_level_iterations,
                seed=args.seed)
  peak, peak_source = common.device_peak_tflops(device.device_kind, setup.dtype,
                                                args.peak_tflops)
  matmul_peak = common.matmul_tflops(setup.dtype)
  models = build(setup)
  print(f"runtime {setup.size}: {setup.dtype}, batch {setup.batch}, {device.device_kind} "
        f"({device.platform}); peak {common.format_value(peak)} TFLOP/s [{peak_source}]; "
        f"matmul {matmul_peak:.2f} TFLOP/s; parameters {num_params(models)}", flush=True)
  print(f"{'sec':>4} {'codec s':>9} {'storm s':>9} {'stage2 s':>9} {'stage3 s':>9} "
        f"{'AR/storm':>9} {'storm TF/s':>10} {'s2 ms/st':>9} {'s3 ms/st':>9}", flush=True)
  rows = []
  for seconds in seconds_list:
    row = run_length(models, setup, seconds, peak, matmul_peak)
    rows.append(row)
    print(f"{seconds:>4g} {row['codec']['median_s']:>9.4f} {row['soundstorm']['median_s']:>9.4f} "
          f"{row['coarse']['median_s']:>9.3f} {row['fine']['median_s']:>9.3f} "
          f"{row['ar_over_soundstorm']:>8.1f}x "
          f"{common.format_value(row['soundstorm']['achieved_tflops'], '.3f'):>10} "
          f"{row['coarse']['ms_per_step']:>9.3f} {row['fine']['ms_per_step']:>9.3f}",
          flush=True)
  report = dict(benchmark="runtime", **dataclasses.asdict(setup),
                num_params=num_params(models), peak_tflops=peak, peak_source=peak_source,
                matmul_tflops=matmul_peak,
                command=common.command_line("soundlm.bench.runtime", argv),
                environment=common.environment(), results=rows)
  common.save_report(args.out_dir, "runtime", report, tables(report))
  plot(report, os.path.join(args.out_dir, "runtime.png"))
  print(f"wrote runtime.png to {args.out_dir}")
  return report


if __name__ == "__main__":
  main()
