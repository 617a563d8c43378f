"""seqio tasks, feature converters and the restorable TaskData iterator."""
import numpy as np
import pytest

from soundlm.audiolm import layouts
from soundlm.data import pipeline, tasks
from soundlm.io import shards, sources, tf_env
from soundlm.io.token_space import TokenSpace

SPEC = TokenSpace(sample_rate=16000, codec_frame_rate=50.0, semantic_frame_rate=25.0,
                  num_levels=4, codebook_size=16, semantic_vocab=8)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
  """Two corpora of random token shards; 'short' clips are shorter than the crops."""
  root = tmp_path_factory.mktemp("tokens")
  shards.write_random(str(root / "long"), SPEC, "train", 24, seconds=(1.0, 2.0),
                      examples_per_shard=5)
  shards.write_random(str(root / "long"), SPEC, "validation", 4, seconds=(1.0, 2.0))
  shards.write_random(str(root / "short"), SPEC, "train", 8, seconds=(0.2, 0.4), seed=1)
  return {"long": str(root / "long"), "short": str(root / "short")}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def _layout(stage):
  return layouts.Layout(stage, semantic_vocab=8, codebook_size=16, num_levels=4,
                        num_coarse_levels=2, crop_seconds=0.4)


def _batches(task, n, **kwargs):
  data = pipeline.TaskData(task, **{"batch_size": 4, **kwargs})
  return data, [next(data) for _ in range(n)]


@pytest.mark.parametrize("stage", layouts.STAGES)
def test_audiolm_tasks_yield_layout_sequences(tokens, stage):
  layout = _layout(stage)
  task = tasks.audiolm_task(stage=stage, tokens={"long": tokens["long"]}, layout=layout)
  assert task.name == f"soundlm.long.audiolm_{stage}"
  _, (batch,) = _batches(task, 1)
  assert set(batch) == {"tokens"}
  assert batch["tokens"].shape == (4, layout.sequence_length())
  assert batch["tokens"].dtype == np.int32
  # Clips are longer than the crop, so every sequence is full and decodes back.
  decoded = layout.from_sequence(batch["tokens"])
  frames = layout.crop_acoustic_frames if stage == "fine" else layout.crop_semantic_frames
  assert (decoded[0] if stage == "coarse" else decoded).shape[1] == frames


def test_audiolm_short_clips_are_padded_with_pad_ids(tokens):
  layout = _layout("semantic")
  task = tasks.audiolm_task(stage="semantic", tokens={"short": tokens["short"]}, layout=layout)
  _, (batch,) = _batches(task, 1)
  assert batch["tokens"].shape == (4, layout.sequence_length())
  assert np.all(batch["tokens"][:, 0] == layouts.START_ID)
  assert np.all(batch["tokens"][:, -1] == layouts.PAD_ID)


def test_soundstorm_task_features_and_padding_mask(tokens):
  task = tasks.soundstorm_task(tokens=tokens, num_levels=3, codebook_size=16,
                               semantic_vocab=8, crop_seconds=0.4)
  assert task.name == "soundlm.long+short.soundstorm"
  _, batches = _batches(task, 3)
  for batch in batches:
    assert batch["semantic"].shape == (4, 10) and batch["semantic"].dtype == np.int32
    assert batch["codes"].shape == (4, 20, 3) and batch["codes"].dtype == np.int32
    assert batch["padding_mask"].shape == (4, 20) and batch["padding_mask"].dtype == bool
    assert batch["codes"].max() < 16 and batch["semantic"].max() < 8
    # Real frames first; padded frames hold zeros.
    mask = batch["padding_mask"]
    assert np.all(np.diff(mask.astype(int), axis=1) <= 0)
    assert np.all(batch["codes"][~mask] == 0)
  masks = np.concatenate([b["padding_mask"] for b in batches])
  assert masks.all(axis=1).any() and not masks.all()  # both corpora were sampled


