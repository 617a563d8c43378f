"""Synthesises the built-in speech and piano corpus.

    python -m soundlm.io.corpus.make --size small   # the committed corpus
    python -m soundlm.io.corpus.make --size large --out /data/soundlm_corpus

Speech: Harvard sentences read by several offline voices (flite and
espeak-ng); piano: generated MIDI phrases rendered by fluidsynth with the
General MIDI soundfont. Debian packages: espeak-ng flite fluidsynth
fluid-soundfont-gm. Output layout (what `soundlm.io.corpus` reads):

    <out>/<kind>/<split>/<clip_id>.flac   16-bit FLAC, mono
    <out>/<kind>/<split>/<clip_id>.json   speaker, text or MIDI notes, rate, duration
    <out>/piano/<split>/<clip_id>.mid     the MIDI source of a piano clip
"""
import argparse
import concurrent.futures
import dataclasses
import json
import os
import shutil
import subprocess
import tempfile

import numpy as np

from soundlm.io import audio
from soundlm.io.corpus import builtin_root, harvard, midi

SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2")


@dataclasses.dataclass(frozen=True)
class Voice:
  speaker: str
  engine: str  # 'flite' or 'espeak-ng'
  name: str
  rate_wpm: int = 0  # espeak-ng speaking rate
  pitch: int = 0  # espeak-ng pitch 0..99


VOICES = (
    Voice("flite_slt", "flite", "slt"),
    Voice("flite_rms", "flite", "rms"),
    Voice("flite_awb", "flite", "awb"),
    Voice("flite_kal", "flite", "kal16"),
    Voice("espeak_us_f2", "espeak-ng", "en-us+f2", 160, 62),
    Voice("espeak_gb_m3", "espeak-ng", "en-gb+m3", 150, 38),
    Voice("espeak_scot_f4", "espeak-ng", "en-gb-scotland+f4", 170, 55),
    Voice("espeak_carib_m1", "espeak-ng", "en-029+m1", 155, 45),
    Voice("espeak_nyc_klatt2", "espeak-ng", "en-us-nyc+klatt2", 165, 50),
)

# A clip reads a passage of two consecutive sentences (about 5 s).
PASSAGES = tuple(" ".join(harvard.SENTENCES[i:i + 2]) for i in range(0, len(harvard.SENTENCES), 2))
# (passages per voice, piano phrases); each passage is read by two voices.
SIZES = {"small": (10, 48), "medium": (50, 400), "large": (len(PASSAGES), 2000)}


