"""SoundStream speed: `python -m soundlm.bench.codec [--size paper|tiny]`.

Real-time factors (seconds of audio per second of compute, all clips of the
batch together) of the codec's public calls, with random weights:

* `encode`: waveform [B, N] -> codes [B, T, Q] (encoder and every RVQ level);
* `decode`: codes [B, T, Q] -> waveform (RVQ lookup and decoder);
* streaming at batch 1: `encoder_stream().push` / `decoder_stream().push`
  on chunks of `--chunk_frames` frames, as a live call would feed them; the
  median time of one chunk is the latency a listener waits for each chunk.

The paper size is the 24 kHz model SoundStorm uses (`gin/codec/paper_24khz.gin`,
12 levels of 1024 codes). The first call at each shape is a warm-up whose
compile time is reported on its own; then `--repeats` timed calls, medians
reported. FLOPs of a full call come from XLA's cost analysis.

Writes `codec.json` and `codec.md` into `--out_dir`; `--markdown FILE` puts
the tables into FILE's marked block and `--from_json` re-renders a saved
report (see `launch/bench.sh`).
"""
import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from soundlm.bench import common
from soundlm.codec.api import Codec
from soundlm.codec.model import SoundStream

SIZES = {"tiny": dict(config="tiny", seconds=1.0),
         "paper": dict(config="paper_24khz", seconds=10.0)}
CALLS = ("encode", "decode")


def build(size: str, dtype: str, seed: int) -> Codec:
  """The named codec with its model computing in `dtype` and its weights cast
  to it once (codebooks included: decoding looks them up in that dtype)."""
  codec = Codec.random(SIZES[size]["config"], seed=seed)
  config = dataclasses.replace(codec.model.config, dtype=dtype)
  return Codec(SoundStream(config), common.cast_floating(codec.variables, dtype))


def speech_like(codec: Codec, batch: int, num_samples: int, seed: int) -> jax.Array:
  """A noisy harmonic waveform at speech level (the codec's cost does not
  depend on the content, but its inputs should be in the usual range)."""
  rng = np.random.default_rng(seed)
  t = np.arange(num_samples) / codec.sample_rate
  pitch = rng.uniform(90, 250, (batch, 1))
  wav = sum(np.sin(2 * np.pi * k * pitch * t) / k for k in range(1, 6))
  wav = 0.1 * wav + 0.01 * rng.standard_normal((batch, num_samples))
  return jnp.asarray(wav, jnp.float32)


def full_call_case(codec: Codec, call: str, batch: int, seconds: float, repeats: int,
                   seed: int) -> dict:
  """Times `codec.encode` or `codec.decode` on `seconds` of audio per clip."""
  num_frames = round(seconds * codec.frame_rate)
  wav = speech_like(codec, batch, num_frames * codec.hop_length, seed)
  # XLA's count comes from the executable the call itself compiles and runs.
  if call == "encode":
    fn, argument = codec.encode, wav
    lowered = codec._encode.lower(codec.variables, wav, codec.num_levels)
  else:
    fn, argument = codec.decode, codec.encode(wav)
    lowered = codec._decode.lower(codec.variables, argument)
  timing = common.time_calls(fn, argument, repeats=repeats)
  cost = common.lowered_cost(lowered)
  audio_seconds = batch * num_frames / codec.frame_rate
  return dict(timing, call=call, batch=batch, seconds=seconds, frames=num_frames,
              flops=cost and cost["flops"],
              real_time_factor=audio_seconds / timing["median_s"])


def count_chunks(num_frames: int, chunk_frames: int) -> int:
  """Whole chunks in a clip; at least two, since the first push compiles."""
  if chunk_frames < 1 or num_frames < 2 * chunk_frames:
    raise ValueError(f"--chunk_frames {chunk_frames} must be >= 1 and leave at least "
                     f"two chunks in {num_frames} frames")
  return num_frames // chunk_frames


def stream_case(codec: Codec, call: str, seconds: float, chunk_frames: int,
                seed: int) -> dict:
  """Feeds one clip chunk by chunk to a stream; times each chunk's push."""
  num_chunks = count_chunks(round(seconds * codec.frame_rate), chunk_frames)
  hop = codec.hop_length
  wav = speech_like(codec, 1, num_chunks * chunk_frames * hop, seed)
  if call == "encode":
    stream = codec.encoder_stream()
    chunks = [wav[:, i * chunk_frames * hop:(i + 1) * chunk_frames * hop]
              for i in range(num_chunks)]
  else:
    stream = codec.decoder_stream()
    codes = codec.encode(wav)
    chunks = [codes[:, i * chunk_frames:(i + 1) * chunk_frames] for i in range(num_chunks)]
  times = []
  for chunk in chunks:
    start = time.perf_counter()
    jax.block_until_ready(stream.push(chunk))
    times.append(time.perf_counter() - start)
  first, steady = times[0], times[1:]  # The first push compiles.
  summary = common.summarize(steady)
  chunk_seconds = chunk_frames / codec.frame_rate
  return dict(summary, call=f"stream_{call}", batch=1, chunk_frames=chunk_frames,
              chunks=num_chunks, first_chunk_s=first,
              real_time_factor=chunk_seconds / summary["median_s"])


