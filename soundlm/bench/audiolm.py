"""AudioLM decode speed: `python -m soundlm.bench.audiolm [--size paper]`.

For each stage (semantic, coarse, fine) of `gin/audiolm/<size>.gin`, with
random weights in the compute dtype, and each batch size (1, 8, 64), times the two jitted halves of `Decoder.generate` on their own:

* the prefill: allocate the KV cache and run the prompt through the model;
* the decode loop (`Decoder.decode_loop`): `steps` KV-cached forward passes,
  each feeding one token and sampling the next (the first token is sampled
  from the prefill's logits, so `steps + 1` tokens come out).

A step's time is the decode loop's time over `steps`: no prefill, no compile
(the first round is an untimed warm-up; its compile time is reported on its
own). Tokens per second are batch x steps over the decode loop's time.
Medians of `--repeats` rounds.

By default each stage decodes one window as `soundlm.audiolm.sampling`
generates it after the first: stages 1 and 2 prompted with half a window of
targets (and stage 2 with the window's semantic tokens) and generating the
other half, stage 3 a whole chunk from its coarse codes. `--steps` overrides
the number of steps (the prompt stays).

The memory-bandwidth floor of a step is the bytes it must read over the
device's bandwidth (datasheet table in `soundlm/bench/common.py` or
`--bandwidth_tbps`): every weight (the embedding table counted whole,
though a step reads only `batch` rows of it) plus the filled part of the KV
cache, keys and values of all layers at the average length a step attends to
over the decode (prompt + (steps + 1) / 2), at the dtype of the cache arrays
that `Decoder.init_cache` allocates. The attention here reads the whole
allocated cache (masked), which the report also gives. The fraction of the
floor reached is floor time / measured step time.

Writes `audiolm.json` and `audiolm.md` into `--out_dir`; `--markdown FILE`
puts the table into FILE's marked block and `--from_json` re-renders a saved
report without measuring (see `launch/bench.sh`).
"""
import argparse
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from soundlm import rng as rng_lib
from soundlm.audiolm.decoding import CACHE_AXES, Decoder, SamplingConfig
from soundlm.audiolm.model import DecoderLM
from soundlm.bench import common

STAGES = ("semantic", "coarse", "fine")
LABELS = {"semantic": "1 semantic", "coarse": "2 coarse", "fine": "3 fine"}


@dataclasses.dataclass(frozen=True)
class Window:
  """One decode: a prompt of `prompt` ids, of which the last `targets` are
  targets of the stage, then `steps` cached steps."""
  prompt: int
  targets: int
  steps: int

  @property
  def cache_length(self) -> int:
    """Slots allocated, as `Decoder.generate` does for `steps + 1` tokens."""
    return self.prompt + self.steps + 1

  @property
  def mean_attended(self) -> float:
    """Keys a step attends to, averaged over the decode: step i (1..steps)
    feeds the i-th new token and sees the prompt and those i tokens."""
    return self.prompt + (self.steps + 1) / 2


def default_window(layout, steps: int | None = None) -> Window:
  """The steady-state window of `soundlm.audiolm.sampling` for the stage:
  half a window of context in stages 1 and 2, a whole chunk in stage 3."""
  if layout.stage == "fine":
    frames, context = layout.crop_acoustic_frames, 0
  else:
    frames = layout.crop_semantic_frames
    context = frames // 2
  prompt = layout.conditioning_length(frames) + layout.target_length(context)
  default_steps = layout.target_length(frames) - layout.target_length(context)
  steps = default_steps if steps is None else steps
  if steps < 1:
    raise ValueError(f"--steps must be >= 1, got {steps}")
  return Window(prompt, layout.target_length(context), steps)


def tree_bytes(tree) -> int:
  """Bytes of all arrays in `tree`, at their own dtypes."""
  return int(sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree)))


def cache_bytes_per_slot(cache) -> float:
  """Bytes of keys and values (all layers) per cache slot: from the arrays
  `Decoder.init_cache` allocates, [batch, length, heads, kv] each (with a
  leading layer axis in a scanned stack)."""
  leaves = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(cache)
            if path[-1].key in CACHE_AXES]
  if not leaves:
    raise RuntimeError("the decoder's cache holds no keys or values")
  return sum(leaf.size * leaf.dtype.itemsize / leaf.shape[-3] for leaf in leaves)


