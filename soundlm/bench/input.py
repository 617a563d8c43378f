"""Input pipeline throughput: `python -m soundlm.bench.input [--size paper]`.

For each task pipeline (codec and w2v-BERT waveform crops of the built-in
speech and piano corpus; AudioLM stages 1-3 and SoundStorm on token shards)
reports examples and batches per second on this host after a warm-up, the
time to the first batch, and the time a restored iterator takes to yield its
next batch (it skips the consumed part of the epoch). Compare examples/s
with the accelerator's training step rate x batch size. Token shards hold
random tokens of the model's vocabulary (their values do not change the
cost); pass --tokens to use real shards instead. Prints a table and writes
JSON (`--out`).
"""
import argparse
import json
import os
import platform
import tempfile
import time

SIZES = {
    # Crops and batches of the tiny gin configs and of the papers (AudioLM: 30/10/3 s).
    "tiny": dict(batch_size=8, codec_crop=1.0, w2vbert_crop=2.0, stage_crops=(2.0, 1.0, 0.6),
                 soundstorm_crop=2.0, semantic_vocab=64, codebook_size=64, num_levels=4,
                 num_coarse_levels=2, clip_seconds=(3.0, 8.0), token_clips=256),
    "paper": dict(batch_size=32, codec_crop=1.0, w2vbert_crop=8.0,
                  stage_crops=(30.0, 10.0, 3.0), soundstorm_crop=30.0, semantic_vocab=1024,
                  codebook_size=1024, num_levels=12, num_coarse_levels=4,
                  clip_seconds=(10.0, 35.0), token_clips=1024),
}


def _time_pipeline(make_data, batches: int, warmup: int, restore_at: int):
  data = make_data()
  start = time.perf_counter()
  batch = next(data)
  first = time.perf_counter() - start
  for _ in range(warmup):
    next(data)
  start = time.perf_counter()
  for _ in range(batches):
    batch = next(data)
  elapsed = time.perf_counter() - start
  for _ in range(max(0, restore_at - warmup - batches - 1)):
    next(data)
  restored = make_data()
  restored.set_state(data.get_state())
  start = time.perf_counter()
  next(restored)
  restore = time.perf_counter() - start
  size = next(iter(batch.values())).shape[0]
  return {"examples_per_s": batches * size / elapsed, "batches_per_s": batches / elapsed,
          "first_batch_s": first, "restore_next_batch_s": restore,
          "restore_position": data.get_state()["batch_in_epoch"],
          "shapes": {k: list(v.shape) for k, v in batch.items()}}


def run(size: str, batches: int, warmup: int, restore_at: int, data_dir: str,
        tokens: str | None, work: str, pipelines=None) -> list[dict]:
  """Times each pipeline (all, or those named in `pipelines`); returns table rows."""
  from soundlm.audiolm import layouts
  from soundlm.data import pipeline, tasks
  from soundlm.io import shards
  from soundlm.io.token_space import TokenSpace

  cfg = SIZES[size]
  if tokens is None:
    tokens = os.path.join(work, "tokens")
    spec = TokenSpace(sample_rate=16000, codec_frame_rate=50.0, semantic_frame_rate=25.0,
                      num_levels=cfg["num_levels"], codebook_size=cfg["codebook_size"],
                      semantic_vocab=cfg["semantic_vocab"])
    shards.write_random(tokens, spec, "train", cfg["token_clips"], cfg["clip_seconds"],
                        examples_per_shard=128)
  layout_args = {k: cfg[k] for k in ("semantic_vocab", "codebook_size", "num_levels",
                                     "num_coarse_levels")}
  specs = {
      "codec": lambda: tasks.codec_task(corpora=("speech", "piano"),
                                        crop_seconds=cfg["codec_crop"], data_dir=data_dir),
      "w2vbert": lambda: tasks.w2vbert_task(crop_seconds=cfg["w2vbert_crop"],
                                            data_dir=data_dir),
      "soundstorm": lambda: tasks.soundstorm_task(
          tokens=tokens, num_levels=cfg["num_levels"], codebook_size=cfg["codebook_size"],
          semantic_vocab=cfg["semantic_vocab"], crop_seconds=cfg["soundstorm_crop"]),
  }
  for stage, crop in zip(layouts.STAGES, cfg["stage_crops"]):
    layout = layouts.Layout(stage, crop_seconds=crop, **layout_args)
    specs[f"audiolm_{stage}"] = (lambda s=stage, l=layout:
                                 tasks.audiolm_task(stage=s, tokens=tokens, layout=l))
  rows = []
  for name, make_spec in specs.items():
    if pipelines and name not in pipelines:
      continue
    spec = make_spec()
    result = _time_pipeline(lambda: pipeline.TaskData(spec, batch_size=cfg["batch_size"]),
                            batches, warmup, restore_at)
    rows.append(dict(task=spec.name, pipeline=name, batch_size=cfg["batch_size"], **result))
    print(f"{name:18s} {result['examples_per_s']:10.1f} {result['batches_per_s']:9.2f} "
          f"{result['first_batch_s']:9.2f} {result['restore_next_batch_s']:9.2f}  "
          f"{result['shapes']}", flush=True)
  return rows


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--size", choices=sorted(SIZES), default="tiny")
  p.add_argument("--batches", type=int, default=20, help="timed batches per pipeline")
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--restore_at", type=int, default=30,
                 help="batches consumed before the restore is timed")
  p.add_argument("--data_dir", default=None, help="TFDS data_dir (default: a temporary one)")
  p.add_argument("--tokens", default=None, help="a token shard folder (default: random)")
  p.add_argument("--pipelines", default=None,
                 help="comma-separated subset of: codec, w2vbert, soundstorm, audiolm_semantic, "
                      "audiolm_coarse, audiolm_fine")
  p.add_argument("--out", default=None, help="JSON results file")
  args = p.parse_args(argv)
  with tempfile.TemporaryDirectory() as work:
    print(f"{'pipeline':18s} {'examples/s':>10s} {'batches/s':>9s} {'first(s)':>9s} "
          f"{'restore(s)':>9s}  shapes")
    rows = run(args.size, args.batches, args.warmup, args.restore_at,
               args.data_dir or os.path.join(work, "tfds"), args.tokens, work,
               args.pipelines.split(",") if args.pipelines else None)
  result = {"benchmark": "input", "size": args.size, "host": platform.node(),
            "cpus": os.cpu_count(), "results": rows}
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
