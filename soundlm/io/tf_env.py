"""Lazy imports of TensorFlow, TFDS and seqio, with accelerators hidden from TF.

TensorFlow only feeds data on host CPUs; hiding GPUs (and TPUs) keeps it from
taking device memory that JAX needs. Call these inside functions, never at
module level, so that `soundlm.data` modules import without TensorFlow."""
import functools
import os


@functools.cache
def tf():
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import tensorflow as tf_module

  for kind in ("GPU", "TPU"):
    try:
      tf_module.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):  # already initialised, or no such device type
      pass
  return tf_module


@functools.cache
def tfds():
  tf()
  import tensorflow_datasets as tfds_module

  tfds_module.disable_progress_bar()
  return tfds_module


@functools.cache
def seqio():
  tf()
  import seqio as seqio_module

  return seqio_module
