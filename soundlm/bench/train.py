"""Training throughput: `python -m soundlm.bench.train [--model soundstorm] [--size paper]`.

Times the train step that `python -m soundlm.train` runs: the real task
(`SoundStormTask`, or `AudioLMTask` for one AudioLM stage) inside
`soundlm.trainer.Trainer`'s jitted, sharded, state-donating step, on one
batch of random tokens shaped like a training batch (the paper's crops:
30 s SoundStorm windows with their padding mask; AudioLM stage crops of 30,
10 and 3 s from `gin/audiolm/<size>.gin`). The step is compiled ahead of
time (its compile time is reported on its own), `--warmup` steps run
untimed, and the median of the `--steps` timed steps is the step time. Each
step waits for the device, as the trainer's loop does when it checks the loss.

Reports tokens per second (positions the network processes: codec frames
for SoundStorm, sequence tokens for an AudioLM stage), seconds of training
audio per second, and model-FLOPs utilisation against the device's peak
(bf16 datasheet table or `--peak_tflops`) two ways:

* XLA: XLA's cost analysis of the whole jitted step (forward, backward and
  optimizer; elementwise work included), counted with XLA attention so that
  a fused kernel, which the analysis cannot see into, is not left out;
* 6N+attn: 6 x matrix parameters x tokens plus 12 x layers x width x
  length x tokens for attention scores (the PaLM convention; a causal mask
  is not discounted); embedding lookups are not matrix work.

Writes `train.json` and `train.md` into `--out_dir`; `--markdown FILE` also
puts the tables into FILE's marked block, and `--from_json` re-renders a
saved report without measuring (see `launch/bench.sh`).
"""
import argparse
import dataclasses
import math
import os
import tempfile
from typing import Callable

import jax
import numpy as np

from soundlm import models
from soundlm import partitioning
from soundlm import trainer as trainer_lib
from soundlm.audiolm.synthetic import MarkovStageData
from soundlm.audiolm.tasks import AudioLMTask
from soundlm.bench import common
from soundlm.soundstorm.model import SoundStormConfig
from soundlm.soundstorm.synthetic import KnownProcessCodes
from soundlm.soundstorm.task import SoundStormTask

MODELS = ("soundstorm", "coarse", "semantic", "fine")
ACOUSTIC_RATE = 50
SIZES = {
    # gin configs (gin/soundstorm/<name>.gin, gin/audiolm/<name>.gin), the
    # SoundStorm window (AudioLM crops come from the gin file) and default batch.
    "tiny": dict(config="tiny", soundstorm_seconds=2.0, batch=(4,), steps=5),
    "paper": dict(config="paper", soundstorm_seconds=30.0, batch=(8,), steps=10),
}


@dataclasses.dataclass
class Case:
  """One model to train: its task, a task to count FLOPs with, and its data."""
  model: str
  task: object
  count_task: object          # the same step with XLA attention
  make_data: Callable[[int], object]  # global batch size -> data iterator
  positions: int              # per example: codec frames or sequence tokens
  crop_seconds: float
  num_layers: int
  attention_width: int        # heads x head dim
  attention: str
  padding_mask: bool = False  # SoundStorm batches carry one (all True: full windows)


def soundstorm_case(config: str, dtype: str, attention: str, seconds: float,
                    padding_mask: bool) -> Case:
  def make(implementation):
    model = models.config_from_gin(SoundStormConfig, "soundstorm", config, dtype=dtype,
                                   attention_implementation=implementation)
    return SoundStormTask(model, optimizer=trainer_lib.make_optimizer())
  task = make(attention)
  model = task.model
  num_frames = round(seconds * ACOUSTIC_RATE)
  if num_frames < 1 or num_frames % model.frames_per_semantic_token:
    raise ValueError(f"--crop_seconds {seconds}: {num_frames} codec frames is not a "
                     f"positive multiple of {model.frames_per_semantic_token}")

  def make_data(batch):
    return KnownProcessCodes(batch_size=batch, num_frames=num_frames,
                             num_levels=model.num_levels,
                             codebook_size=model.codebook_size,
                             semantic_vocab=model.semantic_vocab,
                             frames_per_semantic_token=model.frames_per_semantic_token)
  return Case("soundstorm", task, task if attention == "xla" else make("xla"), make_data,
              num_frames, num_frames / ACOUSTIC_RATE, model.config.num_layers,
              model.config.num_heads * model.config.head_dim, attention,
              padding_mask=padding_mask)


