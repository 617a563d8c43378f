"""w2v-BERT pre-training through the shared trainer (8-device mesh), the losses,
and a tokenizer built from the resulting checkpoint."""
import json
import pathlib

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from soundlm import partitioning
from soundlm.io import corpus
from soundlm.semantic import losses
from soundlm.semantic.api import SemanticEmbedder, SemanticTokenizer
from soundlm.semantic.config import read_config
from soundlm.semantic.fit_kmeans import collect_embeddings
from soundlm.semantic.kmeans import fit_kmeans
from soundlm.semantic.task import W2vBertPretrainTask
from soundlm.trainer import Trainer

STEPS = 16


class FixedSpeech:
  """The same 8 one-second speech crops every step."""

  def __init__(self):
    clips = corpus.load_builtin("train", "speech", max_clips=8)
    self.wav = np.stack([c.waveform[8000:24000] for c in clips]).astype(np.float32)
    self.step = 0

  def __next__(self):
    self.step += 1
    return {"wav": self.wav}

  def get_state(self):
    return {"step": self.step}

  def set_state(self, state):
    self.step = state["step"]


def _task():
  return W2vBertPretrainTask(read_config("tiny"), num_negatives=10, mask_prob=0.1,
                             mask_length=5, gumbel_decay=0.99, optimizer=optax.adam(3e-3))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("w2v_bert_tiny")
  (workdir / "config.gin").write_text(
      "include 'gin/semantic/tiny.gin'\nW2vBertPretrainTask.config = @W2vBertConfig()\n")
  trainer = Trainer(_task(), FixedSpeech(), str(workdir), num_steps=STEPS, log_every=1,
                    checkpoint_every=STEPS, mesh=partitioning.make_mesh(data=8),
                    async_checkpoints=False)
  trainer.run()
  with open(workdir / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  return workdir, records


def test_losses_are_finite_and_fall(trained):
  _, records = trained
  assert len(records) == STEPS
  for name in ("loss", "contrastive", "mlm", "diversity"):
    values = [r[f"train/model/{name}"] for r in records]
    assert np.all(np.isfinite(values)), name
  for name in ("contrastive", "mlm"):
    values = [r[f"train/model/{name}"] for r in records]
    assert np.mean(values[-3:]) < np.mean(values[:3]) - 0.05, (name, values)
  ratio = np.mean([r["train/model/mask_ratio"] for r in records])
  assert 0.2 < ratio < 0.6  # 1 - 0.9^5 = 0.41 on long clips


def test_sharded_evaluation_matches_one_device():
  task = _task()
  batch = {"wav": FixedSpeech().wav}
  small = {"wav": batch["wav"][:1, :640]}  # parameters do not depend on the batch shape
  variables = jax.jit(lambda rng: nn.meta.unbox(task.init(rng, small)))(jax.random.key(0))
  one = jax.jit(task.evaluate)(variables, batch, jax.random.key(1))
  mesh = partitioning.make_mesh(data=8)
  with partitioning.activate(mesh, partitioning.logical_axis_rules()):
    sharded = jax.jit(task.evaluate)(variables, partitioning.global_batch(batch, mesh),
                                     jax.random.key(1))
  for name in ("loss", "contrastive", "mlm", "diversity"):
    np.testing.assert_allclose(sharded[name], one[name], rtol=2e-4, err_msg=name)


def test_tokenizer_from_checkpoint_and_kmeans(trained, tmp_path):
  workdir, _ = trained
  embedder = SemanticEmbedder.load(workdir, layer=2)
  clips = corpus.load_builtin("validation", "speech")
  embeddings, _ = collect_embeddings(embedder, [c.waveform for c in clips], 2.0)
  kmeans, _ = fit_kmeans(embeddings, 16, num_iters=5, layer=2, model=embedder.fingerprint())
  kmeans.save(tmp_path / "kmeans.npz")
  tokenizer = SemanticTokenizer.load(workdir, tmp_path / "kmeans.npz")
  assert (tokenizer.layer, tokenizer.vocab_size) == (2, 16)
  assert tokenizer.embedder.fingerprint() == embedder.fingerprint()
  assert embedder.fingerprint()["source"] == str(pathlib.Path(workdir).absolute())
  assert embedder.step == STEPS
  tokens = np.asarray(tokenizer.tokenize(clips[0].waveform[None, :16_000]))
  assert tokens.shape == (1, 25) and tokens.dtype == np.int32
  assert len(set(tokens[0].tolist())) > 1
  with pytest.raises(ValueError, match="fitted on layer 2"):
    SemanticTokenizer.load(workdir, tmp_path / "kmeans.npz", layer=1)


def test_negatives_are_other_masked_frames_of_the_same_clip():
  mask = np.zeros((2, 30), bool)
  mask[0, 3:9] = True
  mask[1, [2, 20, 21]] = True
  negatives = np.asarray(losses.sample_negatives(jax.random.key(0), mask, 50))
  for b in range(2):
    for t in np.flatnonzero(mask[b]):
      picked = set(negatives[b, t].tolist())
      assert picked <= set(np.flatnonzero(mask[b]).tolist()) - {t}
      assert picked == set(np.flatnonzero(mask[b]).tolist()) - {t}  # 50 draws cover all


def test_diversity_loss_bounds():
  uniform = np.full((1, 4, 8), 1 / 8, np.float32)
  collapsed = np.zeros((1, 4, 8), np.float32)
  collapsed[..., 0] = 1
  assert float(losses.diversity_loss(uniform, 8)[0]) == pytest.approx(0.0, abs=1e-5)
  assert float(losses.diversity_loss(collapsed, 8)[0]) == pytest.approx(7 / 8, abs=1e-4)
