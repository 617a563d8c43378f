"""Imports every module that registers gin configurables, so that gin files
can name them. Data modules import TensorFlow lazily, so this stays TF-free."""
import importlib

MODULES = (
    "soundlm.partitioning",
    "soundlm.trainer",
    "soundlm.toy_lm",
)


def import_all():
  for name in MODULES:
    importlib.import_module(name)