def audiolm_case(stage: str, config: str, dtype: str, attention: str,
                 seconds: float | None) -> Case:
  model_config, layout = common.audiolm_stage(config, stage)
  if seconds is not None:
    layout = dataclasses.replace(layout, crop_seconds=seconds)

  def make(implementation):
    return AudioLMTask(layout=layout, optimizer=trainer_lib.make_optimizer(),
                       model=dataclasses.replace(model_config, dtype=dtype,
                                                 attention_implementation=implementation))
  task = make(attention)
  return Case(stage, task, task if attention == "xla" else make("xla"),
              lambda batch: MarkovStageData(layout, batch_size=batch),
              layout.sequence_length() - 1, layout.crop, model_config.num_layers,
              model_config.num_heads * model_config.head_dim, attention)


def matrix_params(case: Case, params) -> int:
  """Parameters that multiply every position once per forward pass: the
  blocks' kernels (depthwise convolutions included) and the output head
  (SoundStorm computes one level's head per example)."""
  total = 0
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    names = [getattr(key, "key", "") for key in path]
    if any(str(n).startswith("block_") for n in names) and leaf.ndim >= 2:
      total += leaf.size
    elif "logits" in names:
      total += leaf.size
    elif "head_kernel" in names:
      total += leaf.size // leaf.shape[0]
  return total


def analytic_flops(case: Case, matrix: int, batch: int) -> float:
  """6 N tokens + 12 L (H Dh) T tokens for one training step."""
  tokens = batch * case.positions
  return float(6 * matrix * tokens
               + 12 * case.num_layers * case.attention_width * case.positions * tokens)


def make_mesh(shape: str | None) -> jax.sharding.Mesh:
  """The mesh of `--mesh data,fsdp,tensor` (the first devices when no axis is
  -1 and fewer than all are named), else the partitioning gin file's."""
  if shape is None:
    return partitioning.make_mesh()
  try:
    sizes = [int(s) for s in shape.split(",")]
  except ValueError:
    sizes = []
  if len(sizes) != 3:
    raise ValueError(f"--mesh must be three integers data,fsdp,tensor, got {shape!r}")
  devices = jax.devices()
  if -1 not in sizes:
    if math.prod(sizes) > len(devices) or min(sizes) < 1:
      raise ValueError(f"--mesh {shape} needs {math.prod(sizes)} devices; "
                       f"{len(devices)} exist")
    devices = devices[:math.prod(sizes)]
  return partitioning.make_mesh(*sizes, devices=devices)


def load_partitioning(name: str) -> str:
  """Parses `gin/partitioning/<name>.gin` (or a gin file path): mesh shape and
  rules. Returns the file's name as given, for the report."""
  import gin
  from soundlm import gin_utils
  file = name if name.endswith(".gin") else f"gin/partitioning/{name}.gin"
  path = gin_utils.find(file, "--partitioning")
  with gin.unlock_config():
    gin.parse_config_file(str(path))
  return file


def _is_out_of_memory(error: Exception) -> bool:
  return "RESOURCE_EXHAUSTED" in str(error) or "out of memory" in str(error).lower()


