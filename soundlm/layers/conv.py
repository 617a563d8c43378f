"""Causal 1-D convolutions that can also run chunk by chunk.

Causal means padded on the past only, so output frame t never depends on
input after the frame it covers. With `stream=True` a module keeps the inputs
it still needs from earlier chunks in the flax 'cache' collection (zeros at the
start, like the zero padding of a full call), so feeding a signal in chunks
gives the outputs of one full call. Start a stream with `zero_stream_state`,
then call `apply(..., stream=True, mutable=['cache'])` per chunk.

`padding='reflect'` (EnCodec's) pads the start with the mirror image of the
first samples instead of zeros; a stream then mirrors its first chunk, which
must be longer than the padding for chunked and full calls to agree.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from soundlm.layers import initializers

_DIMENSIONS = ("NWC", "WIO", "NWC")


def _check_length(x, multiple: int, what: str):
  if x.ndim != 3:
    raise ValueError(f"x must be [batch, length, channels], got shape {x.shape}")
  if x.shape[1] % multiple:
    raise ValueError(
        f"x length {x.shape[1]} must be a multiple of the {what} {multiple}")


def _start_padding(x, history: int, reflect: int):
  """The `history` frames before the start: zeros, the last `reflect` of them
  the mirror image of x[1..reflect] (x zero-extended when it is shorter, as
  EnCodec pads)."""
  zeros = jnp.zeros((x.shape[0], history - reflect, x.shape[2]), x.dtype)
  if reflect == 0:
    return zeros
  extended = jnp.pad(x, ((0, 0), (0, max(0, reflect + 1 - x.shape[1])), (0, 0)))
  return jnp.concatenate([zeros, extended[:, reflect:0:-1]], axis=1)


def _with_history(module: nn.Module, x, history: int, stream: bool, reflect: int = 0):
  """Prepends `history` past frames: the start padding for a full call (and a
  reflecting stream's first chunk), the carried state when streaming."""
  if history == 0:
    return x
  start = _start_padding(x, history, reflect)
  if not stream:
    return jnp.concatenate([start, x], axis=1)
  state = module.variable(
      "cache", "state", jnp.zeros, (x.shape[0], history, x.shape[2]), x.dtype)
  past = state.value.astype(x.dtype)
  if reflect:
    started = module.variable("cache", "started", jnp.zeros, (), jnp.bool_)
    past = jnp.where(started.value, past, start)
    started.value = jnp.ones((), jnp.bool_)
  joined = jnp.concatenate([past, x], axis=1)
  state.value = joined[:, -history:]
  return joined


class CausalConv1D(nn.Module):
  """[B, T, C] -> [B, T // stride, features]; output t sees inputs up to t*stride + stride - 1.

  A strided convolution runs as a stride-1 convolution over frames of
  `stride` samples (space-to-depth), so chunked and full calls add the same
  products in the same order and agree bit for bit.
  """
  features: int
  kernel_size: int
  stride: int = 1
  dilation: int = 1
  groups: int = 1
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  axes: tuple = ("conv_in", "conv_out")  # logical names of the kernel's channel dims
  padding: str = "zeros"  # or 'reflect': the start mirrored (see the module docstring)
  kernel_init: nn.initializers.Initializer = initializers.DEFAULT_KERNEL_INIT

  @property
  def history(self) -> int:
    """Past input samples each output needs beyond its own stride window."""
    return (self.kernel_size - 1) * self.dilation + 1 - self.stride

  @property
  def _reflect(self) -> int:
    return self.history if self.padding == "reflect" else 0

  @nn.compact
  def __call__(self, x, *, stream: bool = False):
    if self.history < 0:
      raise ValueError(
          f"kernel_size*dilation must cover the stride: kernel_size={self.kernel_size}, "
          f"dilation={self.dilation}, stride={self.stride}")
    if self.padding not in ("zeros", "reflect"):
      raise ValueError(f"padding must be 'zeros' or 'reflect', got {self.padding!r}")
    _check_length(x, self.stride, "stride")
    channels = x.shape[-1]
    if channels % self.groups or self.features % self.groups:
      raise ValueError(
          f"groups={self.groups} must divide input channels {channels} and features "
          f"{self.features}")
    kernel = self.param(
        "kernel", initializers.kernel((None,) + tuple(self.axes), self.kernel_init),
        (self.kernel_size, channels // self.groups, self.features), self.param_dtype)
    kernel = kernel.astype(self.dtype)
    if self.stride == 1:
      x = _with_history(self, x.astype(self.dtype), self.history, stream, self._reflect)
      y = jax.lax.conv_general_dilated(
          x, kernel, window_strides=(1,), padding="VALID", rhs_dilation=(self.dilation,),
          dimension_numbers=_DIMENSIONS, feature_group_count=self.groups)
    else:
      x, kernel = self._space_to_depth(x, kernel, stream)
      y = jax.lax.conv_general_dilated(
          x, kernel, window_strides=(1,), padding="VALID", dimension_numbers=_DIMENSIONS,
          feature_group_count=self.groups)
    if self.use_bias:
      bias = self.param("bias", initializers.zeros(tuple(self.axes[1:])), (self.features,),
                        self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y

  def _space_to_depth(self, x, kernel, stream):
    """Input as frames [B, T/s, C*s] and the kernel as taps over frames [taps, C/g*s, F]."""
    span = (self.kernel_size - 1) * self.dilation + 1
    taps = -(-self.history // self.stride) + 1
    dense = jnp.zeros((taps * self.stride,) + kernel.shape[1:], kernel.dtype)
    dense = dense.at[taps * self.stride - span::self.dilation].set(kernel)
    dense = dense.reshape(taps, self.stride, kernel.shape[1], self.features)
    dense = dense.transpose(0, 2, 1, 3).reshape(taps, -1, self.features)
    x = _with_history(self, x.astype(self.dtype), (taps - 1) * self.stride, stream,
                      self._reflect)
    batch, length, channels = x.shape
    x = x.reshape(batch, length // self.stride, self.stride, channels)
    x = x.transpose(0, 1, 3, 2).reshape(batch, length // self.stride, channels * self.stride)
    return x, dense


class CausalConvTranspose1D(nn.Module):
  """[B, T, C] -> [B, T * stride, features]: the transposed convolution cut to the causal part.

  Output sample j sums input frames i with i*stride <= j < i*stride + kernel_size.
  """
  features: int
  kernel_size: int
  stride: int
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  axes: tuple = ("conv_in", "conv_out")  # logical names of the kernel's channel dims

  @property
  def history(self) -> int:
    """Past input frames that still reach the current chunk's outputs."""
    return math.ceil(self.kernel_size / self.stride) - 1

  @nn.compact
  def __call__(self, x, *, stream: bool = False):
    if self.kernel_size < self.stride:
      raise ValueError(
          f"kernel_size={self.kernel_size} must be at least stride={self.stride}")
    _check_length(x, 1, "frame count")
    kernel = self.param(
        "kernel", initializers.kernel((None,) + tuple(self.axes)),
        (self.kernel_size, x.shape[-1], self.features), self.param_dtype)
    x = _with_history(self, x.astype(self.dtype), self.history, stream)
    # Polyphase form: output phase r of frame i is a causal convolution over
    # frames i-history..i with taps kernel[j*stride + r], j = history..0.
    taps = (self.history + 1) * self.stride
    phases = jnp.pad(kernel, ((0, taps - self.kernel_size), (0, 0), (0, 0)))
    phases = phases.reshape(self.history + 1, self.stride, x.shape[-1], self.features)
    phases = phases[::-1].transpose(0, 2, 1, 3).reshape(
        self.history + 1, x.shape[-1], self.stride * self.features)
    y = jax.lax.conv_general_dilated(
        x, phases.astype(self.dtype), window_strides=(1,), padding="VALID",
        dimension_numbers=_DIMENSIONS)
    y = y.reshape(y.shape[0], y.shape[1] * self.stride, self.features)
    if self.use_bias:
      bias = self.param("bias", initializers.zeros(tuple(self.axes[1:])), (self.features,),
                        self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


def zero_stream_state(module: nn.Module, variables, *args, **kwargs):
  """The 'cache' collection that starts a stream, shaped for a chunk like `args`.

  `kwargs` go to `module.apply` (e.g. `method=`); `stream=True` is added.
  """
  _, shapes = jax.eval_shape(
      lambda v, *a: module.apply(v, *a, stream=True, mutable=["cache"], **kwargs),
      {k: v for k, v in variables.items() if k != "cache"}, *args)
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes.get("cache", {}))