def _speech_plan(per_voice: int):
  """(voice, passage index) pairs: voice v reads a window starting at
  v * per_voice / 2, so neighbouring voices share half their passages."""
  plan = []
  for v, voice in enumerate(VOICES):
    start = v * max(1, per_voice // 2)
    plan += [(voice, (start + j) % len(PASSAGES)) for j in range(per_voice)]
  return plan


def speech_split(passage_index: int) -> str:
  """Every tenth passage is held out, so validation texts are unseen in training."""
  return "validation" if passage_index % 10 == 9 else "train"


def piano_split(phrase_index: int) -> str:
  return "validation" if phrase_index % 8 == 7 else "train"


def _run(cmd):
  res = subprocess.run(cmd, capture_output=True, text=True)
  if res.returncode != 0:
    raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")


def synthesise(voice: Voice, text: str, wav_path: str):
  if voice.engine == "flite":
    _run(["flite", "-voice", voice.name, "-t", text, "-o", wav_path])
  else:
    _run(["espeak-ng", "-v", voice.name, "-s", str(voice.rate_wpm), "-p", str(voice.pitch),
          "-w", wav_path, text])


def _finish(wav_path: str, sample_rate: int) -> np.ndarray:
  """Mono, `sample_rate`, silence trimmed to 0.1 s each side, peak 0.9."""
  wav, rate = audio.read_audio(wav_path, allow_downmix=True)
  wav = audio.resample(wav, rate, sample_rate)
  loud = np.nonzero(np.abs(wav) > 1e-3)[0]
  if loud.size == 0:
    raise RuntimeError(f"{wav_path}: synthesiser produced silence")
  pad = sample_rate // 10
  wav = wav[max(0, loud[0] - pad): loud[-1] + pad]
  return (0.9 * wav / np.max(np.abs(wav))).astype(np.float32)


def _write_clip(out_dir: str, clip_id: str, wav: np.ndarray, meta: dict):
  import soundfile as sf

  os.makedirs(out_dir, exist_ok=True)
  sf.write(os.path.join(out_dir, clip_id + ".flac"), wav, meta["sample_rate"],
           subtype="PCM_16", format="FLAC")
  meta = dict(meta, id=clip_id, num_samples=int(wav.shape[0]),
              duration_s=round(wav.shape[0] / meta["sample_rate"], 4))
  with open(os.path.join(out_dir, clip_id + ".json"), "w") as f:
    json.dump(meta, f, indent=1, sort_keys=True)


def make_speech_clip(out: str, voice: Voice, index: int, sample_rate: int):
  text = PASSAGES[index]
  clip_id = f"{voice.speaker}-p{index:03d}"
  with tempfile.TemporaryDirectory() as tmp:
    raw = os.path.join(tmp, "raw.wav")
    synthesise(voice, text, raw)
    wav = _finish(raw, sample_rate)
  split = speech_split(index)
  _write_clip(os.path.join(out, "speech", split), clip_id, wav, {
      "kind": "speech", "split": split, "speaker": voice.speaker, "text": text,
      "source": {"synthesizer": voice.engine, "voice": voice.name, "rate_wpm": voice.rate_wpm,
                 "pitch": voice.pitch, "harvard_sentences": [2 * index, 2 * index + 1]},
      "sample_rate": sample_rate})


def make_piano_clip(out: str, index: int, seed: int, sample_rate: int, soundfont: str):
  phrase = midi.random_phrase(np.random.default_rng([seed, index]))
  program = midi.PIANO_PROGRAMS[phrase.program]
  clip_id = f"piano-{index:04d}"
  split = piano_split(index)
  out_dir = os.path.join(out, "piano", split)
  os.makedirs(out_dir, exist_ok=True)
  mid_path = os.path.join(out_dir, clip_id + ".mid")
  with open(mid_path, "wb") as f:
    f.write(midi.to_midi_bytes(phrase))
  with tempfile.TemporaryDirectory() as tmp:
    raw = os.path.join(tmp, "raw.wav")
    _run(["fluidsynth", "-ni", "-q", "-g", "0.8", "-r", str(sample_rate), "-F", raw,
          soundfont, mid_path])
    wav = _finish(raw, sample_rate)
  _write_clip(out_dir, clip_id, wav, {
      "kind": "piano", "split": split, "speaker": program, "text": "",
      "source": dict(phrase.to_json(), midi_file=clip_id + ".mid",
                     soundfont=os.path.basename(soundfont), seed=seed, index=index),
      "sample_rate": sample_rate})


def _soundfont() -> str:
  for path in SOUNDFONTS:
    if os.path.exists(path):
      return path
  raise FileNotFoundError(f"no General MIDI soundfont at {SOUNDFONTS}; "
                          "install the Debian package fluid-soundfont-gm")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--size", choices=sorted(SIZES), default="small")
  p.add_argument("--out", default=str(builtin_root()),
                 help="output folder (default: the corpus shipped in the package)")
  p.add_argument("--kinds", default="speech,piano")
  p.add_argument("--sample_rate", type=int, default=16000)
  p.add_argument("--seed", type=int, default=0, help="seed of the piano phrases")
  p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
  args = p.parse_args(argv)
  kinds = args.kinds.split(",")
  for tool in ["flite", "espeak-ng"] * ("speech" in kinds) + ["fluidsynth"] * ("piano" in kinds):
    if shutil.which(tool) is None:
      raise SystemExit(f"{tool} not found; apt-get install espeak-ng flite fluidsynth "
                       "fluid-soundfont-gm")
  per_voice, phrases = SIZES[args.size]
  jobs = []
  with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
    for kind in kinds:
      shutil.rmtree(os.path.join(args.out, kind), ignore_errors=True)
    if "speech" in kinds:
      jobs += [pool.submit(make_speech_clip, args.out, v, i, args.sample_rate)
               for v, i in _speech_plan(per_voice)]
    if "piano" in kinds:
      sf2 = _soundfont()
      jobs += [pool.submit(make_piano_clip, args.out, i, args.seed, args.sample_rate, sf2)
               for i in range(phrases)]
    for n, job in enumerate(concurrent.futures.as_completed(jobs), 1):
      job.result()
      print(f"\r{n}/{len(jobs)} clips", end="", flush=True)
  print(f"\nwrote {len(jobs)} clips under {args.out}")


if __name__ == "__main__":
  main()
