"""SoundStreamConfig.zero_init_residuals: every residual unit starts as the
identity, with the same parameter names and shapes as the default."""
import jax
import jax.numpy as jnp
import numpy as np

from soundlm.codec.model import ResidualUnit, SoundStream, SoundStreamConfig

CONFIG = SoundStreamConfig(channels=4, embedding_dim=8, strides=(2, 4), num_levels=2,
                           codebook_size=8)


def test_zero_initialised_residual_unit_is_the_identity():
  x = jax.random.normal(jax.random.key(0), (2, 16, 4))
  for zero_init in (True, False):
    unit = ResidualUnit(channels=4, dilation=3, zero_init=zero_init)
    y = unit.apply(unit.init(jax.random.key(1), x), x)
    assert np.array_equal(np.asarray(y), np.asarray(x)) == zero_init


def test_same_parameters_as_the_default_initialisation():
  wav = jnp.zeros((1, 64))
  shapes = lambda config: jax.tree.map(  # noqa: E731
      jnp.shape, SoundStream(config).init(jax.random.key(0), wav)["params"])
  zero = CONFIG.__class__(**{**CONFIG.__dict__, "zero_init_residuals": True})
  assert shapes(zero) == shapes(CONFIG)
