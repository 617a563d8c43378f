"""The lm suite: held-out loss and accuracy of AudioLM stages and SoundStorm, per RVQ level.

Each model reads the token shards it was trained on (folders written by
`python -m soundlm.data.tokenize`), split `validation` by default, through
the training data path (the same seqio task, crops and feature converter),
each example once, with one crop per clip drawn from `seed`.

* AudioLM stage: next-token cross-entropy (nats) and accuracy over the
  stage's targets, as `AudioLMTask` scores them (each softmax over the ids
  valid at its position), summed over every target and split by RVQ level
  (the semantic stage has one row, 'semantic').
* SoundStorm: for each level q, the loss and accuracy of predicting level q
  with levels < q given and levels >= q masked (`SoundStormTask.evaluate`),
  weighted over every real frame.

Figures are per corpus of the token mapping ({'speech': DIR, ...}).
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from soundlm import gin_utils
from soundlm import models
from soundlm.evaluation import workdirs
from soundlm.evaluation.progress import Progress

SPLIT = "validation"


def _token_corpora(tokens) -> dict[str, str]:
  if isinstance(tokens, str):
    return {epath.Path(tokens).name: tokens}
  return dict(tokens)


def _num_examples(directory: str, split: str) -> int:
  """Examples in `split` of the token shards in `directory` (refusing an absent
  or empty split)."""
  from soundlm.io import shards
  manifest = shards.read_manifest(directory)
  if split not in manifest["splits"]:
    raise ValueError(f"token shards {directory} have no {split!r} split (they have "
                     f"{sorted(manifest['splits'])}); write it with python -m "
                     f"soundlm.data.tokenize --split={split} --out={directory} ...")
  count = manifest["splits"][split]["num_examples"]
  if not count:
    raise ValueError(f"token shards {directory}: the {split!r} split holds no example")
  return count


def held_out_batches(spec, split: str, batch_size: int, seed: int):
  """(batch, rows) over every example of `split` of the TaskSpec `spec` once;
  the last batch is filled with all-zero rows (PAD tokens, padding_mask False),
  which hold no target."""
  from soundlm.io import tf_env
  seqio = tf_env.seqio()
  ds = seqio.get_mixture_or_task(spec.name).get_dataset(
      dict(spec.feature_lengths), split=split, shuffle=False, seed=seed, num_epochs=1,
      use_cached=False)
  ds = spec.make_converter()(ds, dict(spec.feature_lengths))
  for batch in ds.batch(batch_size).as_numpy_iterator():
    rows = len(next(iter(batch.values())))
    if rows < batch_size:
      batch = {k: np.concatenate([v, np.zeros((batch_size - rows, *v.shape[1:]), v.dtype)])
               for k, v in batch.items()}
    yield batch, rows


def _stage_sums(module, layout):
  """Jitted (params, tokens) -> per-level sums of cross-entropy, correct
  predictions and targets, each [layout.target_levels]."""
  from soundlm.audiolm.tasks import target_cross_entropy

  @jax.jit
  def sums(params, tokens):
    logits = module.apply({"params": params}, tokens[:, :-1])
    targets = tokens[:, 1:]
    cross_entropy, weights, logits = target_cross_entropy(logits, targets, layout)
    level = jnp.where(weights > 0, (targets - layout.target_base) // layout.target_width, 0)
    per_level = jax.nn.one_hot(level, layout.target_levels) * weights[..., None]
    correct = (jnp.argmax(logits, axis=-1) == targets)[..., None] * per_level
    return {"loss": (cross_entropy[..., None] * per_level).sum((0, 1)),
            "correct": correct.sum((0, 1)), "targets": per_level.sum((0, 1))}
  return sums


def _level_names(layout) -> list:
  first = {"semantic": 0, "coarse": 0, "fine": layout.num_coarse_levels}[layout.stage]
  if layout.stage == "semantic":
    return ["semantic"]
  return [first + i for i in range(layout.target_levels)]


def _rows(names, loss, correct, targets) -> tuple[dict, list[dict]]:
  """(overall figures, one row per level) from per-level sums."""
  count = float(np.sum(targets))
  overall = {"loss": float(np.sum(loss)) / max(count, 1.0),
             "accuracy": float(np.sum(correct)) / max(count, 1.0), "targets": int(count)}
  levels = [{"level": name, "loss": float(l) / max(float(n), 1.0),
             "accuracy": float(c) / max(float(n), 1.0), "targets": int(n)}
            for name, l, c, n in zip(names, loss, correct, targets)]
  return overall, levels


def evaluate_stage(workdir: str, tokens, *, split: str = SPLIT, batch_size: int = 16,
                   seed: int = 0, flag: str = "--stage", progress: bool = True) -> list[dict]:
  """One result per corpus of `tokens` for the AudioLM stage trained in `workdir`."""
  from soundlm.data import tasks

  workdirs.check(workdir, "audiolm", flag)
  model = models.load(workdir, family="audiolm")
  layout = model.config.layout
  sums_fn = _stage_sums(model.module, layout)
  names = _level_names(layout)
  results = []
  for corpus, directory in _token_corpora(tokens).items():
    spec = tasks.audiolm_task(stage=layout.stage, tokens={corpus: directory}, layout=layout)
    totals = {k: np.zeros(layout.target_levels) for k in ("loss", "correct", "targets")}
    examples = 0
    batches = -(-_num_examples(directory, split) // batch_size)
    counter = Progress(f"lm {layout.stage} stage, {corpus}", batches,
                       "batches", enabled=progress)
    for batch, rows in held_out_batches(spec, split, batch_size, seed):
      for key, value in jax.device_get(sums_fn(model.variables["params"],
                                               batch["tokens"])).items():
        totals[key] += value
      examples += rows
      counter.advance()
    overall, levels = _rows(names, totals["loss"], totals["correct"], totals["targets"])
    results.append({"model": f"audiolm {layout.stage} stage", "workdir": str(workdir),
                    "step": model.step, "corpus": corpus, "tokens": directory,
                    "examples": examples, **overall, "levels": levels})
  return results


def training_crop_seconds(workdir: str) -> float | None:
  """The `soundstorm_task.crop_seconds` that the run's config.gin records, if any."""
  path = epath.Path(workdir) / "config.gin"
  if not path.exists():
    return None
  try:
    crop = gin_utils.read_literals(os.fspath(path), "soundstorm_task").get("crop_seconds")
  except ValueError as error:
    raise ValueError(f"{error}; give the crop to evaluate on (--soundstorm_crop_seconds)"
                     ) from error
  return None if crop is None else float(crop)