def run_case(case: Case, batch_size: int, mesh, rules, steps: int, warmup: int,
             seed: int, workdir: str) -> dict:
  """Times `steps` train steps after `warmup` ones; counts the step's FLOPs."""
  if batch_size % partitioning.num_batch_shards(mesh):
    raise ValueError(f"--batch {batch_size} is not divisible by the mesh's "
                     f"{partitioning.num_batch_shards(mesh)} batch shards")
  data = case.make_data(batch_size)
  local = next(data)
  if case.padding_mask:
    local["padding_mask"] = np.ones(local["codes"].shape[:2], bool)
  trainer = trainer_lib.Trainer(case.task, data, os.path.join(workdir, "run"), mesh=mesh,
                                rules=rules, seed=seed, async_checkpoints=False)
  counter = trainer if case.count_task is case.task else trainer_lib.Trainer(
      case.count_task, data, os.path.join(workdir, "count"), mesh=mesh, rules=rules,
      seed=seed, async_checkpoints=False)
  try:
    batch = partitioning.global_batch(local, mesh)
    state, shardings = trainer.create_state(batch)
    params = state["params"]["model"]
    row = dict(num_params=int(sum(x.size for x in jax.tree_util.tree_leaves(params))),
               matrix_params=matrix_params(case, params))
    with partitioning.activate(mesh, rules):
      step = trainer._compile_step(shardings, batch)  # What Trainer.run jits.
      with common.compile_seconds() as compile_s:
        lowered = step.lower(state, batch)
        compiled = lowered.compile()
      if counter is trainer:
        cost = common.lowered_cost(lowered)
      else:
        cost = common.xla_cost(counter.train_step, common.abstract(state),
                               common.abstract(batch))
      losses = []
      (state, metrics), first = common.timed(compiled, state, batch)
      losses.append(float(metrics["model/loss"]))
      for _ in range(warmup - 1):
        state, metrics = jax.block_until_ready(compiled(state, batch))
      times = []
      for _ in range(steps):
        (state, metrics), seconds = common.timed(compiled, state, batch)
        times.append(seconds)
      losses.append(float(metrics["model/loss"]))
    row.update(common.summarize(times, first_step_s=first, compile_s=compile_s[0]),
               loss_first=losses[0], loss_last=losses[-1],
               finite=bool(metrics["finite"]))
    row["flops_per_step"] = cost and cost["flops"]
    row["analytic_flops_per_step"] = analytic_flops(case, row["matrix_params"], batch_size)
    return row
  finally:
    trainer.checkpointer.close()
    if counter is not trainer:
      counter.checkpointer.close()


def measure(case: Case, batch_size: int, mesh, rules, steps: int, warmup: int, seed: int,
            peak, matmul_peak, workdir: str) -> dict:
  """`run_case` plus rates and utilisation; a batch that does not fit in
  device memory gives a row marked `out_of_memory` instead of an error."""
  row = dict(model=case.model, batch=batch_size, positions=case.positions,
             crop_seconds=case.crop_seconds, tokens_per_step=batch_size * case.positions,
             attention=case.attention)
  try:
    row.update(run_case(case, batch_size, mesh, rules, steps, warmup, seed, workdir))
  except jax.errors.JaxRuntimeError as error:
    if not _is_out_of_memory(error):
      raise
    return dict(row, out_of_memory=True, error=str(error).splitlines()[0])
  seconds = row["median_s"]
  row["tokens_per_s"] = row["tokens_per_step"] / seconds
  row["audio_seconds_per_s"] = batch_size * case.crop_seconds / seconds
  xla = common.throughput(row["flops_per_step"], seconds, peak, mesh.size)
  analytic = common.throughput(row["analytic_flops_per_step"], seconds, peak, mesh.size)
  row.update(achieved_tflops=xla["achieved_tflops"], mfu=xla["fraction_of_peak"],
             analytic_tflops=analytic["achieved_tflops"],
             mfu_analytic=analytic["fraction_of_peak"],
             fraction_of_matmul=(xla["achieved_tflops"] / (matmul_peak * mesh.size)
                                 if xla["achieved_tflops"] else None),
             out_of_memory=False)
  return row