def run(args, argv) -> dict:
  if args.repeats < 1 or any(b < 1 for b in args.batch):
    raise ValueError(f"--repeats and --batch must be >= 1, got {args.repeats}, {args.batch}")
  seconds = args.seconds or SIZES[args.size]["seconds"]
  if seconds <= 0:
    raise ValueError(f"--seconds must be > 0, got {seconds}")
  device = jax.devices()[0]
  dtype = args.dtype or common.default_dtype(device.platform)
  codec = build(args.size, dtype, args.seed)
  if args.chunk_frames:
    count_chunks(round(seconds * codec.frame_rate), args.chunk_frames)
  num_params = common.count_params(codec.variables["params"])
  peak, peak_source = common.device_peak_tflops(device.device_kind, dtype, args.peak_tflops)
  print(f"codec {args.size}: {codec.sample_rate} Hz, {codec.num_levels} levels, "
        f"{num_params / 1e6:.2f}M parameters, {dtype}, {device.device_kind} "
        f"({device.platform}); peak {common.format_value(peak)} TFLOP/s [{peak_source}]",
        flush=True)
  rows = []
  for batch in args.batch:
    for call in CALLS:
      row = full_call_case(codec, call, batch, seconds, args.repeats, args.seed)
      row.update(common.throughput(row["flops"], row["median_s"], peak))
      rows.append(row)
      print(f"  {call} batch {batch}: {row['median_s'] * 1e3:.2f} ms, "
            f"real-time factor {row['real_time_factor']:.1f}", flush=True)
  streams = []
  if args.chunk_frames:
    for call in CALLS:
      row = stream_case(codec, call, seconds, args.chunk_frames, args.seed)
      streams.append(row)
      print(f"  {row['call']} {args.chunk_frames} frames: {row['median_s'] * 1e3:.2f} ms "
            f"per chunk, real-time factor {row['real_time_factor']:.1f}", flush=True)
  report = dict(benchmark="codec", size=args.size, dtype=dtype, seconds=seconds,
                sample_rate=codec.sample_rate, frame_rate=codec.frame_rate,
                num_levels=codec.num_levels, num_params=num_params,
                peak_tflops=peak, peak_source=peak_source,
                command=common.command_line("soundlm.bench.codec", argv),
                environment=common.environment(), results=rows, streaming=streams)
  common.save_report(args.out_dir, "codec", report, tables(report))
  return report


def tables(report: dict) -> str:
  """Markdown: the full calls, then the streaming calls."""
  env = report["environment"]
  f = common.format_value
  text = (f"SoundStream {report['size']} ({report['sample_rate']} Hz, "
          f"{report['num_levels']} levels, {report['num_params'] / 1e6:.2f}M parameters), "
          f"{report['dtype']}, {env['device_kind']} ({env['platform']}), "
          f"clips of {report['seconds']:g} s, {env['date']}.\n"
          f"Command: `{report['command']}`\n\n")
  text += common.markdown_table(
      ["call", "batch", "median ms", "compile s", "real-time factor", "FLOPs",
       "TFLOP/s", "of peak"],
      [[r["call"], r["batch"], f(r["median_s"] * 1e3, ".2f"), f(r["compile_s"], ".1f"),
        f(r["real_time_factor"], ".1f"), common.format_si(r["flops"], "FLOP"),
        f(r["achieved_tflops"], ".3f"), f(r["fraction_of_peak"], ".1%")]
       for r in report["results"]])
  if report["streaming"]:
    text += "\n\nStreaming at batch 1 (one push per chunk; the first push compiles):\n\n"
    text += common.markdown_table(
        ["call", "chunk frames", "chunks", "median ms per chunk", "first chunk s",
         "real-time factor"],
        [[r["call"], r["chunk_frames"], r["chunks"], f(r["median_s"] * 1e3, ".2f"),
          f(r["first_chunk_s"], ".2f"), f(r["real_time_factor"], ".1f")]
         for r in report["streaming"]])
  return text + "\n"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", choices=sorted(SIZES), default="paper")
  parser.add_argument("--seconds", type=float, default=None,
                      help="audio per clip (default: 10 for paper, 1 for tiny)")
  parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
  parser.add_argument("--repeats", type=int, default=5, help="timed calls per case")
  parser.add_argument("--chunk_frames", type=int, default=5,
                      help="frames per streaming chunk (0: no streaming rows)")
  parser.add_argument("--dtype", choices=["bfloat16", "float32"], default=None,
                      help="compute dtype (default: bfloat16 on accelerators, float32 on CPU)")
  parser.add_argument("--peak_tflops", type=float, default=None,
                      help="device peak for the dtype (overrides the datasheet table)")
  parser.add_argument("--seed", type=int, default=0)
  common.add_output_flags(parser, "codec_results")
  args = parser.parse_args(argv)
  return common.measure_or_render(args, argv, run, tables)


if __name__ == "__main__":
  main()
