"""Layer stacks (`soundlm.layers.stack`) in SoundStorm and the AudioLM decoder:
the looped layout is the default, the scanned one computes the same function
(KV-cached decoding on a mesh included), remat changes no result, the layouts
convert into each other, and work dirs recorded before the settings resume."""
import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from soundlm import configs
from soundlm import models
from soundlm import partitioning
from soundlm import trainer as trainer_lib
from soundlm.audiolm.decoding import Decoder
from soundlm.audiolm.layouts import Layout
from soundlm.audiolm.model import DecoderLM, ModelConfig
from soundlm.layers import stack
from soundlm.soundstorm.model import SoundStormConfig, SoundStormModel
from soundlm.soundstorm.task import SoundStormTask

CONFIG = models.config_from_gin(SoundStormConfig, "soundstorm", "tiny")


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(0)
  semantic = jnp.asarray(rng.integers(0, CONFIG.semantic_vocab, (2, 8)), jnp.int32)
  codes = jnp.asarray(rng.integers(0, CONFIG.codebook_size, (2, 16, CONFIG.num_levels)),
                      jnp.int32)
  mask = jnp.ones((2, 16), bool).at[1, 12:].set(False)
  return semantic, codes, mask


@pytest.fixture(scope="module")
def looped(inputs):
  semantic, codes, _ = inputs
  model = SoundStormModel(CONFIG)
  init = jax.jit(lambda rng: partitioning.unbox(model.init(rng, semantic, codes, level=0)))
  return model, init(jax.random.key(0))


def test_looped_layout_is_the_default(looped):
  assert not CONFIG.scan_layers and CONFIG.remat_policy == "none"
  _, variables = looped
  assert {f"block_{i}" for i in range(CONFIG.num_layers)} <= set(variables["params"])
  assert stack.SCANNED not in variables["params"]


def loss_and_grads(model, variables, inputs):
  semantic, codes, mask = inputs

  def loss(variables):
    logits = model.apply(variables, semantic, codes, level=1, padding_mask=mask)
    return jnp.mean(jax.nn.log_softmax(logits)[..., 0])
  return jax.jit(jax.value_and_grad(loss))(variables)


@pytest.fixture(scope="module")
def reference(looped, inputs):
  return loss_and_grads(*looped, inputs)


@pytest.mark.parametrize("scan, remat", [(True, "full"), (False, "dots")])
def test_scan_and_remat_compute_the_same(looped, inputs, reference, scan, remat):
  _, variables = looped
  other = SoundStormModel(dataclasses.replace(CONFIG, scan_layers=scan, remat_policy=remat))
  params = stack.to_scanned(variables["params"], CONFIG.num_layers) if scan else (
      variables["params"])
  loss, grads = reference
  other_loss, other_grads = loss_and_grads(other, {"params": params}, inputs)
  assert other_loss == pytest.approx(float(loss), abs=1e-5)
  if scan:
    other_grads = {"params": stack.to_looped(other_grads["params"], CONFIG.num_layers)}
  for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(other_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_scanned_init_has_the_converted_layout(looped, inputs):
  semantic, codes, _ = inputs
  _, variables = looped
  scanned = SoundStormModel(dataclasses.replace(CONFIG, scan_layers=True))
  abstract = jax.eval_shape(scanned.init, jax.random.key(0), semantic, codes, level=0)
  converted = stack.to_scanned(variables["params"], CONFIG.num_layers)
  shapes = lambda tree: jax.tree_util.tree_map(lambda x: x.shape, tree)  # noqa: E731
  assert shapes(partitioning.unbox(abstract)["params"]) == shapes(converted)
  # The layer axis is named, and no partitioning rule splits it.
  spec = nn.get_partition_spec(abstract)["params"][stack.SCANNED]["block"]
  leading = {s[0] for s in jax.tree_util.tree_leaves(
      spec, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)) if len(s)}
  assert leading == {stack.LAYER_AXIS}
  rules = partitioning.logical_axis_rules()
  assert stack.LAYER_AXIS not in dict(rules)


def test_layouts_round_trip(looped):
  params = looped[1]["params"]
  back = stack.to_looped(stack.to_scanned(params, CONFIG.num_layers), CONFIG.num_layers)
  assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(params)
  for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(params)):
    np.testing.assert_array_equal(a, b)


def test_bad_settings_are_refused(looped):
  with pytest.raises(ValueError, match="remat policy must be one of"):
    dataclasses.replace(CONFIG, remat_policy="some")
  params = looped[1]["params"]
  with pytest.raises(ValueError, match="not a looped stack of 3 layers"):
    stack.to_scanned(params, 3)
  with pytest.raises(ValueError, match="not a scanned stack"):
    stack.to_looped(params, CONFIG.num_layers)
  with pytest.raises(ValueError, match="holds \\[2\\] layers, expected 3"):
    stack.to_looped(stack.to_scanned(params, 2), 3)


def test_work_dir_recorded_before_the_stack_settings_is_resumed(tmp_path):
  configs.write(str(tmp_path), CONFIG)
  path = tmp_path / configs.MODEL_FILE
  record = path.read_text()
  for field in ("scan_layers", "remat_policy"):
    assert field in record
  # model.json as written before the fields existed: they take their defaults.
  older = json.loads(record)
  values = next(v for v in older.values() if isinstance(v, dict) and "scan_layers" in v)
  del values["scan_layers"], values["remat_policy"]
  path.write_text(json.dumps(older))
  trainer = trainer_lib.Trainer(SoundStormTask(CONFIG), None, str(tmp_path),
                                async_checkpoints=False)
  try:
    trainer._record_model_config()  # accepted: the same model
    scanned = trainer_lib.Trainer(
        SoundStormTask(dataclasses.replace(CONFIG, scan_layers=True)), None, str(tmp_path),
        async_checkpoints=False)
    with pytest.raises(ValueError, match="records another model"):
      scanned._record_model_config()  # another parameter layout is refused
    scanned.checkpointer.close()
  finally:
    trainer.checkpointer.close()


def test_scanned_audiolm_stage_decodes_the_same_tokens_on_a_mesh():
  config = models.config_from_gin(ModelConfig, "audiolm", "tiny",
                                  selector="soundlm.audiolm.ModelConfig")
  layout = models.config_from_gin(Layout, "audiolm", "tiny", scope="coarse",
                                  selector="soundlm.audiolm.Layout")
  looped = DecoderLM(config, layout.padded_vocab_size)
  params = jax.jit(lambda rng: partitioning.unbox(
      looped.init(rng, jnp.zeros((1, 1), jnp.int32)))["params"])(jax.random.key(0))
  scanned = DecoderLM(dataclasses.replace(config, scan_layers=True, remat_policy="full"),
                      layout.padded_vocab_size)
  prompt = np.random.default_rng(0).integers(0, layout.semantic_vocab, (4, 10))
  # Batch over 'data', heads over 'tensor': the scanned cache keeps its layer axis whole.
  partitioner = partitioning.Partitioner.of(
      partitioning.make_mesh(2, 1, 2, devices=jax.devices()[:4]),
      [(name, axes) for name, axes in partitioning.DATA_PARALLEL_RULES if name != "heads"]
      + [("heads", "tensor")])
  tokens = Decoder(looped, layout).generate(params, prompt, 0, num_steps=12)
  scanned_tokens = Decoder(scanned, layout, partitioner).generate(
      stack.to_scanned(params, config.num_layers), prompt, 0, num_steps=12)
  np.testing.assert_array_equal(scanned_tokens, tokens)