def evaluate_soundstorm(workdir: str, tokens, *, split: str = SPLIT, batch_size: int = 16,
                        seed: int = 0, crop_seconds: float | None = None,
                        flag: str = "--soundstorm", progress: bool = True) -> list[dict]:
  """One result per corpus of `tokens` for the SoundStorm model trained in
  `workdir`, on crops of `crop_seconds` (default: its training crop)."""
  from soundlm.data import tasks
  from soundlm.soundstorm.task import SoundStormTask

  workdirs.check(workdir, "soundstorm", flag)
  if crop_seconds is None:
    crop_seconds = training_crop_seconds(workdir)
    if crop_seconds is None:
      raise ValueError(f"{flag}: {workdir}/config.gin records no soundstorm_task.crop_seconds;"
                       " give the crop to evaluate on (--soundstorm_crop_seconds)")
  model = models.load(workdir, family="soundstorm")
  config = model.config
  task = SoundStormTask(config)
  evaluate = jax.jit(task.evaluate)
  variables = {"params": {"model": model.variables["params"]}}
  names = list(range(config.num_levels))
  results = []
  for corpus, directory in _token_corpora(tokens).items():
    spec = tasks.soundstorm_task(
        tokens={corpus: directory}, num_levels=config.num_levels,
        codebook_size=config.codebook_size, semantic_vocab=config.semantic_vocab,
        crop_seconds=crop_seconds, frames_per_semantic=config.frames_per_semantic_token)
    loss, correct, frames = (np.zeros(config.num_levels) for _ in range(3))
    examples = 0
    batches = -(-_num_examples(directory, split) // batch_size)
    counter = Progress(f"lm soundstorm, {corpus}", batches,
                       "batches", enabled=progress)
    for batch, rows in held_out_batches(spec, split, batch_size, seed):
      metrics = jax.device_get(evaluate(variables, batch, jax.random.key(0)))
      # Every level's figures are means over the same real frames of the batch.
      count = float(batch["padding_mask"].sum())
      loss += count * np.array([metrics[f"level_{q}/loss"] for q in names])
      correct += count * np.array([metrics[f"level_{q}/accuracy"] for q in names])
      frames += count
      examples += rows
      counter.advance()
    overall, levels = _rows(names, loss, correct, frames)
    results.append({"model": "soundstorm", "workdir": str(workdir), "step": model.step,
                    "corpus": corpus, "tokens": directory, "examples": examples,
                    "crop_seconds": crop_seconds, **overall, "levels": levels})
  return results
