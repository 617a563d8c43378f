"""Builds toy-LM trainers on a chosen mesh, for the foundation tests."""
import json
import os

import jax

from soundlm import partitioning, toy_lm, trainer

SCHEMES = {
    "data_parallel": partitioning.DATA_PARALLEL_RULES,
    "fsdp": (("batch", ("data", "fsdp")), ("embed", "fsdp"), ("vocab", None),
             ("mlp", None), ("heads", None), ("kv", None)),
    "fsdp_tensor": (("batch", ("data", "fsdp")), ("embed", "fsdp"), ("mlp", "tensor"),
                    ("heads", "tensor"), ("vocab", "tensor"), ("kv", None)),
}


def make_trainer(workdir, mesh_shape=(8, 1, 1), rules=SCHEMES["data_parallel"],
                 num_steps=12, checkpoint_every=4, microbatches=1, task=None, **kwargs):
  mesh = partitioning.make_mesh(*mesh_shape)
  task = task or toy_lm.ToyLanguageModelTask(
      toy_lm.ToyLanguageModel(vocab_size=16, embed_dim=16, num_layers=1, num_heads=2,
                              mlp_dim=32),
      trainer.make_optimizer(learning_rate=1e-2, warmup_steps=2, decay_steps=50))
  data = toy_lm.MarkovChainData(batch_size=8, seq_len=16, vocab_size=16)
  return trainer.Trainer(task, data, str(workdir), num_steps=num_steps, log_every=1,
                         checkpoint_every=checkpoint_every, microbatches=microbatches,
                         mesh=mesh, rules=rules, async_checkpoints=False, **kwargs)


def logged(workdir, key="train/model/loss"):
  """{step: value} from the run's metrics.jsonl."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  return {r["step"]: r[key] for r in records if key in r}


def host_copy(tree):
  return jax.tree_util.tree_map(lambda x: jax.device_get(x), tree)
