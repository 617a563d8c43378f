"""The built-in speech and piano corpus, readable with numpy and soundfile.

    from soundlm.io import corpus
    clips = corpus.load_builtin("train", kind="speech")
    clips[0].waveform, clips[0].sample_rate, clips[0].speaker, clips[0].text

The committed files are the `small` size of `python -m soundlm.io.corpus.make`
(multi-speaker synthetic English speech and rendered piano, 16 kHz mono)."""
import dataclasses
import json
import os
import pathlib

import numpy as np

from soundlm.io import audio

KINDS = ("speech", "piano")
SPLITS = ("train", "validation")


@dataclasses.dataclass(frozen=True)
class Clip:
  id: str
  waveform: np.ndarray  # float32 [N]
  sample_rate: int
  speaker: str
  text: str
  meta: dict  # the clip's JSON record (source, duration, ...)
  path: str


def builtin_root() -> pathlib.Path:
  """Folder holding `<kind>/<split>/<clip>.{flac,json}` of the shipped corpus."""
  return pathlib.Path(__file__).parent / "builtin"


def clip_paths(split: str = "train", kind: str = "speech", root=None) -> list[str]:
  """Sorted audio paths of one split of one kind."""
  if kind not in KINDS:
    raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
  if split not in SPLITS:
    raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
  folder = pathlib.Path(root or builtin_root()) / kind / split
  if not folder.is_dir():
    raise FileNotFoundError(f"no corpus folder {folder}; run python -m soundlm.io.corpus.make")
  return sorted(str(p) for p in folder.glob("*.flac"))


def load_builtin(split: str = "train", kind: str = "speech", *, root=None,
                 max_clips: int | None = None) -> list[Clip]:
  """Clips of the built-in corpus (or of a larger one made under `root`)."""
  clips = []
  for path in clip_paths(split, kind, root)[:max_clips]:
    with open(path[: -len(".flac")] + ".json") as f:
      meta = json.load(f)
    wav, rate = audio.read_audio(path, meta["sample_rate"])
    clips.append(Clip(meta["id"], wav, rate, meta["speaker"], meta["text"], meta, path))
  return clips


def builtin_size_bytes() -> int:
  return sum(p.stat().st_size for p in builtin_root().rglob("*") if p.is_file())


__all__ = ["Clip", "KINDS", "SPLITS", "builtin_root", "clip_paths", "load_builtin",
           "builtin_size_bytes"]
