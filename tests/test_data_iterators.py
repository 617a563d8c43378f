"""The seeded, resumable iterator base and the five numpy iterators built on it."""
import numpy as np
import pytest

from soundlm import toy_lm
from soundlm.audiolm.layouts import Layout
from soundlm.audiolm.synthetic import MarkovStageData
from soundlm.codec.data import WaveformCrops
from soundlm.io.iterators import SeededIterator
from soundlm.semantic.data import SpeechCrops
from soundlm.soundstorm.synthetic import KnownProcessCodes

ITERATORS = {
    "markov_chain": lambda seed: toy_lm.MarkovChainData(batch_size=4, seq_len=8, seed=seed),
    "known_process": lambda seed: KnownProcessCodes(batch_size=4, num_frames=8, seed=seed),
    "markov_stage": lambda seed: MarkovStageData(
        Layout("coarse", semantic_vocab=8, codebook_size=8, num_levels=4,
               num_coarse_levels=2), batch_size=4, num_frames=4, seed=seed),
    "waveform_crops": lambda seed: WaveformCrops(batch_size=4, crop_length=800, max_clips=3,
                                                 seed=seed),
    "speech_crops": lambda seed: SpeechCrops(batch_size=4, crop_seconds=0.05, seed=seed),
}


class Draws(SeededIterator):
  """Rows of uniform draws: the base with the least on top."""

  def make_batch(self, rng):
    return {"x": rng.random((self.local_batch_size, 3))}


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("name", sorted(ITERATORS))
def test_restored_iterator_continues_bit_exactly(name):
  make = ITERATORS[name]
  reference = make(0)
  batches = [next(reference) for _ in range(4)]
  interrupted = make(0)
  for _ in range(2):
    next(interrupted)
  state = interrupted.get_state()
  assert state == {"seed": 0, "host": 0, "num_hosts": 1, "position": 2}
  resumed = make(0)
  resumed.set_state(state)
  _assert_batches_equal(next(resumed), batches[2])
  _assert_batches_equal(next(resumed), batches[3])
  assert not all(np.array_equal(batches[0][k], next(make(1))[k]) for k in batches[0])


def test_hosts_draw_their_own_share():
  first, second = Draws(8, seed=3, host_index=0, num_hosts=2), Draws(8, seed=3, host_index=1,
                                                                    num_hosts=2)
  a, b = next(first)["x"], next(second)["x"]
  assert a.shape == b.shape == (4, 3) and not np.array_equal(a, b)
  _assert_batches_equal(Draws(8, seed=3, host_index=1, num_hosts=2).batch_for(0), {"x": b})


def test_a_state_of_another_host_split_or_seed_is_refused():
  state = Draws(8, seed=3, host_index=1, num_hosts=2).get_state()
  with pytest.raises(ValueError, match=r"different input pipeline.*'host': \(1, 0\)"):
    Draws(8, seed=3, host_index=0, num_hosts=2).set_state(state)
  with pytest.raises(ValueError, match=r"'num_hosts': \(2, 4\)"):
    Draws(8, seed=3, host_index=1, num_hosts=4).set_state(state)
  with pytest.raises(ValueError, match=r"'seed': \(3, 4\)"):
    Draws(8, seed=4, host_index=1, num_hosts=2).set_state(state)
  with pytest.raises(ValueError, match=r"'host': \(None, 0\)"):  # no host split recorded
    Draws(8).set_state({"position": 3})
  with pytest.raises(ValueError, match="position must be a batch count"):
    Draws(8).set_state(dict(Draws(8).get_state(), position=-1))


@pytest.mark.parametrize("kwargs,match", [
    ({"batch_size": 6, "num_hosts": 4, "host_index": 0}, "6 is not divisible by 4 hosts"),
    ({"batch_size": 0}, "must be positive"),
    ({"batch_size": 8, "num_hosts": 2, "host_index": 2}, r"host_index: expected 0\.\.1"),
])
def test_bad_host_splits_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    Draws(**kwargs)


def test_a_subclass_must_draw_batches():
  with pytest.raises(NotImplementedError, match="make_batch"):
    next(SeededIterator(2))
