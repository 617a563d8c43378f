"""Causal convolutions: reference values, causality, chunked == full, bad input."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from soundlm.layers.conv import CausalConv1D, CausalConvTranspose1D, zero_stream_state


def _init(module, x):
  """(variables, params as numpy arrays)."""
  variables = module.init(jax.random.key(1), x)
  return variables, jax.tree.map(np.asarray, nn.meta.unbox(variables["params"]))


def reference_conv(x, kernel, bias, stride, dilation, groups):
  """Direct sum: y[t] = sum_j x[t*stride + stride - 1 - (K-1-j)*dilation] . w[j]."""
  batch, length, channels = x.shape
  size, per_group, features = kernel.shape
  out = np.zeros((batch, length // stride, features))
  group_out = features // groups
  for t in range(length // stride):
    for j in range(size):
      i = t * stride + stride - 1 - (size - 1 - j) * dilation
      if i < 0:
        continue
      for g in range(groups):
        xs = x[:, i, g * per_group:(g + 1) * per_group]
        out[:, t, g * group_out:(g + 1) * group_out] += xs @ kernel[j, :, g * group_out:(
            g + 1) * group_out]
  return out + bias


def reference_transpose(x, kernel, bias, stride):
  batch, length, _ = x.shape
  size = kernel.shape[0]
  out = np.zeros((batch, length * stride + size, kernel.shape[2]))
  for i in range(length):
    out[:, i * stride:i * stride + size] += np.einsum("bc,kcf->bkf", x[:, i], kernel)
  return out[:, :length * stride] + bias


CONV_CASES = [  # (features, kernel, stride, dilation, groups, channels)
    (5, 7, 1, 9, 1, 3), (6, 8, 4, 1, 1, 3), (4, 6, 3, 2, 2, 4),
]


@pytest.mark.parametrize("features,kernel,stride,dilation,groups,channels", CONV_CASES)
def test_conv_matches_reference(features, kernel, stride, dilation, groups, channels):
  x = np.asarray(jax.random.normal(jax.random.key(0), (2, 12 * stride, channels)))
  module = CausalConv1D(features, kernel, stride=stride, dilation=dilation, groups=groups)
  variables, params = _init(module, x)
  got = module.apply(variables, x)
  want = reference_conv(x, params["kernel"], params["bias"], stride, dilation, groups)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel,stride", [(8, 4), (10, 4)])
def test_transpose_matches_reference(kernel, stride):
  x = np.asarray(jax.random.normal(jax.random.key(0), (2, 7, 3)))
  module = CausalConvTranspose1D(5, kernel, stride)
  variables, params = _init(module, x)
  want = reference_transpose(x, params["kernel"], params["bias"], stride)
  np.testing.assert_allclose(np.asarray(module.apply(variables, x)), want,
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("transpose", [False, True])
def test_causality(transpose):
  """Changing input frame n changes no output before the output frame containing n."""
  stride, n = 4, 9
  module = CausalConvTranspose1D(3, 8, stride) if transpose else CausalConv1D(
      3, 8, stride=stride)
  length = 16 if transpose else 16 * stride
  x = jax.random.normal(jax.random.key(0), (1, length, 2))
  variables = module.init(jax.random.key(1), x)
  y = module.apply(variables, x)
  y2 = module.apply(variables, x.at[:, n:].add(1.0))
  first_changed = n * stride if transpose else n // stride
  np.testing.assert_array_equal(np.asarray(y[:, :first_changed]),
                                np.asarray(y2[:, :first_changed]))
  assert not np.allclose(y[:, first_changed], y2[:, first_changed])


def _stream(module, variables, x, chunks):
  cache = zero_stream_state(module, variables, x[:, :chunks[0]])
  outputs, start = [], 0
  for size in chunks:
    y, updates = module.apply({**variables, "cache": cache}, x[:, start:start + size],
                              stream=True, mutable=["cache"])
    cache, start = updates.get("cache", {}), start + size
    outputs.append(y)
  return jnp.concatenate(outputs, axis=1)


@pytest.mark.parametrize("module,unit", [
    (CausalConv1D(6, 7, dilation=3), 1), (CausalConv1D(4, 6, stride=3, groups=2), 3),
    (CausalConv1D(6, 1), 1), (CausalConvTranspose1D(5, 10, 4), 1),
])
def test_chunked_equals_full(module, unit):
  x = jax.random.normal(jax.random.key(0), (2, 20 * unit, 4))
  variables = module.init(jax.random.key(1), x)
  full = module.apply(variables, x)
  for chunks in ([20], [1] * 20, [3, 5, 1, 11]):
    chunked = _stream(module, variables, x, [c * unit for c in chunks])
    # The same sums, but XLA:CPU may order them differently for another input
    # length (seen on some CPUs): equal to float32 round-off, not bit for bit.
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(full), rtol=1e-5, atol=1e-6)


def test_bad_input():
  x = jnp.zeros((1, 10, 2))
  with pytest.raises(ValueError, match="multiple of the stride 4"):
    CausalConv1D(3, 8, stride=4).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="must cover the stride"):
    CausalConv1D(3, 2, stride=5).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="must be at least stride"):
    CausalConvTranspose1D(3, 2, 4).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match=r"\[batch, length, channels\]"):
    CausalConv1D(3, 3).init(jax.random.key(0), jnp.zeros((10, 2)))
  with pytest.raises(ValueError, match="groups=3"):
    CausalConv1D(3, 3, groups=3).init(jax.random.key(0), x)
