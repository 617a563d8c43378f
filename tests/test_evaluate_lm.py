"""The lm suite: held-out loss and accuracy per AudioLM stage and SoundStorm,
split by RVQ level, equal to what the tasks' own evaluate computes."""
import gin
import jax
import numpy as np
import pytest

from soundlm import evaluate, models, partitioning, trainer
from soundlm.audiolm.layouts import Layout
from soundlm.audiolm.model import ModelConfig
from soundlm.audiolm.tasks import AudioLMTask
from soundlm.data import pipeline, tasks
from soundlm.evaluation import lm
from soundlm.io import shards
from soundlm.io.token_space import TokenSpace
from soundlm.soundstorm.model import SoundStormConfig
from soundlm.soundstorm.task import SoundStormTask
from tests.test_models import write_workdir

SPEC = TokenSpace(sample_rate=16000, codec_frame_rate=50.0, semantic_frame_rate=25.0,
                  num_levels=4, codebook_size=8, semantic_vocab=8)
LAYOUT = Layout("coarse", semantic_vocab=8, codebook_size=8, num_levels=4,
                num_coarse_levels=2, crop_seconds=0.32)
VALIDATION = 5  # examples: one batch of 4 and a partial one
# The corpus name (the shards' folder): seqio tasks are registered once per
# process under it, so it must not be a name another test in the same worker
# registers with other shards (e.g. 'speech').
CORPUS = "lm_speech"


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("tokens") / CORPUS)
  shards.write_random(root, SPEC, "train", 16, seconds=(0.4, 1.0))
  shards.write_random(root, SPEC, "validation", VALIDATION, seconds=(0.2, 1.0), seed=1)
  return root


@pytest.fixture(scope="module")
def stage_workdir(tokens, tmp_path_factory):
  """The tiny coarse stage trained for a few steps on the token shards."""
  workdir = str(tmp_path_factory.mktemp("coarse_stage"))
  model = ModelConfig(num_layers=1, num_heads=2, head_dim=8, embed_dim=16, mlp_dim=32,
                      dropout_rate=0.0, num_buckets=8, max_distance=32)
  task = AudioLMTask(LAYOUT, model, trainer.make_optimizer(1e-2, warmup_steps=1,
                                                           decay_steps=4))
  data = pipeline.TaskData(tasks.audiolm_task(stage="coarse", tokens=tokens, layout=LAYOUT),
                           batch_size=8)
  trainer.Trainer(task, data, workdir, num_steps=4, log_every=4, checkpoint_every=4,
                  mesh=partitioning.make_mesh(devices=jax.devices()[:1]),
                  async_checkpoints=False).run()
  return workdir


def test_stage_figures_split_by_level_and_match_the_task(tokens, stage_workdir):
  (result,) = lm.evaluate_stage(stage_workdir, tokens, batch_size=4, progress=False)
  assert result["examples"] == VALIDATION and result["corpus"] == CORPUS
  assert [level["level"] for level in result["levels"]] == [0, 1]
  counts = [level["targets"] for level in result["levels"]]
  assert counts[0] == counts[1] and sum(counts) == result["targets"] > 0
  assert result["loss"] == pytest.approx(np.mean([lv["loss"] for lv in result["levels"]]))
  # The task's own evaluate, batch by batch on the same held-out examples.
  model = models.load(stage_workdir, family="audiolm")
  task = AudioLMTask(LAYOUT, model.config.model, None)
  spec = tasks.audiolm_task(stage="coarse", tokens={CORPUS: tokens}, layout=LAYOUT)
  loss = correct = count = 0.0
  task_evaluate = jax.jit(task.evaluate)
  for batch, rows in lm.held_out_batches(spec, "validation", 4, 0):
    figures = task_evaluate({"params": {"model": model.variables["params"]}},
                            {"tokens": batch["tokens"][:rows]}, jax.random.key(0))
    loss += float(figures["loss"]) * float(figures["targets"])
    correct += float(figures["accuracy"]) * float(figures["targets"])
    count += float(figures["targets"])
  assert count == result["targets"]
  assert result["loss"] == pytest.approx(loss / count, rel=1e-5)
  assert result["accuracy"] == pytest.approx(correct / count, rel=1e-5)
  # A few steps on random codes: near chance, log(8) nats and 1/8.
  assert abs(result["loss"] - np.log(8)) < 0.5 and result["accuracy"] < 0.4


def test_soundstorm_figures_per_level(tokens, tmp_path):
  config = SoundStormConfig(semantic_vocab=8, codebook_size=8, num_levels=4, num_layers=1,
                            embed_dim=16, num_heads=2, head_dim=8, mlp_dim=32)
  model = models.random(config, seed=2)
  write_workdir(tmp_path, model)
  with pytest.raises(ValueError, match="soundstorm_crop_seconds"):
    lm.evaluate_soundstorm(str(tmp_path), tokens, progress=False)
  (tmp_path / "config.gin").write_text("soundlm.data.soundstorm_task.crop_seconds = 0.4\n")
  (result,) = lm.evaluate_soundstorm(str(tmp_path), tokens, batch_size=4, progress=False)
  assert result["crop_seconds"] == 0.4 and result["examples"] == VALIDATION
  assert [level["level"] for level in result["levels"]] == [0, 1, 2, 3]
  spec = tasks.soundstorm_task(tokens={CORPUS: tokens}, num_levels=4, codebook_size=8,
                               semantic_vocab=8, crop_seconds=0.4)
  (batch, rows), = list(lm.held_out_batches(spec, "validation", 8, 0))
  batch = {k: v[:rows] for k, v in batch.items()}
  variables = {"params": {"model": model.variables["params"]}}
  figures = jax.jit(SoundStormTask(config).evaluate)(variables, batch, jax.random.key(0))
  for level in result["levels"]:
    assert level["targets"] == batch["padding_mask"].sum()
    assert level["loss"] == pytest.approx(float(figures[f"level_{level['level']}/loss"]),
                                          rel=1e-4)


def test_lm_command_and_its_errors(tokens, stage_workdir, tmp_path, capsys):
  gin.clear_config()
  assert evaluate.main([stage_workdir, f"--tokens={tokens}", f"--out={tmp_path}",
                        "--no_progress"]) == 0
  assert f"| audiolm coarse stage | {CORPUS} | all |" in (tmp_path / "eval.md").read_text()
  only_train = str(tmp_path / "train_only")
  shards.write_random(only_train, SPEC, "train", 2)
  gin.clear_config()
  with pytest.raises(SystemExit):
    evaluate.main([f"--coarse_stage={stage_workdir}", f"--tokens={only_train}",
                   f"--out={tmp_path}", "--no_progress"])
  assert "no 'validation' split" in capsys.readouterr().err
