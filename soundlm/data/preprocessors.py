"""seqio preprocessors: deterministic random crops, level selection, stage layouts.

Random choices use seqio's per-example seeds (`map_over_dataset(num_seeds=1)`),
which follow from the seed given to `get_dataset`, so a pipeline is a pure
function of (seed, host, epoch)."""
import numpy as np

from soundlm.io import tf_env


def _random_start(length, crop, seed):
  """A start in [0, max(length - crop, 0)], uniform, from a stateless seed."""
  tf = tf_env.tf()
  return tf.random.stateless_uniform([], seed, 0, tf.maximum(length - crop, 0) + 1,
                                     dtype=tf.int32)


SHORT_CLIPS = ("error", "pad")


def check_short_clips(short_clips: str) -> str:
  if short_clips not in SHORT_CLIPS:
    raise ValueError(f"short_clips: expected one of {SHORT_CLIPS}, got {short_clips!r}")
  return short_clips


def crop_waveform(ds, sequence_length, *, short_clips: str = "error"):
  """{'wav': [N], 'id'} -> a random window of sequence_length['wav'] samples.

  A clip shorter than the window stops the pipeline with an error naming it
  (short_clips='error'), or is kept whole (short_clips='pad') and padded with
  silence by the feature converter: no mask marks that silence."""
  check_short_clips(short_clips)
  seqio = tf_env.seqio()
  tf = tf_env.tf()
  crop = sequence_length["wav"]

  def fn(ex, seed):
    wav = ex["wav"]
    length = tf.shape(wav)[0]
    checks = []
    if short_clips == "error":
      message = tf.strings.join([
          "clip ", ex["id"], ": ", tf.strings.as_string(length), " samples, shorter than the "
          f"crop of {crop} samples; use clips at least as long as the crop (folder corpora: "
          "folder_options min_seconds and on_error=skip) or set short_clips=pad"])
      checks.append(tf.debugging.Assert(length >= crop, [message]))
    with tf.control_dependencies(checks):
      start = _random_start(length, crop, seed)
      return {"wav": wav[start:start + crop]}
  return seqio.map_over_dataset(fn, num_seeds=1)(ds)


def crop_aligned_tokens(ds, *, semantic_frames: int, frames_per_semantic: int,
                        num_levels: int):
  """A random window of `semantic_frames` semantic tokens and the codes of the same
  time span (`frames_per_semantic` codec frames per token), levels [0, num_levels).

  num_levels=0 drops the codes (stage 1)."""
  seqio = tf_env.seqio()

  def fn(ex, seed):
    start = _random_start(tf_env.tf().shape(ex["semantic"])[0], semantic_frames, seed)
    out = {"semantic": ex["semantic"][start:start + semantic_frames]}
    if num_levels:
      a = start * frames_per_semantic
      out["codes"] = ex["codes"][a:a + semantic_frames * frames_per_semantic, :num_levels]
    return out
  return seqio.map_over_dataset(fn, num_seeds=1)(ds)


def crop_codes(ds, *, frames: int, num_levels: int):
  """A random window of `frames` codec frames, levels [0, num_levels) (stage 3)."""
  seqio = tf_env.seqio()

  def fn(ex, seed):
    start = _random_start(tf_env.tf().shape(ex["codes"])[0], frames, seed)
    return {"codes": ex["codes"][start:start + frames, :num_levels]}
  return seqio.map_over_dataset(fn, num_seeds=1)(ds)


def layout_sequence(ds, *, layout):
  """Cropped tokens -> {'tokens': the stage's model sequence}, flattened by the
  AudioLM layout functions (`soundlm.audiolm.layouts`) through numpy."""
  tf = tf_env.tf()

  def to_sequence(*arrays):
    if layout.stage == "semantic":
      return layout.to_sequence(semantic=arrays[0]).astype(np.int32)
    if layout.stage == "coarse":
      return layout.to_sequence(semantic=arrays[0], codes=arrays[1]).astype(np.int32)
    return layout.to_sequence(codes=arrays[0]).astype(np.int32)

  keys = {"semantic": ["semantic"], "coarse": ["semantic", "codes"], "fine": ["codes"]}
  keys = keys[layout.stage]

  def fn(ex):
    tokens = tf.numpy_function(to_sequence, [ex[k] for k in keys], tf.int32, stateful=False)
    tokens.set_shape([None])
    return {"tokens": tokens}
  return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

