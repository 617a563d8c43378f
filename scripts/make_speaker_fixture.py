"""Writes tests/fixtures/speaker/: Resemblyzer's voice-encoder embeddings of a
few clips, and two small torch checkpoints, for soundlm.evaluation.speaker.

Needs PyTorch and Resemblyzer (only here, never at soundlm's run time):

    python -m venv /tmp/fixture-venv
    /tmp/fixture-venv/bin/pip install torch transformers resemblyzer==0.1.4 "setuptools<81"
    /tmp/fixture-venv/bin/python scripts/make_speaker_fixture.py

(webrtcvad, which Resemblyzer imports, needs setuptools' pkg_resources.)
`reference.npz` holds:

  wav<i>            int16 samples at 16 kHz (float audio is wav / 32768): two
                    built-in corpus clips of different speakers (one cut to
                    2.5 s) and a quiet synthetic 1 s signal, which fills less
                    than one partial and is raised to -30 dBFS
  embed<i>          VoiceEncoder.embed_utterance of the volume-normalised clip [256]
  partials<i>       its partial embeddings [P, 256]
  mel_filters       librosa's mel basis the encoder uses [40, 201]
  mel0              audio.wav_to_mel_spectrogram of clip 0 as embed_utterance pads it
  tensors           the arrays that tensors_zip.pt and tensors_legacy.pt hold

Resemblyzer's preprocess_wav also trims silences with webrtcvad, which soundlm
does not port; the script prints how much that changes each embedding.
"""
import importlib.metadata
import json
import os
import sys

import librosa
import numpy as np
import soundfile
import torch
from resemblyzer import VoiceEncoder, audio, preprocess_wav

sys.path.insert(0, os.path.dirname(__file__))
from make_w2v_bert_fixture import fixture_dir, waveform  # noqa: E402

CORPUS = os.path.join(os.path.dirname(__file__), "..", "soundlm", "io", "corpus", "builtin",
                      "speech", "validation")


def clips() -> list[np.ndarray]:
  """int16 clips: a cut corpus clip, a whole one of another speaker, a quiet tone."""
  cut, _ = soundfile.read(os.path.join(CORPUS, "flite_slt-p009.flac"), dtype="int16")
  whole, _ = soundfile.read(os.path.join(CORPUS, "espeak_us_f2-p029.flac"), dtype="int16")
  quiet = np.round(0.05 * waveform(1.0) * 32768).astype(np.int16)
  return [cut[:40_000], whole, quiet]


def checkpoint_tensors() -> dict:
  """Tensors with offsets, strides, several dtypes and a Parameter."""
  grid = torch.arange(12, dtype=torch.float32).reshape(3, 4)
  return {"transposed": grid.t(), "nested": [torch.arange(5)[2:], {"half": grid[1].half()}],
          "parameter": torch.nn.Parameter(torch.linspace(-1, 1, 3, dtype=torch.float64)),
          "step": 7}


def flat_arrays(tensors: dict) -> dict:
  return {"transposed": tensors["transposed"].numpy(),
          "nested_slice": tensors["nested"][0].numpy(),
          "nested_half": tensors["nested"][1]["half"].numpy(),
          "parameter": tensors["parameter"].detach().numpy()}


def main():
  out = fixture_dir("speaker", __doc__.splitlines()[0])
  os.makedirs(out, exist_ok=True)
  encoder = VoiceEncoder(device="cpu", verbose=False)
  arrays = {"mel_filters": librosa.filters.mel(sr=16_000, n_fft=400, n_mels=40)}
  for i, pcm in enumerate(clips()):
    wav = audio.normalize_volume(pcm.astype(np.float32) / 32768, -30, increase_only=True)
    embed, partials, slices = encoder.embed_utterance(wav, return_partials=True)
    arrays |= {f"wav{i}": pcm, f"embed{i}": embed, f"partials{i}": partials}
    if i == 0:
      padded = np.pad(wav, (0, max(0, slices[-1].stop - wav.size)))
      arrays["mel0"] = audio.wav_to_mel_spectrogram(padded)
    trimmed = encoder.embed_utterance(preprocess_wav(pcm.astype(np.float32) / 32768))
    print(f"clip {i}: {pcm.size / 16_000:.2f} s, {len(partials)} partials, cosine to the "
          f"embedding after webrtcvad trimming {float(embed @ trimmed):.4f}")
  tensors = checkpoint_tensors()
  torch.save(tensors, os.path.join(out, "tensors_zip.pt"))
  torch.save(tensors, os.path.join(out, "tensors_legacy.pt"),
             _use_new_zipfile_serialization=False)
  arrays |= {f"tensors_{k}": v for k, v in flat_arrays(tensors).items()}
  np.savez_compressed(os.path.join(out, "reference.npz"), **arrays)
  with open(os.path.join(out, "versions.json"), "w") as f:
    json.dump({name: importlib.metadata.version(name)
               for name in ("torch", "librosa", "resemblyzer", "numpy")}, f, indent=1)
  print("wrote", os.path.abspath(out), {k: v.shape for k, v in arrays.items()})


if __name__ == "__main__":
  main()
