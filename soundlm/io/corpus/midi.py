"""Piano phrases as note lists, and a minimal Standard MIDI File writer.

The built-in piano corpus is rendered from phrases generated here, so every
clip's musical source is known exactly (its notes are stored beside it)."""
import dataclasses
import struct

import numpy as np

TICKS_PER_BEAT = 480

# General MIDI programs 1-8 (0-based): the piano family.
PIANO_PROGRAMS = {
    0: "acoustic_grand",
    1: "bright_acoustic",
    2: "electric_grand",
    3: "honky_tonk",
    4: "electric_piano_1",
    5: "electric_piano_2",
}

_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_MINOR = (0, 2, 3, 5, 7, 8, 10)
# Chord progressions as scale degrees (0 = tonic), one chord per bar.
_PROGRESSIONS = ((0, 3, 4, 0), (0, 5, 3, 4), (0, 4, 5, 3), (5, 3, 0, 4), (0, 3, 0, 4))


@dataclasses.dataclass(frozen=True)
class Note:
  start: float  # beats
  duration: float  # beats
  pitch: int  # MIDI note number
  velocity: int  # 1..127


@dataclasses.dataclass(frozen=True)
class Phrase:
  notes: tuple
  tempo_bpm: float
  program: int
  key: str
  mode: str

  @property
  def beats(self) -> float:
    return max(n.start + n.duration for n in self.notes)

  @property
  def seconds(self) -> float:
    return self.beats * 60.0 / self.tempo_bpm

  def to_json(self) -> dict:
    return {
        "tempo_bpm": self.tempo_bpm,
        "program": self.program,
        "program_name": PIANO_PROGRAMS.get(self.program, str(self.program)),
        "key": self.key,
        "mode": self.mode,
        "notes": [[n.start, n.duration, n.pitch, n.velocity] for n in self.notes],
    }


_NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def random_phrase(rng: np.random.Generator, bars: int = 2) -> Phrase:
  """A short two-handed phrase: a bass/chord part and a scale melody."""
  tonic = int(rng.integers(0, 12))
  mode = "major" if rng.random() < 0.6 else "minor"
  scale = _MAJOR if mode == "major" else _MINOR
  tempo = float(rng.choice((72, 84, 96, 108, 120, 132)))
  program = int(rng.choice(list(PIANO_PROGRAMS)))
  progression = _PROGRESSIONS[int(rng.integers(len(_PROGRESSIONS)))]
  start_bar = int(rng.integers(0, len(progression) - bars + 1))
  style = rng.choice(("block", "arpeggio", "alberti"))

  def degree_pitch(degree: int, octave_base: int) -> int:
    return octave_base + tonic + scale[degree % 7] + 12 * (degree // 7)

  notes = []
  for bar in range(bars):
    root = progression[start_bar + bar]
    chord = [degree_pitch(root + k, 48) for k in (0, 2, 4)]
    t0 = 4.0 * bar
    vel = int(rng.integers(45, 75))
    if style == "block":
      notes += [Note(t0, 2.0, p, vel) for p in chord]
      notes += [Note(t0 + 2.0, 2.0, p, vel - 5) for p in chord]
    elif style == "arpeggio":
      for i, p in enumerate(chord + [chord[1]]):
        notes.append(Note(t0 + i, 1.0, p, vel))
    else:
      for i, idx in enumerate((0, 2, 1, 2, 0, 2, 1, 2)):
        notes.append(Note(t0 + 0.5 * i, 0.5, chord[idx], vel - 10))
  # Melody: a random walk on the scale above the chords.
  degree = int(rng.integers(7, 12))
  t = 0.0
  while t < 4.0 * bars:
    dur = float(rng.choice((0.5, 0.5, 1.0, 1.0, 1.5, 2.0)))
    dur = min(dur, 4.0 * bars - t)
    degree = int(np.clip(degree + rng.choice((-2, -1, -1, 0, 1, 1, 2)), 5, 16))
    notes.append(Note(t, dur, degree_pitch(degree, 60), int(rng.integers(60, 100))))
    t += dur
  notes.sort(key=lambda n: (n.start, n.pitch))
  return Phrase(tuple(notes), tempo, program, _NOTE_NAMES[tonic], mode)


def _varlen(value: int) -> bytes:
  out = [value & 0x7F]
  value >>= 7
  while value:
    out.append(0x80 | (value & 0x7F))
    value >>= 7
  return bytes(reversed(out))


def to_midi_bytes(phrase: Phrase, tail_seconds: float = 1.0) -> bytes:
  """Format-0 Standard MIDI File; `tail_seconds` of silence let notes ring out."""
  events = []  # (tick, order, bytes): note-offs sort before note-ons at equal ticks
  for n in phrase.notes:
    on = round(n.start * TICKS_PER_BEAT)
    off = round((n.start + n.duration) * TICKS_PER_BEAT)
    events.append((on, 1, bytes((0x90, n.pitch, n.velocity))))
    events.append((off, 0, bytes((0x80, n.pitch, 0))))
  events.sort(key=lambda e: (e[0], e[1]))
  tempo_us = round(60e6 / phrase.tempo_bpm)
  track = b"\x00\xff\x51\x03" + tempo_us.to_bytes(3, "big")
  track += b"\x00" + bytes((0xC0, phrase.program))
  now = 0
  for tick, _, data in events:
    track += _varlen(tick - now) + data
    now = tick
  tail = round(tail_seconds * phrase.tempo_bpm / 60.0 * TICKS_PER_BEAT)
  track += _varlen(tail) + b"\xff\x2f\x00"
  header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS_PER_BEAT)
  return header + b"MTrk" + struct.pack(">I", len(track)) + track