def targets(report: dict) -> list[list[str]]:
  """The issue's training target (SoundStorm at paper size and the paper's
  30 s windows: MFU >= 40%), judged on the best batch measured."""
  rows = [r for r in report["results"]
          if r["model"] == "soundstorm" and r["positions"] == 30 * ACOUSTIC_RATE
          and not r["out_of_memory"] and r["mfu"] is not None]
  if report["size"] != "paper" or not rows:
    return []
  best = max(rows, key=lambda r: r["mfu"])
  analytic = common.format_value(best["mfu_analytic"] and 100 * best["mfu_analytic"], ".1f")
  return [["SoundStorm training, paper size", ">= 40% MFU",
           f"{100 * best['mfu']:.1f}% at batch {best['batch']} (XLA count; "
           f"{analytic}% by 6N+attn)", common.verdict(best["mfu"] >= 0.4)]]


def tables(report: dict) -> str:
  """Markdown: the target where measured, then one row per (model, batch)."""
  f = common.format_value
  env = report["environment"]
  pct = lambda x: f(x and 100 * x, ".1f")  # noqa: E731
  rows = []
  for r in report["results"]:
    if r["out_of_memory"]:
      rows.append([r["model"], r["batch"], r["positions"]] + ["out of memory"] + ["-"] * 8)
      continue
    rows.append([r["model"], r["batch"], r["positions"], f(1e3 * r["median_s"], ".1f"),
                 f(r["compile_s"], ".1f"), f(r["tokens_per_s"], ".0f"),
                 f(r["audio_seconds_per_s"], ".1f"),
                 common.format_si(r["flops_per_step"], "FLOP"),
                 f(r["achieved_tflops"], ".3f"), pct(r["mfu"]), pct(r["mfu_analytic"]),
                 pct(r["fraction_of_matmul"])])
  table = common.markdown_table(
      ["model", "batch", "positions", "step (ms)", "compile (s)", "tokens/s",
       "audio s/s", "FLOP/step (XLA)", "TFLOP/s", "MFU XLA (%)", "MFU 6N+attn (%)",
       "% of matmul"], rows)
  mesh = ",".join(str(report["mesh"][a]) for a in partitioning.MESH_AXES)
  header = (f"Training step at size `{report['size']}`, {report['dtype']}, mesh "
            f"data,fsdp,tensor = {mesh} ({report['partitioning']}), on "
            f"{report['num_devices']} x {env['device_kind']} ({env['platform']}), "
            f"jax {env['jax_version']}, {env['date']}; median of {report['steps']} "
            f"timed steps after {report['warmup']} warm-up steps. Peak "
            f"{f(report['peak_tflops'], '.0f')} TFLOP/s per device "
            f"({report['peak_source']}); measured matmul "
            f"{report['matmul_tflops']:.2f} TFLOP/s.\n\n`{report['command']}`")
  goals = targets(report)
  return "\n\n".join([header] + ([common.targets_table(goals)] if goals else [])
                     + [table]) + "\n"


def summary_line(r: dict) -> str:
  if r["out_of_memory"]:
    return f"{r['model']:>10} {r['batch']:>5} {r['positions']:>6}  out of memory"
  f = common.format_value
  return (f"{r['model']:>10} {r['batch']:>5} {r['positions']:>6} "
          f"{1e3 * r['median_s']:>9.1f} {r['compile_s']:>8.1f} {r['tokens_per_s']:>10.0f} "
          f"{f(r['achieved_tflops'], '.3f'):>8} "
          f"{f(r['mfu'] and 100 * r['mfu'], '.1f'):>7} "
          f"{f(r['mfu_analytic'] and 100 * r['mfu_analytic'], '.1f'):>7} "
          f"{r['loss_first']:>7.3f} {r['loss_last']:>7.3f}")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", choices=MODELS, nargs="+", default=["soundstorm"])
  parser.add_argument("--size", choices=sorted(SIZES), default="paper")
  parser.add_argument("--batch", type=int, nargs="+", default=None,
                      help="global batch sizes (default: 8 for paper, 4 for tiny)")
  parser.add_argument("--crop_seconds", type=float, default=None,
                      help="training window (default: the paper's, 30 s for SoundStorm "
                           "and the gin file's crop for an AudioLM stage)")
  parser.add_argument("--partitioning", default="fsdp",
                      help="gin/partitioning/<name>.gin or a gin file: mesh and rules")
  parser.add_argument("--mesh", default=None,
                      help="data,fsdp,tensor sizes (-1: the remaining devices), "
                           "overriding the partitioning file's")
  parser.add_argument("--dtype", choices=["bfloat16", "float32"], default=None,
                      help="compute dtype, float32 master weights (default: bfloat16 on "
                           "accelerators, float32 on CPU)")
  parser.add_argument("--attention", choices=["auto", "xla", "cudnn"], default="auto",
                      help="auto: cuDNN for SoundStorm on GPU in bf16, XLA otherwise")
  parser.add_argument("--no_padding_mask", dest="padding_mask", action="store_false",
                      help="train SoundStorm without the padding mask real batches carry")
  parser.add_argument("--steps", type=int, default=None, help="timed steps (10; tiny 5)")
  parser.add_argument("--warmup", type=int, default=2, help="untimed first steps")
  parser.add_argument("--peak_tflops", type=float, default=None,
                      help="device peak for the dtype (overrides the datasheet table)")
  parser.add_argument("--seed", type=int, default=0)
  common.add_output_flags(parser, "train_results")
  args = parser.parse_args(argv)
  return common.measure_or_render(args, argv, run, tables)


