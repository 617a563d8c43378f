"""Each AudioLM stage, trained through the shared trainer from its tiny gin
run file, approaches the entropy of the known Markov process of its targets;
the trained stages load back with `AudioLM.load`."""
import json

import gin
import jax
import numpy as np
import pytest

from soundlm import gin_utils, partitioning, trainer
from soundlm.audiolm import layouts, synthetic, tasks
from soundlm.audiolm.api import AudioLM
from soundlm.audiolm.decoding import SamplingConfig
from soundlm.audiolm.model import ModelConfig


@pytest.fixture
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _train(stage, workdir):
  gin.clear_config()
  gin_utils.parse([f"gin/runs/audiolm_{stage}_tiny.gin"], [])
  (workdir / "config.gin").write_text(gin.config_str())
  task, data = tasks.AudioLMTask(), synthetic.MarkovStageData()
  assert task.layout.stage == stage
  with gin.config_scope("eval"):
    eval_data = synthetic.MarkovStageData()
  assert eval_data.seed != data.seed and eval_data.entropy() == data.entropy()
  # One device: the trainer's sharding is covered by its own tests.
  mesh = partitioning.make_mesh(devices=jax.devices()[:1])
  run = trainer.Trainer(task, data, str(workdir), mesh=mesh, eval_data=lambda: eval_data,
                        async_checkpoints=False)
  run.run()
  with open(workdir / "metrics.jsonl") as f:
    losses = [r["eval/loss"] for r in map(json.loads, f) if "eval/loss" in r]
  return losses[-1], data, jax.device_get(run.state["params"]["model"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  results = {stage: (tmp_path_factory.mktemp(stage),) for stage in layouts.STAGES}
  results = {stage: (workdir, *_train(stage, workdir))
             for stage, (workdir,) in results.items()}
  gin.clear_config()
  return results


@pytest.mark.parametrize("stage", layouts.STAGES)
def test_stage_approaches_the_entropy_of_its_targets(stage, trained):
  _, loss, data, _ = trained[stage]
  entropy = data.entropy()
  # Uniform guessing costs log(8) = 2.08 nats; conditioning is never scored.
  assert entropy - 0.05 < loss < entropy + 0.08, (loss, entropy)


def test_trained_stages_load_and_generate(trained, clean_gin):
  lm = AudioLM.load({stage: str(trained[stage][0]) for stage in layouts.STAGES})
  for stage in layouts.STAGES:
    restored = lm.stages[stage][1]
    jax.tree_util.tree_map(np.testing.assert_array_equal, restored, trained[stage][3])
  greedy = SamplingConfig(temperature=0.0)
  semantic = lm.generate_semantic(np.array([[0], [3]]), 23, rng=0, config=greedy)
  # Greedy decoding of the trained stage 1 follows the chain's likeliest moves.
  transitions = trained["semantic"][2].transitions
  likeliest = np.argmax(transitions, axis=1)
  assert np.mean(semantic[:, 1:] == likeliest[semantic[:, :-1]]) > 0.9
  coarse = lm.generate_coarse(semantic[:, :12], rng=1)  # two windows of 8 frames
  codes = lm.generate_fine(coarse, rng=2)  # three chunks of 8 frames
  assert codes.shape == (2, 24, 4) and codes.min() >= 0 and codes.max() < 8
  np.testing.assert_array_equal(codes[..., :2], coarse)


def test_paper_run_files_parse(clean_gin):
  import soundlm.data.pipeline  # noqa: F401  (registers TaskData; TensorFlow stays lazy)
  lengths = {"semantic": 751, "coarse": 2251, "fine": 1801}  # 30 s, 10 s, 3 s crops
  vocab_sizes = {"semantic": 1026, "coarse": 5122, "fine": 12290}
  for stage in layouts.STAGES:
    gin.clear_config()
    gin_utils.parse([f"gin/runs/audiolm_{stage}.gin"],
                    ["TOKENS = {'speech': '/nonexistent'}"])
    task = tasks.AudioLMTask()
    assert task.layout.stage == stage
    assert task.layout.vocab_size == vocab_sizes[stage]
    assert task.layout.sequence_length() == lengths[stage]
    assert task.model.config == ModelConfig(dtype="bfloat16")
