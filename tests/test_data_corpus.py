"""Built-in corpus, audio reading and MIDI writing: numpy only, no TensorFlow."""
import json
import os
import shutil
import struct

import numpy as np
import pytest
import soundfile as sf

from soundlm.io import audio, corpus
from soundlm.io.corpus import make, midi


@pytest.fixture(scope="module")
def speech():
  return corpus.load_builtin("train", kind="speech")


def test_builtin_corpus_is_small():
  assert corpus.builtin_size_bytes() <= 20 * 2**20


def test_speech_clips_carry_their_metadata(speech):
  assert len({c.speaker for c in speech}) >= 6
  for c in speech:
    assert c.sample_rate == 16000 and c.waveform.dtype == np.float32
    assert c.meta["num_samples"] == c.waveform.shape[0]
    assert abs(c.meta["duration_s"] - c.waveform.shape[0] / 16000) < 1e-3
    assert c.text and c.text == c.meta["text"]
    assert 0.05 < np.abs(c.waveform).max() <= 1.0


def test_validation_texts_are_held_out(speech):
  valid = corpus.load_builtin("validation", kind="speech")
  assert valid and not {c.text for c in valid} & {c.text for c in speech}


def test_piano_clips_keep_their_midi_source():
  clips = corpus.load_builtin("validation", kind="piano", max_clips=2)
  assert len(clips) == 2
  for c in clips:
    mid = os.path.join(os.path.dirname(c.path), c.meta["source"]["midi_file"])
    with open(mid, "rb") as f:
      assert f.read(4) == b"MThd"
    assert c.speaker in midi.PIANO_PROGRAMS.values()
    assert len(c.meta["source"]["notes"]) > 4


def test_bad_kind_or_split_is_refused():
  with pytest.raises(ValueError, match="kind"):
    corpus.load_builtin("train", kind="drums")
  with pytest.raises(ValueError, match="split"):
    corpus.load_builtin("test")


def _note_ons(data: bytes) -> int:
  """Counts note-on events in a format-0 file written by `midi.to_midi_bytes`."""
  assert data[:4] == b"MThd" and struct.unpack(">IHHH", data[4:14]) == (6, 0, 1, 480)
  length = struct.unpack(">I", data[18:22])[0]
  track, i, count = data[22:22 + length], 0, 0
  while i < len(track):
    while track[i] & 0x80:  # delta time
      i += 1
    i += 1
    status = track[i]
    if status == 0xFF:
      i += 3 + track[i + 2]
    elif status >> 4 == 0xC:
      i += 2
    else:
      count += status >> 4 == 0x9
      i += 3
  assert i == len(track)
  return count


def test_midi_writer_round_trips_the_note_count():
  phrase = midi.random_phrase(np.random.default_rng(3))
  assert _note_ons(midi.to_midi_bytes(phrase)) == len(phrase.notes)
  assert phrase.seconds > 1.0


def test_midi_variable_length_quantities():
  assert midi._varlen(0) == b"\x00"
  assert midi._varlen(0x7F) == b"\x7f"
  assert midi._varlen(0x80) == b"\x81\x00"
  assert midi._varlen(0x3FFF) == b"\xff\x7f"


@pytest.fixture()
def wav_dir(tmp_path):
  rng = np.random.default_rng(0)
  sf.write(tmp_path / "ok.wav", 0.1 * rng.standard_normal(1600).astype(np.float32), 16000)
  sf.write(tmp_path / "stereo.wav", 0.1 * rng.standard_normal((1600, 2)), 16000)
  sf.write(tmp_path / "rate.wav", 0.1 * rng.standard_normal(2205), 22050)
  sf.write(tmp_path / "empty.wav", np.zeros(0), 16000)
  (tmp_path / "garbage.wav").write_bytes(b"RIFF not really audio")
  good = (tmp_path / "ok.wav").read_bytes()
  (tmp_path / "truncated.wav").write_bytes(good[: len(good) // 2])
  sf.write(tmp_path / "ok.flac", 0.1 * rng.standard_normal(16000), 16000)
  good = (tmp_path / "ok.flac").read_bytes()
  (tmp_path / "truncated.flac").write_bytes(good[: len(good) // 2])
  return tmp_path


@pytest.mark.parametrize("name,match", [
    ("stereo.wav", "expected 1 channel"), ("rate.wav", "sample rate 22050"),
    ("empty.wav", "empty"), ("garbage.wav", "unreadable"), ("truncated.wav", "truncated"),
    ("truncated.flac", "truncated")])
def test_bad_audio_files_raise_naming_the_file(wav_dir, name, match):
  with pytest.raises(audio.AudioFileError, match=match) as err:
    audio.read_audio(wav_dir / name, 16000)
  assert name in str(err.value)


def test_resampling_and_downmix_only_when_asked(wav_dir):
  wav, rate = audio.read_audio(wav_dir / "rate.wav", 16000, allow_resample=True)
  assert rate == 16000 and wav.shape == (1600,)
  wav, _ = audio.read_audio(wav_dir / "stereo.wav", 16000, allow_downmix=True)
  assert wav.shape == (1600,)


@pytest.mark.skipif(not all(shutil.which(t) for t in ("flite", "espeak-ng", "fluidsynth")),
                    reason="synthesisers not installed (apt-get install flite espeak-ng fluidsynth)")
def test_make_script_writes_clips_with_metadata(tmp_path):
  make.make_speech_clip(str(tmp_path), make.VOICES[0], 9, 16000)
  make.make_piano_clip(str(tmp_path), 7, seed=0, sample_rate=16000, soundfont=make._soundfont())
  for kind in corpus.KINDS:
    (clip,) = corpus.load_builtin("validation", kind=kind, root=tmp_path)
    assert clip.meta["split"] == "validation" and clip.sample_rate == 16000
  with open(tmp_path / "speech" / "validation" / "flite_slt-p009.json") as f:
    assert json.load(f)["text"] == make.PASSAGES[9]

