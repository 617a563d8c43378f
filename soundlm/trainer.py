"""The generic sharded train loop.

A *task* says what is trained: `init(rng, batch)` returns flax variables whose
'params' is a dict of parameter groups, and `phases()` returns one `Phase` per
optimizer update made in each step. One phase per group covers plain models;
SoundStream's discriminator-then-generator updates are two phases with their
own optimizers. Non-param collections (RVQ EMA statistics, ...) travel in the
state and are replaced by what each phase's loss function returns.

The state is created already sharded (abstract shapes, then a jitted init
with `out_shardings`), each step is one `jax.jit` with explicit shardings and
a donated state, and the input position is checkpointed with the state.

Preemption is agreed across processes: a SIGTERM only raises a local flag,
the flags are combined after every step, and all processes save that same
step and stop. The work dir may be a gs:// URI (paths go through etils.epath).
"""
import dataclasses
import functools
import json
import logging
import math
import signal
import time
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath
from jax.experimental import multihost_utils

from soundlm import checkpoints
from soundlm import configs
from soundlm import partitioning
from soundlm.io import paths
from soundlm.io.audio import mel_filterbank

LossFn = Callable[[dict, dict, jax.Array, jax.Array], tuple[jax.Array, tuple[dict, dict]]]


@dataclasses.dataclass(frozen=True)
class Phase:
  """One optimizer update of parameter group `name` inside each train step.

  `loss_fn(variables, batch, rng, step) -> (loss, (metrics, updates))`: the
  gradient is taken with respect to `variables['params'][name]`; `updates`
  maps non-param collection names to their new values. The phase is skipped
  (parameters and optimizer state unchanged) before `start_step`.

  `learning_rate(update_count)`, logged as `<name>/learning_rate`, defaults to
  the schedule of an optimizer built by `make_optimizer`; without one the rate
  is not logged.
  """
  name: str
  loss_fn: LossFn
  optimizer: optax.GradientTransformation
  start_step: int = 0
  learning_rate: optax.Schedule | None = None

  def __post_init__(self):
    if self.learning_rate is None:
      object.__setattr__(self, "learning_rate", getattr(self.optimizer, "learning_rate", None))


class Task(Protocol):
  """What is trained. A task of a model family also has `model_config`, the
  family's config dataclass, which the trainer records in the work dir, and
  may have `check_batch(local_batch)`, which raises ValueError on input the
  model cannot take (run on the host for every batch).

  With `eval_data`, `evaluate(variables, batch, rng) -> {name: scalar}` is
  averaged over `eval_steps` batches and logged as `eval/<name>`; a task that
  makes sound may add `eval_audio(variables, batch, rng) -> {name: [B, N]
  waveform}` and `sample_rate`, whose first clips TensorBoard plays and shows
  as spectrograms."""
  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]) -> dict: ...
  def phases(self) -> Sequence[Phase]: ...


class DataIterator(Protocol):
  """This host's share of each global batch, with a restorable position."""
  def __next__(self) -> dict[str, np.ndarray]: ...
  def get_state(self) -> dict: ...
  def set_state(self, state: dict) -> None: ...


class NonFiniteLossError(RuntimeError):
  """Raised when a step produces a NaN/Inf loss, gradient, parameter, optimizer
  state or collection; that step's state is discarded and nothing is saved."""


# The exit status of a run that stopped early on SIGTERM after saving its step:
# EX_TEMPFAIL, "try again". Launchers and the quickstart resume such a run.
PREEMPTED_EXIT_CODE = 75


class ScheduledOptimizer(optax.GradientTransformationExtraArgs):
  """An optax optimizer that also holds the learning-rate schedule it applies,
  `learning_rate(update_count)`, so the trainer logs the rate it trains with
  instead of re-deriving it from settings."""

  def __new__(cls, transformation: optax.GradientTransformation,
              learning_rate: optax.Schedule):
    optimizer = super().__new__(cls, transformation.init, transformation.update)
    optimizer.learning_rate = learning_rate
    return optimizer