def decode_functions(decoder: Decoder, window: Window,
                     config: SamplingConfig = SamplingConfig()):
  """(prefill, decode), jitted, which together are `decoder.generate(params,
  prompt, rng, num_steps=window.steps + 1, target_offset=...)`:

      logits, cache = prefill(params, prompt)
      tokens = decode(params, cache, logits, rng, target_offset)

  The decode loop copies the prefilled cache into its loop state once per
  call (it returns no cache that the input could be donated to): one
  read and write of the cache against `steps` reads of it.
  """
  def prefill(params, prompt):
    cache = decoder.init_cache(params, prompt.shape[0], window.cache_length)
    logits, variables = decoder.model.apply({"params": params, "cache": cache}, prompt,
                                            decode=True, mutable=["cache"])
    return logits[:, -1], variables["cache"]

  decode = functools.partial(decoder.decode_loop, num_steps=window.steps + 1,
                             config=config)
  return jax.jit(prefill), jax.jit(decode)


def random_params(model: DecoderLM, dtype: str, seed: int):
  """Weights drawn on the host from N(0, 0.02^2), in the compute dtype: the
  figure is about memory traffic, not quality, and this skips compiling the
  model's initialisers (tens of seconds on a small CPU)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda x: jnp.asarray(0.02 * rng.standard_normal(x.shape, np.float32), dtype),
      nn.meta.unbox(shapes["params"]))


def build(size: str, stage: str, dtype: str, seed: int):
  """(Decoder, params in the compute dtype) of a random-weight stage."""
  config, layout = common.audiolm_stage(size, stage)
  platform = jax.devices()[0].platform
  config = dataclasses.replace(
      config, dtype=dtype, attention_implementation=common.attention_implementation(
          "auto", platform, dtype, bidirectional=False))
  model = DecoderLM(config, layout.padded_vocab_size)
  return Decoder(model, layout), random_params(model, dtype, seed)


def measure(decoder: Decoder, params, window: Window, batch: int, repeats: int,
            seed: int) -> dict:
  """Timings of the prefill and the decode loop, warm-up round excluded."""
  layout = decoder.layout
  prompt = jnp.asarray(np.random.default_rng(seed).integers(
      0, layout.vocab_size, (batch, window.prompt)), jnp.int32)
  prefill, decode = decode_functions(decoder, window)

  def one_round(index):
    (logits, cache), prefill_s = common.timed(prefill, params, prompt)
    slot_bytes = cache_bytes_per_slot(cache)
    tokens, decode_s = common.timed(decode, params, cache, logits,
                                    rng_lib.row_keys(index, batch),
                                    jnp.int32(window.targets))
    return prefill_s, decode_s, slot_bytes, tokens

  with common.compile_seconds() as compile_s:
    *_, slot_bytes, tokens = one_round(0)
  if tokens.shape != (batch, window.steps + 1):
    raise RuntimeError(f"{layout.stage}: decode returned shape {tokens.shape}")
  rounds = [one_round(i + 1)[:2] for i in range(repeats)]
  return dict(prefill=common.summarize([r[0] for r in rounds]),
              decode=common.summarize([r[1] for r in rounds]),
              compile_s=compile_s[0], cache_bytes_per_slot=slot_bytes)


def result_row(stage: str, batch: int, window: Window, num_params: int,
               weight_bytes: int, timing: dict, bandwidth_tbps: float | None) -> dict:
  """One (stage, batch): time per step, tokens/s and the bandwidth floor."""
  step_s = timing["decode"]["median_s"] / window.steps
  cache_bytes = timing["cache_bytes_per_slot"] * window.mean_attended
  bytes_per_step = weight_bytes + cache_bytes
  floor_s = bytes_per_step / (bandwidth_tbps * 1e12) if bandwidth_tbps else None
  return dict(
      stage=stage, batch=batch, prompt=window.prompt, steps=window.steps,
      tokens_out=window.steps + 1, cache_length=window.cache_length,
      mean_attended=window.mean_attended, num_params=num_params,
      weight_bytes=weight_bytes, cache_bytes_per_slot=timing["cache_bytes_per_slot"],
      cache_bytes_per_step=cache_bytes, bytes_per_step=bytes_per_step,
      allocated_cache_bytes=timing["cache_bytes_per_slot"] * window.cache_length,
      prefill=timing["prefill"], decode=timing["decode"], compile_s=timing["compile_s"],
      ms_per_step=1e3 * step_s, tokens_per_s=batch * window.steps / timing["decode"]["median_s"],
      achieved_bytes_per_s=bytes_per_step / step_s,
      floor_ms_per_step=floor_s and 1e3 * floor_s,
      fraction_of_floor=floor_s and floor_s / step_s)


def tables(report: dict) -> str:
  env = report["environment"]
  f = common.format_value
  header = (f"AudioLM decode at size `{report['size']}`, {report['dtype']}, on "
            f"{env['device_kind']} ({env['platform']}), jax {env['jax_version']}, "
            f"{env['date']}; median of {report['repeats']} rounds after a warm-up. "
            f"Bandwidth {f(report['bandwidth_tbps'])} TB/s [{report['bandwidth_source']}]; "
            f"floor = (weights + KV cache at the mean attended length) / bandwidth."
            f"\n\n`{report['command']}`")
  table = common.markdown_table(
      ["stage", "batch", "prompt", "steps", "ms/step", "tokens/s", "prefill (ms)",
       "compile (s)", "weights", "KV cache/step", "bytes/step over step time",
       "floor ms/step",
       "% of floor"],
      [[LABELS[r["stage"]], r["batch"], r["prompt"], r["steps"], f"{r['ms_per_step']:.3f}",
        f"{r['tokens_per_s']:.0f}", f"{1e3 * r['prefill']['median_s']:.2f}",
        f"{r['compile_s']:.2f}", common.format_si(r["weight_bytes"], "B"),
        common.format_si(r["cache_bytes_per_step"], "B"),
        common.format_si(r["achieved_bytes_per_s"], "B/s"),
        f(r["floor_ms_per_step"], ".3f"),
        f(r["fraction_of_floor"] and 100 * r["fraction_of_floor"], ".1f")]
       for r in report["results"]])
  return f"{header}\n\n{table}\n"


def run(args, argv) -> dict:
  if args.repeats < 1 or min(args.batch) < 1:
    raise ValueError(f"--repeats and --batch must be >= 1, got {args.repeats}, {args.batch}")
  device = jax.devices()[0]
  dtype = args.dtype or common.default_dtype(device.platform)
  bandwidth, bandwidth_source = common.device_bandwidth_tbps(device.device_kind,
                                                             args.bandwidth_tbps)
  print(f"audiolm {args.size}: {dtype}, {device.device_kind} ({device.platform}); "
        f"bandwidth {common.format_value(bandwidth)} TB/s [{bandwidth_source}]", flush=True)
  print(f"{'stage':>8} {'batch':>5} {'prompt':>6} {'steps':>5} {'ms/step':>9} "
        f"{'tokens/s':>10} {'prefill ms':>10} {'compile s':>9} {'MB/step':>9} "
        f"{'% floor':>7}", flush=True)
  rows = []
  for stage in args.stage:
    decoder, params = build(args.size, stage, dtype, args.seed)
    window = default_window(decoder.layout, args.steps)
    num_params = common.count_params(params)
    for batch in args.batch:
      timing = measure(decoder, params, window, batch, args.repeats, args.seed)
      row = result_row(stage, batch, window, num_params, tree_bytes(params), timing,
                       bandwidth)
      rows.append(row)
      fraction = row["fraction_of_floor"]
      print(f"{stage:>8} {batch:>5} {window.prompt:>6} {window.steps:>5} "
            f"{row['ms_per_step']:>9.3f} {row['tokens_per_s']:>10.0f} "
            f"{1e3 * row['prefill']['median_s']:>10.2f} {row['compile_s']:>9.2f} "
            f"{row['bytes_per_step'] / 1e6:>9.2f} "
            f"{common.format_value(fraction and 100 * fraction, '.1f'):>7}", flush=True)
  report = dict(benchmark="audiolm", size=args.size, dtype=dtype, stages=list(args.stage),
                batches=list(args.batch), steps=args.steps, repeats=args.repeats,
                seed=args.seed, bandwidth_tbps=bandwidth, bandwidth_source=bandwidth_source,
                command=common.command_line("soundlm.bench.audiolm", argv),
                environment=common.environment(), results=rows)
  common.save_report(args.out_dir, "audiolm", report, tables(report))
  return report


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--size", default="paper",
                      help="gin/audiolm/<size>.gin (paper, tiny) or a gin file")
  parser.add_argument("--stage", choices=STAGES, nargs="+", default=list(STAGES))
  parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64])
  parser.add_argument("--steps", type=int, default=None,
                      help="decode steps per stage (default: one window of generation)")
  parser.add_argument("--repeats", type=int, default=3, help="timed rounds per case")
  parser.add_argument("--dtype", choices=["bfloat16", "float32"], default=None,
                      help="compute dtype of weights and cache (default: bfloat16 on "
                           "accelerators, float32 on CPU)")
  parser.add_argument("--bandwidth_tbps", type=float, default=None,
                      help="device memory bandwidth in TB/s (overrides the datasheet table)")
  parser.add_argument("--seed", type=int, default=0)
  common.add_output_flags(parser, "audiolm_results")
  args = parser.parse_args(argv)
  return common.measure_or_render(args, argv, run, tables)


if __name__ == "__main__":
  main()
