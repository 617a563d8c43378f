"""Front ends turning log-mel features into Conformer-width frames.

Each returns (projected [B, T, width], unprojected [B, T, F]); the
unprojected features are what the pre-training quantizer discretises.
"""
import flax.linen as nn
import jax.numpy as jnp

from soundlm.layers import initializers


class ConvSubsampling(nn.Module):
  """w2v-BERT paper front end: two 3x3 stride-2 2-D convolutions (4x in time and
  frequency), ReLU, flatten, linear. [B, 4T, M] -> [B, T, width].

  `padding_mask` (bool [B, T], True on real frames) zeroes each convolution's
  input past a clip's frames, so that they see the zeros a clip alone is padded
  with, whatever follows it in the batch."""
  channels: int
  width: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, features, padding_mask=None):
    if features.shape[1] % 4:
      raise ValueError(f"features: expected a multiple of 4 frames, got {features.shape[1]}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = features[..., None]
    for i in range(2):
      if padding_mask is not None:
        rate = h.shape[1] // padding_mask.shape[1]
        h = h * jnp.repeat(padding_mask, rate, axis=1)[:, :, None, None].astype(h.dtype)
      h = nn.Conv(self.channels, (3, 3), strides=(2, 2), padding="SAME",
                  kernel_init=initializers.kernel((None, None, "conv_in", "conv_out")),
                  bias_init=initializers.zeros(("conv_out",)), name=f"conv_{i}", **kw)(h)
      h = nn.relu(h)
    batch, frames, bins, channels = h.shape
    flat = h.reshape(batch, frames, bins * channels)
    projected = nn.Dense(self.width, kernel_init=initializers.kernel((None, "embed")),
                         bias_init=initializers.zeros(("embed",)), name="projection",
                         **kw)(flat)
    return projected, flat


class StackedProjection(nn.Module):
  """w2v-BERT 2.0 front end (Hugging Face `Wav2Vec2BertFeatureProjection`):
  LayerNorm over stacked fbank frames, then linear. [B, T, F] -> [B, T, width]."""
  width: int
  epsilon: float = 1e-5
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, features):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    normed = nn.LayerNorm(epsilon=self.epsilon, scale_init=initializers.ones((None,)),
                          bias_init=initializers.zeros((None,)), name="layer_norm",
                          **kw)(features)
    projected = nn.Dense(self.width, kernel_init=initializers.kernel((None, "embed")),
                         bias_init=initializers.zeros(("embed",)), name="projection",
                         **kw)(normed)
    return projected, normed
