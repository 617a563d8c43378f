"""Shared layers: attention against a reference, KV cache, positions, blocks."""
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from soundlm.layers.attention import MultiHeadAttention
from soundlm.layers.conformer import ConformerBlock
from soundlm.layers.feedforward import FeedForward
from soundlm.layers.position import RelativePositionBias, apply_rotary, relative_position_bucket
from soundlm.layers.transformer import TransformerBlock


def _inputs(batch=2, length=12, features=16, seed=0):
  return jax.random.normal(jax.random.key(seed), (batch, length, features))


def test_attention_matches_reference_softmax():
  x = _inputs()
  layer = MultiHeadAttention(num_heads=4, head_dim=8, causal=True)
  variables = layer.init(jax.random.key(1), x)
  bias = jax.random.normal(jax.random.key(2), (1, 4, 12, 12))
  padding = jnp.arange(12)[None, :] < jnp.array([[12], [9]])
  out = layer.apply(variables, x, bias=bias, padding_mask=padding)

  p = nn.meta.unbox(variables)["params"]
  q = jnp.einsum("bte,ehd->bthd", x, p["query"])
  k = jnp.einsum("bte,ehd->bthd", x, p["key"])
  v = jnp.einsum("bte,ehd->bthd", x, p["value"])
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(8) + bias
  allowed = jnp.tril(jnp.ones((12, 12), bool))[None, None] & padding[:, None, None, :]
  weights = jax.nn.softmax(jnp.where(allowed, logits, -1e30), axis=-1)
  expected = jnp.einsum("bhqk,bkhd,hde->bqe", weights, v, p["out"])
  np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("position", ["relative_key", "rope_on_input"])
def test_w2v_bert_2_attention_matches_reference(position):
  """Biased projections with Shaw relative keys, or with the input rotated before
  the query/key projections, as Hugging Face w2v-BERT 2.0 computes them."""
  x = _inputs(length=10)
  layer = MultiHeadAttention(2, 8, position=position, use_bias=True, left_max_distance=3,
                             right_max_distance=2)
  params = nn.meta.unbox(layer.init(jax.random.key(1), x))["params"]
  leaves, tree = jax.tree_util.tree_flatten(params)  # non-zero biases too
  params = jax.tree_util.tree_unflatten(tree, [
      leaf + 0.1 * jax.random.normal(jax.random.key(i), leaf.shape)
      for i, leaf in enumerate(leaves)])
  out = layer.apply({"params": params}, x)

  p = params
  query_key_input = x
  if position == "rope_on_input":
    query_key_input = apply_rotary(x.reshape(2, 10, 2, 8), jnp.arange(10)[None]).reshape(
        x.shape)
  q = jnp.einsum("bte,ehd->bthd", query_key_input, p["query"]) + p["query_bias"]
  k = jnp.einsum("bte,ehd->bthd", query_key_input, p["key"]) + p["key_bias"]
  v = jnp.einsum("bte,ehd->bthd", x, p["value"]) + p["value_bias"]
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k)
  if position == "relative_key":
    positions = np.arange(10)
    distance = np.clip(positions[None, :] - positions[:, None], -3, 2) + 3
    embedding = p["relative_key"]["embedding"][distance]  # [q, k, d]
    logits = logits + jnp.einsum("bqhd,qkd->bhqk", q, embedding)
  weights = jax.nn.softmax(logits / np.sqrt(8), axis=-1)
  expected = jnp.einsum("bhqk,bkhd,hde->bqe", weights, v, p["out"]) + p["out_bias"]
  np.testing.assert_allclose(out, expected, atol=1e-5)
  with pytest.raises(ValueError, match="no KV-cache decoding"):
    layer.init(jax.random.key(1), x, decode=True)


def test_conformer_defaults_keep_their_parameter_tree():
  """SoundStorm and w2v-BERT 'conformer' checkpoints rely on these names and shapes."""
  variables = jax.eval_shape(ConformerBlock(2, 8, 32).init, jax.random.key(0), _inputs())
  shapes = {"/".join(path): leaf.shape for path, leaf in
            flax.traverse_util.flatten_dict(nn.meta.unbox(variables)["params"]).items()}
  norms = ("ff_start_norm", "pre_attention_norm", "convolution/norm",
           "convolution/depthwise_norm", "ff_end_norm", "final_norm")
  expected = {f"{norm}/{leaf}": (16,) for norm in norms for leaf in ("scale", "bias")}
  expected.update({
      "attention/query": (16, 2, 8), "attention/key": (16, 2, 8),
      "attention/value": (16, 2, 8), "attention/out": (2, 8, 16),
      "convolution/pointwise_in/kernel": (16, 32), "convolution/pointwise_in/bias": (32,),
      "convolution/depthwise/kernel": (5, 1, 16), "convolution/depthwise/bias": (16,),
      "convolution/pointwise_out/kernel": (16, 16), "convolution/pointwise_out/bias": (16,),
      "ff_start/wi/kernel": (16, 32), "ff_start/wo/kernel": (32, 16),
      "ff_end/wi/kernel": (16, 32), "ff_end/wo/kernel": (32, 16)})
  assert shapes == expected


