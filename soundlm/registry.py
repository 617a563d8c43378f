"""Imports every module that registers gin configurables, so that gin files
can name them. Data modules import TensorFlow lazily, so this stays TF-free."""
import importlib

MODULES = (
    "soundlm.partitioning",
    "soundlm.trainer",
    "soundlm.toy_lm",
    "soundlm.codec.data",
    "soundlm.codec.discriminators",
    "soundlm.codec.model",
    "soundlm.codec.task",
    "soundlm.semantic.config",
    "soundlm.semantic.data",
    "soundlm.semantic.task",
    "soundlm.audiolm.decoding",
    "soundlm.audiolm.layouts",
    "soundlm.audiolm.model",
    "soundlm.audiolm.synthetic",
    "soundlm.audiolm.tasks",
    "soundlm.soundstorm.model",
    "soundlm.soundstorm.synthetic",
    "soundlm.soundstorm.task",
    "soundlm.data.pipeline",
    "soundlm.data.tasks",
    "soundlm.generate",
)


def import_all():
  for name in MODULES:
    importlib.import_module(name)