@gin.configurable
def make_optimizer(learning_rate: float = 3e-4, warmup_steps: int = 100,
                   decay_steps: int = 10_000, end_learning_rate_fraction: float = 0.1,
                   schedule: str = "cosine", b1: float = 0.9, b2: float = 0.98,
                   weight_decay: float = 0.01, clip_norm: float | None = 1.0
                   ) -> ScheduledOptimizer:
  """AdamW with global-norm clipping and a linear warm-up then decay."""
  end_value = learning_rate * end_learning_rate_fraction
  if schedule == "cosine":
    lr = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps,
                                            max(decay_steps, warmup_steps + 1), end_value)
  elif schedule == "linear":
    lr = optax.join_schedules([
        optax.linear_schedule(0.0, learning_rate, warmup_steps),
        optax.linear_schedule(learning_rate, end_value, max(decay_steps - warmup_steps, 1))],
        [warmup_steps])
  elif schedule == "constant":
    lr = optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup_steps),
                               optax.constant_schedule(learning_rate)], [warmup_steps])
  else:
    raise ValueError(f"schedule must be 'cosine', 'linear' or 'constant', got {schedule!r}")
  parts = [optax.clip_by_global_norm(clip_norm)] if clip_norm else []
  parts.append(optax.adamw(lr, b1=b1, b2=b2, weight_decay=weight_decay))
  return ScheduledOptimizer(optax.chain(*parts), lr)


def split_microbatches(batch, num_microbatches: int):
  """[B, ...] -> [M, B/M, ...] taking every M-th example, so each micro-batch
  stays spread over all batch shards."""
  def split(x):
    if x.shape[0] % num_microbatches:
      raise ValueError(f"batch size {x.shape[0]} is not divisible by "
                       f"{num_microbatches} micro-batches")
    x = x.reshape(x.shape[0] // num_microbatches, num_microbatches, *x.shape[1:])
    return jnp.swapaxes(x, 0, 1)
  return jax.tree_util.tree_map(split, batch)


def _select(pred, new, old):
  return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), new, old)


class MetricsWriter:
  """Scalars to `metrics.jsonl` and TensorBoard event files in the work dir;
  eval audio (clips and their spectrograms) to TensorBoard only.

  A run resumed at step S forgets what an interrupted run logged after S (it
  logs those steps again): such records are dropped from metrics.jsonl and
  TensorBoard purges its events from step S + 1 on. On an object store
  (gs://), which cannot append, metrics.jsonl is rewritten whole at each write.
  """

  def __init__(self, workdir: str, enabled: bool = True, resume_step: int = 0):
    self._enabled = enabled
    if enabled:
      from tensorboardX import SummaryWriter  # Pure Python; no TensorFlow.
      self._path = epath.Path(workdir) / "metrics.jsonl"
      self._lines = _records_until(self._path, resume_step)
      self._appendable = not paths.in_object_store(self._path)
      self._jsonl = self._path.open("a") if self._appendable else None
      self._tensorboard = SummaryWriter(str(epath.Path(workdir) / "tensorboard"),
                                        purge_step=resume_step + 1 if resume_step else None)

  def write(self, step: int, metrics: Mapping[str, float], prefix: str = "train"):
    if not self._enabled:
      return
    record = {"step": step, **{f"{prefix}/{k}": float(v) for k, v in metrics.items()}}
    line = json.dumps(record) + "\n"
    if self._appendable:
      self._jsonl.write(line)
      self._jsonl.flush()
    else:
      self._lines.append(line)
      paths.write_whole(self._path, "".join(self._lines))
    for key, value in record.items():
      if key != "step":
        self._tensorboard.add_scalar(key, value, step)

  def write_audio(self, step: int, clips: Mapping[str, np.ndarray], sample_rate: int):
    """Waveforms `{name: [C, N]}` to TensorBoard: clip c as the audio
    `eval_audio/<name>/<c>` (clipped to [-1, 1], as any wav writer would) and
    its log-mel spectrogram image `eval_mel/<name>/<c>`."""
    if not self._enabled:
      return
    for name, waveforms in clips.items():
      for index, wav in enumerate(np.clip(np.asarray(waveforms, np.float32), -1.0, 1.0)):
        self._tensorboard.add_audio(f"eval_audio/{name}/{index}", wav, step,
                                    sample_rate=sample_rate)
        self._tensorboard.add_image(f"eval_mel/{name}/{index}",
                                    log_mel_image(wav, sample_rate), step, dataformats="HW")
    self._tensorboard.flush()

  def close(self):
    if self._enabled:
      if self._jsonl is not None:
        self._jsonl.close()
      self._tensorboard.close()