@pytest.mark.parametrize("position", ["none", "rope"])
@pytest.mark.parametrize("chunk", [1, 3])
def test_kv_cache_decode_equals_full_forward(position, chunk):
  x = _inputs()
  block = TransformerBlock(num_heads=4, head_dim=4, mlp_dim=32, causal=True,
                           position=position)
  variables = block.init(jax.random.key(1), x)
  bias_layer = RelativePositionBias(num_heads=4, bidirectional=False)
  bias_vars = bias_layer.init(jax.random.key(3), 12, 12)
  full = block.apply(variables, x, bias=bias_layer.apply(bias_vars, 12, 12))

  cache = block.init(jax.random.key(1), x, decode=True)["cache"]
  outputs = []
  for start in range(0, 12, chunk):
    bias = bias_layer.apply(bias_vars, chunk, 12, q_offset=start)
    out, mutated = block.apply({**variables, "cache": cache}, x[:, start:start + chunk],
                               bias=bias, decode=True, mutable=["cache"])
    cache = mutated["cache"]
    outputs.append(out)
  np.testing.assert_allclose(jnp.concatenate(outputs, axis=1), full, atol=1e-5)


def test_causal_block_ignores_the_future():
  x = _inputs()
  block = TransformerBlock(num_heads=2, head_dim=8, mlp_dim=32, causal=True, position="rope")
  variables = block.init(jax.random.key(0), x)
  changed = x.at[:, 7:].set(jax.random.normal(jax.random.key(9), (2, 5, 16)))
  a, b = block.apply(variables, x), block.apply(variables, changed)
  np.testing.assert_allclose(a[:, :7], b[:, :7], atol=1e-6)
  assert not np.allclose(a[:, 7:], b[:, 7:])


def test_relative_position_buckets_follow_t5():
  rel = jnp.array([0, -1, 1, -7, -8, -200, 200])
  bidirectional = relative_position_bucket(rel, True, 32, 128)
  np.testing.assert_array_equal(bidirectional[:4], [0, 1, 17, 7])
  assert 8 <= int(bidirectional[4]) < 16 and int(bidirectional[5]) == 15
  assert int(bidirectional[6]) == 31
  causal = relative_position_bucket(rel, False, 32, 128)
  assert int(causal[2]) == 0 and int(causal[1]) == 1 and int(causal[5]) == 31


def test_rotary_scores_depend_only_on_offset():
  q = jax.random.normal(jax.random.key(0), (1, 1, 1, 8))
  k = jax.random.normal(jax.random.key(1), (1, 1, 1, 8))
  score = lambda m, n: jnp.sum(apply_rotary(q, jnp.array([[m]])) *  # noqa: E731
                               apply_rotary(k, jnp.array([[n]])))
  np.testing.assert_allclose(score(5, 2), score(13, 10), rtol=1e-5)
  assert not np.isclose(score(5, 2), score(5, 4))


def test_conformer_padding_does_not_leak_into_real_frames():
  x = _inputs(length=10)
  block = ConformerBlock(num_heads=2, head_dim=8, mlp_dim=32, conv_kernel_size=5)
  padding = jnp.arange(10)[None, :] < 7
  variables = block.init(jax.random.key(0), x, padding_mask=padding)
  garbage = x.at[:, 7:].set(100.0)
  a = block.apply(variables, x, padding_mask=padding)
  b = block.apply(variables, garbage, padding_mask=padding)
  np.testing.assert_allclose(a[:, :7], b[:, :7], atol=1e-5)
  assert a.shape == x.shape


def test_parameters_carry_logical_names_and_dtypes_are_separate():
  x = _inputs().astype(jnp.bfloat16)
  for layer in (ConformerBlock(2, 8, 32, dtype=jnp.bfloat16),
                TransformerBlock(2, 8, 32, gated_mlp=True, dtype=jnp.bfloat16),
                FeedForward(32, gated=True, dtype=jnp.bfloat16)):
    variables = layer.init(jax.random.key(0), x)
    leaves = jax.tree_util.tree_leaves(
        variables, is_leaf=lambda v: isinstance(v, nn.Partitioned))
    assert leaves and all(isinstance(v, nn.Partitioned) for v in leaves)
    assert all(v.value.dtype == jnp.float32 for v in leaves)
    assert layer.apply(variables, x).dtype == jnp.bfloat16


def test_bad_position_and_activation_names_are_rejected():
  x = _inputs()
  with pytest.raises(ValueError, match="position"):
    MultiHeadAttention(2, 8, position="alibi").init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="activation"):
    FeedForward(8, activation="tanhh").init(jax.random.key(0), x)