def test_token_shards_that_do_not_fit_the_model_are_refused(tokens):
  with pytest.raises(ValueError, match="num_levels=8 but token shards .* hold 4 levels"):
    tasks.soundstorm_task(tokens=tokens["long"], num_levels=8, codebook_size=16,
                          semantic_vocab=8)
  bad = layouts.Layout("coarse", semantic_vocab=8, codebook_size=1024, num_levels=4,
                       num_coarse_levels=2, crop_seconds=0.4)
  with pytest.raises(ValueError, match="codebook_size=1024 but token shards .* have 16"):
    tasks.audiolm_task(stage="coarse", tokens=tokens["long"], layout=bad)


def test_same_seed_same_batches_and_restore_gives_the_next_batch(tokens):
  task = tasks.audiolm_task(stage="coarse", tokens=tokens["long"], layout=_layout("coarse"))
  data, batches = _batches(task, 9, seed=3)  # 24 examples: 6 batches per epoch
  _, again = _batches(task, 9, seed=3)
  _, other = _batches(task, 2, seed=4)
  for a, b in zip(batches, again):
    np.testing.assert_array_equal(a["tokens"], b["tokens"])
  assert not np.array_equal(batches[0]["tokens"], other[0]["tokens"])
  # Epochs differ (reshuffled, re-cropped).
  assert not np.array_equal(batches[0]["tokens"], batches[6]["tokens"])
  for position in (2, 7):  # inside the first epoch, and after an epoch boundary
    data, consumed = _batches(task, position, seed=3)
    state = data.get_state()
    restored = pipeline.TaskData(task, batch_size=4, seed=3)
    restored.set_state(state)
    np.testing.assert_array_equal(next(restored)["tokens"], batches[position]["tokens"])
  with pytest.raises(ValueError, match="different input pipeline"):
    pipeline.TaskData(task, batch_size=4, seed=5).set_state(state)


def test_hosts_read_disjoint_parts_of_the_input(tokens):
  seqio = tf_env.seqio()
  source = sources.token_source(tokens["long"])
  ids = [{x["id"] for x in source.get_dataset(
      "train", shuffle=False, shard_info=seqio.ShardInfo(h, n)).as_numpy_iterator()}
      for n in (2, 7) for h in range(n)]
  everything = set.union(*ids[:2])
  assert len(everything) == 24 and not ids[0] & ids[1]  # 5 files, 2 hosts: by file
  assert set.union(*ids[2:]) == everything and sum(map(len, ids[2:])) == 24  # by example


def test_hosts_get_their_share_of_the_batch(tokens):
  task = tasks.audiolm_task(stage="fine", tokens=tokens["long"], layout=_layout("fine"))
  data = pipeline.TaskData(task, batch_size=4, host_index=1, num_hosts=2)
  assert next(data)["tokens"].shape[0] == 2
  with pytest.raises(ValueError, match="not divisible"):
    pipeline.TaskData(task, batch_size=3, num_hosts=2, host_index=0)


def test_waveform_tasks_mix_speech_and_piano(data_dir):
  codec = tasks.codec_task(corpora=("speech", "piano"), crop_seconds=0.5, data_dir=data_dir)
  w2v = tasks.w2vbert_task(corpora=("speech",), crop_seconds=0.25, data_dir=data_dir)
  assert codec.name == "soundlm.piano+speech.codec" and w2v.name == "soundlm.speech.w2vbert"
  _, (batch,) = _batches(codec, 1)
  assert set(batch) == {"waveform"} and batch["waveform"].shape == (4, 8000)
  assert batch["waveform"].dtype == np.float32 and np.abs(batch["waveform"]).max() <= 1.0
  _, (batch,) = _batches(w2v, 1, split="validation", shuffle=False)
  assert set(batch) == {"wav"} and batch["wav"].shape == (4, 4000)
  assert np.abs(batch["wav"]).max() > 0.01
  with pytest.raises(ValueError, match="sample_rate=24000"):
    tasks.codec_task(corpora=("piano",), sample_rate=24000, data_dir=data_dir)