def log_mel_image(wav: np.ndarray, sample_rate: int, num_mels: int = 80,
                  floor_db: float = -80.0) -> np.ndarray:
  """[N] waveform -> [num_mels, frames] image in [0, 1], low frequencies at the
  bottom: the log-mel magnitude from `floor_db` to 0 dB (a full-scale sine), on
  one fixed scale so that an input and its reconstruction compare by eye.

  NumPy, with a ~64 ms Hann window (1024 samples at 16 kHz) and a quarter of it
  as hop, over the codec losses' mel filters.
  """
  window = 2 ** int(np.log2(max(min(0.064 * sample_rate, len(wav)), 2)))
  frames = np.lib.stride_tricks.sliding_window_view(wav, window)[::window // 4]
  taper = np.hanning(window + 1)[:-1]
  magnitude = np.abs(np.fft.rfft(frames * (2.0 * taper / taper.sum()), axis=-1))
  filters = mel_filterbank(sample_rate, window, num_mels)
  filters = filters / np.maximum(filters.sum(axis=0), 1e-9)  # each band: its mean magnitude
  decibels = 20.0 * np.log10(np.maximum(magnitude @ filters, 1e-10))
  return np.clip(1.0 - decibels / floor_db, 0.0, 1.0).T[::-1].astype(np.float32)


def _records_until(path: epath.Path, step: int) -> list[str]:
  """The lines of metrics.jsonl up to `step`; the file is rewritten without
  the records of later steps (and a torn last line of a killed run)."""
  if not path.exists():
    return []
  lines = [line + "\n" for line in path.read_text().splitlines() if line.strip()]
  kept = []
  for line in lines:
    try:
      if json.loads(line)["step"] <= step:
        kept.append(line)
    except (ValueError, KeyError):
      pass  # a torn last line of a killed run
  if len(kept) != len(lines):
    logging.info("metrics.jsonl: dropping %d records logged after step %d",
                 len(lines) - len(kept), step)
    paths.write_whole(path, "".join(kept))
  return kept


@gin.configurable(denylist=["task", "data", "workdir", "eval_data"])
class Trainer:
  """Trains `task` on `data` over a device mesh, checkpointing into `workdir`."""

  def __init__(self, task: Task, data: DataIterator, workdir: str, *,
               num_steps: int = 1000, microbatches: int = 1, seed: int = 0,
               log_every: int = 10, checkpoint_every: int = 100, keep_checkpoints: int = 3,
               eval_data: Callable[[], Iterator[dict]] | None = None,
               eval_every: int = 0, eval_steps: int = 1,
               eval_audio: bool = True, eval_audio_clips: int = 2,
               mesh: jax.sharding.Mesh | None = None, rules=None,
               async_checkpoints: bool = True, run_config: str | None = None):
    if num_steps < 1 or microbatches < 1 or log_every < 1:
      raise ValueError("num_steps, microbatches and log_every must be >= 1, got "
                       f"{num_steps}, {microbatches}, {log_every}")
    if eval_audio_clips < 1:
      raise ValueError(f"eval_audio_clips must be >= 1, got {eval_audio_clips}")
    self.task, self.data, self.workdir = task, data, workdir
    self.num_steps, self.microbatches = num_steps, microbatches
    self.seed, self.log_every = seed, log_every
    self.eval_data, self.eval_every, self.eval_steps = eval_data, eval_every, eval_steps
    # Listening samples of a task with `eval_audio`: the first clips of the
    # first eval batch, at each evaluation, in TensorBoard.
    self.eval_audio, self.eval_audio_clips = eval_audio, eval_audio_clips
    self.mesh = mesh if mesh is not None else partitioning.make_mesh()
    self.rules = rules if rules is not None else partitioning.logical_axis_rules()
    self.phases = tuple(task.phases())
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    self.checkpointer = checkpoints.Checkpointer(
        str(epath.Path(workdir) / "checkpoints"), checkpoint_every, keep_checkpoints,
        async_checkpoints)
    self.run_config = run_config  # the run's gin config, saved as config.gin
    self.preempted = False  # agreed by all processes
    self._sigterm = False  # this process's own signal

  # --- state -------------------------------------------------------------

  def _init_fn(self, rng, batch):
    variables = self.task.init(rng, batch)
    params = variables["params"]
    missing = {p.name for p in self.phases} - set(params)
    if missing:
      raise ValueError(f"phases update parameter groups {sorted(missing)} that "
                       f"task.init did not create (groups: {sorted(params)})")
    return {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "opt_state": {p.name: p.optimizer.init(params[p.name]) for p in self.phases},
        "collections": {k: v for k, v in variables.items() if k != "params"},
    }

  def _shardings(self, rng, batch):
    abstract = jax.eval_shape(self._init_fn, rng, batch)
    shardings = partitioning.logical_to_shardings(abstract, self.mesh, self.rules)
    return partitioning.unbox(abstract), shardings

  def create_state(self, batch):
    """The initial state, created directly with its shardings; also returns them."""
    rng = jax.random.key(self.seed)
    with partitioning.activate(self.mesh, self.rules):
      _, shardings = self._shardings(rng, batch)
      init = jax.jit(lambda r, b: partitioning.unbox(self._init_fn(r, b)),
                     out_shardings=shardings)
      return init(rng, batch), shardings

  def abstract_state(self, batch):
    """Shapes, dtypes and shardings of the state without allocating it: the
    target for restoring a checkpoint onto this trainer's mesh."""
    rng = jax.random.key(self.seed)  # made before the mesh is current: it may be compile-only
    with partitioning.activate(self.mesh, self.rules):
      abstract, shardings = self._shardings(rng, batch)
    return checkpoints.abstract_like(abstract, shardings)

  # --- step --------------------------------------------------------------

  def _phase_update(self, state, batch, rng, phase: Phase):
    params = state["params"]

    def loss_fn(group_params, collections, micro_batch, micro_rng):
      variables = {"params": {**params, phase.name: group_params}, **collections}
      return phase.loss_fn(variables, micro_batch, micro_rng, state["step"])

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def accumulate(carry, xs):
      grads_sum, collections = carry
      micro_batch, index = xs
      (loss, (metrics, updates)), grads = grad_fn(
          params[phase.name], collections, micro_batch, jax.random.fold_in(rng, index))
      collections = {**collections, **updates}
      grads_sum = jax.tree_util.tree_map(jnp.add, grads_sum, grads)
      return (grads_sum, collections), (loss, metrics)

    carry = (jax.tree_util.tree_map(jnp.zeros_like, params[phase.name]), state["collections"])
    xs = (split_microbatches(batch, self.microbatches), jnp.arange(self.microbatches))
    if self.microbatches == 1:
      # No loop without accumulation: XLA:CPU runs a loop body (even a fully
      # unrolled scan's) several times slower than the same straight-line code.
      carry, outputs = accumulate(carry, jax.tree_util.tree_map(lambda x: x[0], xs))
      outputs = jax.tree_util.tree_map(lambda x: x[None], outputs)
    else:
      carry, outputs = jax.lax.scan(accumulate, carry, xs)
    (grads, collections), (losses, metrics) = carry, outputs
    grads = jax.tree_util.tree_map(lambda g: g / self.microbatches, grads)
    updates, opt_state = phase.optimizer.update(
        grads, state["opt_state"][phase.name], params[phase.name])
    new_group = optax.apply_updates(params[phase.name], updates)

    loss = jnp.mean(losses)
    grad_norm = optax.tree.norm(grads)
    new_state = {
        **state,
        "params": {**params, phase.name: new_group},
        "opt_state": {**state["opt_state"], phase.name: opt_state},
        "collections": collections,
    }
    metrics = {k: jnp.mean(v) for k, v in metrics.items()}
    metrics.update(loss=loss, grad_norm=grad_norm)
    if phase.learning_rate is not None:
      # The rate of this update: the phase has made step - start_step before it.
      metrics["learning_rate"] = jnp.asarray(
          phase.learning_rate(state["step"] - phase.start_step), jnp.float32)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    return new_state, {f"{phase.name}/{k}": v for k, v in metrics.items()}, finite

  def _scheduled_phase_update(self, state, batch, rng, phase: Phase):
    """The phase's update from `phase.start_step` on; before it, nothing is
    computed (a `lax.cond`), the state is unchanged and the metrics are zero."""
    update = functools.partial(self._phase_update, batch=batch, rng=rng, phase=phase)
    if phase.start_step == 0:
      return update(state)

    def skip(state):
      _, metrics, _ = jax.eval_shape(update, state)
      return state, jax.tree_util.tree_map(lambda m: jnp.zeros(m.shape, m.dtype),
                                           metrics), jnp.array(True)

    return jax.lax.cond(state["step"] >= phase.start_step, update, skip, state)

  def train_step(self, state, batch):
    rng = jax.random.fold_in(jax.random.key(self.seed + 1), state["step"])
    new_state, metrics, finite = state, {}, jnp.array(True)
    for index, phase in enumerate(self.phases):
      new_state, phase_metrics, phase_finite = self._scheduled_phase_update(
          new_state, batch, jax.random.fold_in(rng, index), phase)
      metrics.update(phase_metrics)
      finite &= phase_finite
    new_state = {**new_state, "step": state["step"] + 1}
    # A finite loss can still leave NaN/Inf parameters or moments (a huge
    # learning rate): the step counts as finite only if everything it wrote is.
    for part in ("params", "opt_state", "collections"):
      finite &= _all_finite(new_state[part])
    # A non-finite step leaves the state as it was; the host loop stops.
    new_state = _select(finite, new_state, state)
    metrics["finite"] = finite
    return new_state, metrics

  def _compile_step(self, state_shardings, batch):
    batch_shardings = jax.tree_util.tree_map(lambda x: x.sharding, batch)
    replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
    return jax.jit(self.train_step, in_shardings=(state_shardings, batch_shardings),
                   out_shardings=(state_shardings, replicated), donate_argnums=(0,))

  def lower_step(self, batch):
    """The step `run` compiles, lowered for `batch` (arrays, or ShapeDtypeStructs
    with shardings) against the abstract state: nothing is allocated, so it can
    be compiled for devices this host does not have (`soundlm.compile`)."""
    abstract = self.abstract_state(batch)
    shardings = jax.tree_util.tree_map(lambda x: x.sharding, abstract)
    with partitioning.activate(self.mesh, self.rules):
      return self._compile_step(shardings, batch).lower(abstract, batch)

  # --- loop --------------------------------------------------------------

  def _on_sigterm(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint after this step")
    self._sigterm = True

  def _agree_on_preemption(self) -> bool:
    """Whether any process has been sent SIGTERM, the same answer on all of them
    (a collective after each step), so every process saves the same step."""
    if jax.process_count() == 1:
      return self._sigterm
    return bool(np.any(multihost_utils.process_allgather(np.int32(self._sigterm))))

  def _compile_eval(self):
    """(evaluate, eval_audio) jitted once per run, or None where there is
    nothing to run: a jit made at each evaluation traces and compiles anew."""
    evaluate = getattr(self.task, "evaluate", None)
    if evaluate is None or self.eval_data is None:
      return None, None
    replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
    task_audio = getattr(self.task, "eval_audio", None) if self.eval_audio else None
    eval_fn = jax.jit(evaluate, out_shardings=replicated)
    if task_audio is None:
      return eval_fn, None

    def eval_audio(variables, batch, rng):
      # Only the clips that are written are computed (a SoundStorm task
      # generates them).
      clips = jax.tree_util.tree_map(lambda x: x[:self.eval_audio_clips], batch)
      return task_audio(variables, clips, rng)

    return eval_fn, jax.jit(eval_audio, out_shardings=replicated)

  def _evaluate(self, state, step, writer, eval_fn, audio_fn):
    """Averages `eval_fn` over `eval_steps` batches; `audio_fn`'s clips of the
    first batch go to TensorBoard. Every process computes, process 0 writes."""
    variables = {"params": state["params"], **state["collections"]}
    totals: dict[str, float] = {}
    for i, local_batch in zip(range(self.eval_steps), self.eval_data()):
      batch = partitioning.global_batch(local_batch, self.mesh)
      metrics = jax.device_get(eval_fn(variables, batch, jax.random.key(i)))
      for k, v in metrics.items():
        totals[k] = totals.get(k, 0.0) + float(v) / self.eval_steps
      if i == 0 and audio_fn is not None:
        clips = jax.device_get(audio_fn(variables, batch, jax.random.key(i)))
        writer.write_audio(step, clips, self.task.sample_rate)
    writer.write(step, totals, prefix="eval")
    logging.info("eval step %d: %s", step, _format(totals))

  def _record_model_config(self):
    """Writes the task's model config as `model.json` beside the checkpoints
    (what `soundlm.models.load` reads); a work dir that already records
    another config is refused before anything in it changes."""
    config = getattr(self.task, "model_config", None)
    if config is None or jax.process_index() != 0:
      return
    try:
      family, recorded = configs.read(self.workdir)
    except FileNotFoundError:
      configs.write(self.workdir, config)
      return
    if family != type(config).FAMILY or not _same_config(config, recorded):
      raise ValueError(f"{self.workdir} records another model in {configs.MODEL_FILE} "
                       f"({family}: {recorded}) than this run trains "
                       f"({type(config).FAMILY}: {configs.to_dict(config)}); "
                       "use a new work dir")

  def _write_run_config(self):
    """Saves the run's gin config once the state exists (created or restored), so
    a refused restart leaves the work dir's config.gin as it was."""
    if self.run_config is None or jax.process_index() != 0:
      return
    paths.write_whole(epath.Path(self.workdir) / "config.gin", self.run_config)

  def _next_batch(self):
    """This host's next batch, checked by the task when it can (ids out of a
    model's vocabulary would otherwise surface only as a non-finite loss),
    assembled into the global batch."""
    local = next(self.data)
    check = getattr(self.task, "check_batch", None)
    if check is not None:
      check(local)
    return partitioning.global_batch(local, self.mesh)

  def run(self) -> dict[str, float]:
    """Trains to `num_steps`, resuming from the latest checkpoint; returns the
    last logged metrics. A SIGTERM saves and returns early with `preempted` set."""
    self._record_model_config()
    first_batch = self._next_batch()
    abstract = self.abstract_state(first_batch)
    shardings = jax.tree_util.tree_map(lambda x: x.sharding, abstract)
    restored = self.checkpointer.restore(abstract)
    if restored is None:
      state, _ = self.create_state(first_batch)
      pending = first_batch
    else:
      state, data_state = restored
      self.data.set_state(data_state)
      pending = None
      logging.info("resumed from step %d", int(state["step"]))
    step = int(state["step"])
    self._write_run_config()
    writer = MetricsWriter(self.workdir, enabled=jax.process_index() == 0, resume_step=step)
    previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
    last_metrics: dict[str, float] = {}
    try:
      with partitioning.activate(self.mesh, self.rules):
        step_fn = self._compile_step(shardings, first_batch)
        eval_fn, audio_fn = self._compile_eval()
        window_start, window_steps = time.time(), 0
        while step < self.num_steps:
          batch = pending if pending is not None else self._next_batch()
          pending = None
          state, metrics = step_fn(state, batch)
          step += 1
          self.preempted = self._agree_on_preemption()
          window_steps += 1
          # One scalar per step: the loop stops at the first non-finite step,
          # whose update the jitted step has already discarded.
          if not bool(metrics["finite"]):
            self.checkpointer.wait()
            raise NonFiniteLossError(
                f"non-finite loss, gradient or state at step {step}: "
                f"{_format(jax.device_get(metrics))}; last good checkpoint: step "
                f"{self.checkpointer.latest_step()} in {self.checkpointer.directory}")
          if step % self.log_every == 0 or step == self.num_steps or self.preempted:
            metrics = jax.device_get(metrics)
            metrics.pop("finite")
            rate = window_steps / max(time.time() - window_start, 1e-9)
            last_metrics = {k: float(v) for k, v in metrics.items()}
            writer.write(step, {**last_metrics, "steps_per_second": rate})
            logging.info("step %d/%d  %s  %.2f steps/s  eta %s", step, self.num_steps,
                         _format(last_metrics), rate,
                         _duration((self.num_steps - step) / rate))
            window_start, window_steps = time.time(), 0
          self.checkpointer.save(step, state, self.data.get_state(),
                                 force=self.preempted or step == self.num_steps)
          if eval_fn is not None and self.eval_every and step % self.eval_every == 0:
            self._evaluate(state, step, writer, eval_fn, audio_fn)
          if self.preempted:
            logging.warning("preempted: saved step %d, exiting", step)
            break
    finally:
      signal.signal(signal.SIGTERM, previous_handler)
      self.checkpointer.close()
      writer.close()
    self.state = state
    return last_metrics


def _same_config(config, recorded: dict) -> bool:
  """Whether `recorded` (a model.json's fields) describes `config`; fields that
  the config class gained after it was written take their defaults."""
  try:
    return configs.from_dict(type(config), recorded) == config
  except (ValueError, TypeError):
    return False


def _all_finite(tree) -> jax.Array:
  leaves = [x for x in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else (
      jnp.array(True))


def _format(metrics: Mapping[str, Any]) -> str:
  return " ".join(f"{k}={float(v):.4g}" for k, v in sorted(metrics.items()))


def _duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  minutes, secs = divmod(int(seconds), 60)
  return f"{minutes}m{secs:02d}s"
