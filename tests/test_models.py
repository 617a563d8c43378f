"""The model contract: every family saves its config as model.json and loads its
inference variables from a trainer-layout checkpoint, on one device or a mesh."""
import json

import jax
import numpy as np
import pytest

from soundlm import checkpoints
from soundlm import configs
from soundlm import models
from soundlm import partitioning
from soundlm.audiolm.layouts import Layout
from soundlm.audiolm.model import ModelConfig, StageConfig
from soundlm.codec.model import SoundStreamConfig
from soundlm.semantic.config import read_config
from soundlm.soundstorm.model import SoundStormConfig

TENSOR_RULES = partitioning.logical_axis_rules(
    [("batch", ["data", "fsdp"]), ("embed", "fsdp"), ("mlp", "tensor"),
     ("heads", "tensor"), ("vocab", "tensor"), ("levels", None), ("length", None),
     ("kv", None), ("conv_in", None), ("conv_out", None)])


def tiny_configs():
  stage_model = models.config_from_gin(ModelConfig, "audiolm", "tiny",
                                       selector="soundlm.audiolm.ModelConfig")
  return {
      "soundstream": models.config_from_gin(SoundStreamConfig, "codec", "tiny"),
      "w2v_bert": read_config("tiny"),
      "audiolm": StageConfig(stage_model, Layout(stage="coarse", semantic_vocab=8,
                                                 codebook_size=8, num_levels=4,
                                                 num_coarse_levels=2, crop_seconds=0.32)),
      "soundstorm": models.config_from_gin(SoundStormConfig, "soundstorm", "tiny"),
  }


def write_workdir(workdir, model: models.Model, step: int = 3):
  """A work dir as the trainer leaves it: model.json and a checkpoint whose state
  holds the model's variables at the family's paths beside other groups."""
  state = {"step": np.int32(step), "params": {"other_group": np.ones(3, np.float32)},
           "opt_state": {"other_group": np.zeros(3, np.float32)}, "collections": {}}
  for collection, path in model.family.state_paths.items():
    models._set(state, path, model.variables[collection])
  checkpointer = checkpoints.Checkpointer(str(workdir / "checkpoints"), save_every=1,
                                          async_save=False)
  checkpointer.save(step, state, {"position": 0}, force=True)
  checkpointer.close()
  configs.write(str(workdir), model.config)


def assert_same_tree(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("family", sorted(models.FAMILIES))
def test_every_family_round_trips_through_its_work_dir(family, tmp_path):
  config = tiny_configs()[family]
  model = models.random(config, seed=1)
  write_workdir(tmp_path, model)
  record = json.loads((tmp_path / configs.MODEL_FILE).read_text())
  assert record["family"] == family

  loaded = models.load(str(tmp_path))
  assert loaded.config == config and loaded.step == 3
  assert_same_tree(loaded.variables, model.variables)

  mesh = partitioning.make_mesh(2, 2, 2)
  sharded = models.load(str(tmp_path), family=family, mesh=mesh, rules=TENSOR_RULES)
  assert_same_tree(sharded.variables, model.variables)
  expected = sharded.partitioner.shardings(models.FAMILIES[family].abstract_variables(config))
  for leaf, sharding in zip(jax.tree_util.tree_leaves(sharded.variables),
                            jax.tree_util.tree_leaves(expected)):
    assert leaf.sharding == sharding


def test_config_json_round_trip_keeps_nested_dataclasses_and_tuples():
  for config in tiny_configs().values():
    assert configs.from_dict(type(config), json.loads(json.dumps(configs.to_dict(config)))
                             ) == config


def test_load_refuses_another_family_a_missing_step_and_an_old_work_dir(tmp_path):
  write_workdir(tmp_path, models.random(tiny_configs()["soundstorm"]))
  with pytest.raises(ValueError, match="holds a 'soundstorm' model, not a 'soundstream'"):
    models.load(str(tmp_path), family="soundstream")
  with pytest.raises(FileNotFoundError, match=r"no checkpoint of step 7 .*\(have \[3\]\)"):
    models.load(str(tmp_path), step=7)
  (tmp_path / "old").mkdir()
  with pytest.raises(FileNotFoundError, match="To convert an older work dir"):
    models.load(str(tmp_path / "old"))


def test_unknown_fields_and_named_sizes_are_refused_by_name():
  with pytest.raises(ValueError, match=r"has no field\(s\) \['depth'\]"):
    configs.from_dict(SoundStormConfig, {"depth": 3})
  with pytest.raises(ValueError, match="not a named size"):
    models.config_from_gin(SoundStormConfig, "soundstorm", "huge")


def test_trainer_records_the_config_and_refuses_another(tmp_path):
  from soundlm import trainer as trainer_lib
  from soundlm.soundstorm.synthetic import KnownProcessCodes
  from soundlm.soundstorm.task import SoundStormTask
  config = tiny_configs()["soundstorm"]
  data = KnownProcessCodes(batch_size=8, num_frames=8, num_levels=config.num_levels,
                           codebook_size=config.codebook_size,
                           semantic_vocab=config.semantic_vocab)
  trainer = trainer_lib.Trainer(SoundStormTask(config), data, str(tmp_path), num_steps=2,
                                checkpoint_every=2, async_checkpoints=False)
  trainer.run()
  loaded = models.load(str(tmp_path), family="soundstorm")
  assert loaded.config == config and loaded.step == 2
  other = SoundStormConfig(**{**configs.to_dict(config), "num_layers": 1})
  with pytest.raises(ValueError, match="records another model"):
    trainer_lib.Trainer(SoundStormTask(other), data, str(tmp_path), num_steps=4).run()


def test_a_checkpoint_written_on_eight_devices_loads_on_one(tmp_path):
  mesh = partitioning.make_mesh(2, 2, 2)
  model = models.random(tiny_configs()["w2v_bert"], seed=4, mesh=mesh, rules=TENSOR_RULES)
  assert any(len(x.sharding.device_set) == 8 for x in jax.tree_util.tree_leaves(model.variables))
  write_workdir(tmp_path, model)
  loaded = models.load(str(tmp_path))
  for leaf in jax.tree_util.tree_leaves(loaded.variables):
    assert len(leaf.sharding.device_set) == 1
  assert_same_tree(loaded.variables, model.variables)


def test_a_work_dir_named_relative_to_the_current_directory_loads(tmp_path, monkeypatch):
  model = models.random(tiny_configs()["soundstorm"], seed=1)
  write_workdir(tmp_path / "run", model)
  monkeypatch.chdir(tmp_path)
  assert_same_tree(models.load("run").variables, model.variables)
