"""Where a SoundStream training step's time goes: `python -m soundlm.bench.codec_phases`.

Times, on one batch of the gin file's data (default: the quickstart codec
recipe), the trainer's jitted step with both phases active (discriminator,
then generator with its adversarial terms), the generator-only step that runs
before `CodecTask.discriminator_start_step`, and one training-mode forward
pass of the generator. The discriminator phase reconstructs the batch
itself; reusing the generator phase's reconstruction there would save at
most that forward pass, so `forward / both phases` bounds the gain.

Writes `codec_phases.json` and `codec_phases.md` into `--out_dir`
(`--markdown FILE` and `--from_json` as the other benchmarks).
"""
import argparse
import tempfile

import gin
import jax

from soundlm import partitioning
from soundlm.bench import common
from soundlm.codec.data import WaveformCrops
from soundlm.codec.task import CodecTask
from soundlm.trainer import Trainer


def _step_seconds(task: CodecTask, batch, repeats: int) -> tuple[float, dict]:
  """(median step time, state) of the trainer's step for `task` on `batch`."""
  trainer = Trainer(task, None, tempfile.mkdtemp(prefix="codec_phases_"), num_steps=1)
  placed = partitioning.global_batch(batch, trainer.mesh)
  state, _ = trainer.create_state(placed)
  with partitioning.activate(trainer.mesh, trainer.rules):
    step = jax.jit(trainer.train_step)
    seconds = common.time_calls(lambda: step(state, placed)[1], repeats=repeats)["median_s"]
  return seconds, {"variables": {"params": state["params"], **state["collections"]},
                   "batch": placed, "trainer": trainer}


def measure(args, argv) -> dict:
  gin.parse_config_files_and_bindings(args.gin_file, args.gin_bindings)
  batch = next(iter(WaveformCrops()))
  times = {}
  with gin.unlock_config():
    gin.bind_parameter("CodecTask.discriminator_start_step", 0)
  times["both_phases_s"], _ = _step_seconds(CodecTask(), batch, args.repeats)
  with gin.unlock_config():
    gin.bind_parameter("CodecTask.discriminator_start_step", None)
  task = CodecTask()
  times["generator_only_s"], built = _step_seconds(task, batch, args.repeats)
  forward = jax.jit(lambda v, w, r: task._reconstruct(v, w, r, task.quantizer_start_step)[0])
  with partitioning.activate(built["trainer"].mesh, built["trainer"].rules):
    times["generator_forward_s"] = common.time_calls(
        lambda: forward(built["variables"], built["batch"]["waveform"], jax.random.key(0)),
        repeats=args.repeats)["median_s"]
  return {"benchmark": "codec_phases", "size": "tiny", "gin_file": args.gin_file,
          "batch_shape": list(batch["waveform"].shape), **times,
          "reuse_bound": times["generator_forward_s"] / times["both_phases_s"],
          "environment": common.environment(),
          "command": common.command_line("soundlm.bench.codec_phases", argv)}


def render(report: dict) -> str:
  return common.markdown_table(
      ["batch", "both phases (ms)", "generator only (ms)", "generator forward (ms)",
       "forward / both phases"],
      [[" x ".join(map(str, report["batch_shape"])), f"{report['both_phases_s'] * 1e3:.1f}",
        f"{report['generator_only_s'] * 1e3:.1f}", f"{report['generator_forward_s'] * 1e3:.1f}",
        f"{report['reuse_bound']:.3f}"]])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--gin_file", nargs="+", default=["gin/quickstart/codec.gin"])
  parser.add_argument("--gin_bindings", nargs="*", default=[])
  parser.add_argument("--repeats", type=int, default=10, help="timed calls (median)")
  common.add_output_flags(parser, "bench_out")
  args = parser.parse_args(argv)
  if args.repeats < 1:
    parser.error(f"--repeats must be >= 1, got {args.repeats}")
  return common.measure_or_render(args, argv, measure, render, save_as="codec_phases")


if __name__ == "__main__":
  raise SystemExit(main())