def run(args, argv) -> dict:
  size = SIZES[args.size]
  steps = args.steps or size["steps"]
  batches = args.batch or list(size["batch"])
  if steps < 1 or args.warmup < 1 or min(batches) < 1:
    raise ValueError(f"--steps, --warmup and --batch must be >= 1, got {steps}, "
                     f"{args.warmup}, {batches}")
  device = jax.devices()[0]
  dtype = args.dtype or common.default_dtype(device.platform)
  partitioning_file = load_partitioning(args.partitioning)
  mesh, rules = make_mesh(args.mesh), partitioning.logical_axis_rules()
  peak, peak_source = common.device_peak_tflops(device.device_kind, dtype,
                                                args.peak_tflops)
  matmul_peak = common.matmul_tflops(dtype)
  print(f"train {args.size}: {dtype}, mesh {dict(mesh.shape)} of {device.device_kind} "
        f"({device.platform}); peak {common.format_value(peak)} TFLOP/s [{peak_source}]; "
        f"matmul {matmul_peak:.2f} TFLOP/s", flush=True)
  print(f"{'model':>10} {'batch':>5} {'length':>6} {'step ms':>9} {'compile':>8} "
        f"{'tokens/s':>10} {'TFLOP/s':>8} {'MFU %':>7} {'6N %':>7} {'loss0':>7} "
        f"{'loss':>7}", flush=True)
  rows = []
  with tempfile.TemporaryDirectory() as workdir:
    for name in args.model:
      bidirectional = name == "soundstorm"
      attention = common.attention_implementation(args.attention, device.platform, dtype,
                                                  bidirectional)
      if bidirectional:
        case = soundstorm_case(size["config"], dtype, attention,
                               args.crop_seconds or size["soundstorm_seconds"],
                               args.padding_mask)
      else:
        case = audiolm_case(name, size["config"], dtype, attention, args.crop_seconds)
      for batch in batches:
        row = measure(case, batch, mesh, rules, steps, args.warmup, args.seed, peak,
                      matmul_peak, os.path.join(workdir, f"{name}_{batch}"))
        rows.append(row)
        print(summary_line(row), flush=True)
  report = dict(benchmark="train", size=args.size, dtype=dtype, models=list(args.model),
                steps=steps, warmup=args.warmup, padding_mask=args.padding_mask,
                partitioning=partitioning_file,
                mesh=dict(mesh.shape), rules=[list(r) for r in rules],
                num_devices=mesh.size, peak_tflops=peak, peak_source=peak_source,
                matmul_tflops=matmul_peak, flops_source="xla_cost_analysis",
                command=common.command_line("soundlm.bench.train", argv),
                environment=common.environment(), results=rows)
  common.save_report(args.out_dir, "train", report, tables(report))
  return report


if __name__ == "__main__":
  main()
