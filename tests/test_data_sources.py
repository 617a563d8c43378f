"""Audio sources: the audio feature and split names of TFDS datasets, folder
corpora at the task's sample rate and options, clips shorter than the crop."""
import functools
import types

import numpy as np
import pytest
import soundfile as sf

from soundlm.data import pipeline, tasks, tokenize
from soundlm.io import audio, folder, shards, sources, tf_env

LIBRISPEECH_SPLITS = {"train_clean100": 3, "train_clean360": 2, "train_other500": 1,
                      "dev_clean": 2}


def _tone(n, seed):
  return (0.3 * np.random.default_rng(seed).uniform(-1, 1, n)).astype(np.float32)


@functools.cache
def _fake_librispeech_class():
  tfds = tf_env.tfds()

  class FakeLibrispeech(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """TFDS librispeech's name, features and split names, on generated clips."""
    name = "librispeech"
    VERSION = tfds.core.Version("1.0.0")
    code_path = None

    def _info(self):
      return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
          "speech": tfds.features.Audio(sample_rate=16000, dtype=np.int16),
          "text": tfds.features.Text(), "speaker_id": np.int64, "chapter_id": np.int64,
          "id": np.str_}))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(split, n) for split, n in LIBRISPEECH_SPLITS.items()}

    def _generate_examples(self, split, n):
      for i in range(n):
        clip_id = f"{split}-{i}"
        speech = np.round(_tone(8000 + 1600 * i, i) * 32767).astype(np.int16)
        yield clip_id, {"speech": speech, "text": f"words {i}", "speaker_id": 100 + i,
                        "chapter_id": 7, "id": clip_id}

  return FakeLibrispeech


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def librispeech(data_dir):
  return folder.prepared(_fake_librispeech_class()(data_dir=data_dir))


@pytest.fixture()
def tfds_librispeech(librispeech, monkeypatch):
  """'tfds:librispeech' resolves to the fake builder (nothing can be downloaded here)."""
  real = sources.audio_builder

  def audio_builder(source, data_dir=None, **settings):
    return librispeech if source == "tfds:librispeech" else real(source, data_dir, **settings)
  monkeypatch.setattr(sources, "audio_builder", audio_builder)


def _write_folder(root, lengths, rate):
  for i, (split, n) in enumerate(lengths):
    (root / split).mkdir(parents=True, exist_ok=True)
    sf.write(root / split / f"clip{i}.wav", _tone(n, i), rate, subtype="PCM_16")
  return root


def test_audio_feature_is_found_by_type_and_ambiguity_is_refused(librispeech, data_dir):
  tfds = tf_env.tfds()
  assert sources.audio_feature(librispeech) == "speech"
  assert sources.audio_feature(folder.builtin_builder("piano", data_dir=data_dir)) == "audio"

  def fake(**features):
    info = types.SimpleNamespace(features=tfds.features.FeaturesDict(features),
                                 full_name="fake/1.0.0")
    return types.SimpleNamespace(info=info)
  audio = tfds.features.Audio(sample_rate=16000, dtype=np.int16)
  with pytest.raises(ValueError, match=r"found 2 \(\['left', 'right'\]\).*\['left', 'right', 'text'\]"):
    sources.audio_feature(fake(left=audio, right=audio, text=tfds.features.Text()))
  with pytest.raises(ValueError, match=r"found 0 .*\['text'\]"):
    sources.audio_feature(fake(text=tfds.features.Text()))


def test_librispeech_split_names_map_onto_train_and_validation(librispeech):
  names = sources.split_names(librispeech)
  assert names["train"] == ["train_clean100", "train_clean360", "train_other500"]
  assert names["validation"] == ["dev_clean"] and names["dev_clean"] == ["dev_clean"]
  source = sources.waveform_source(librispeech)
  assert source.num_input_examples("train") == 6
  ids = {ex["id"].decode() for ex in source.get_dataset("train", shuffle=False)
         .as_numpy_iterator()}
  assert ids == {f"{s}-{i}" for s, n in LIBRISPEECH_SPLITS.items() if s != "dev_clean"
                 for i in range(n)}
  with pytest.raises(ValueError, match=r"names \['clean100'\], not among its splits"):
    sources.split_names(librispeech, {"train": "clean100"})


def test_tfds_corpora_feed_waveform_tasks(tfds_librispeech, data_dir):
  task = tasks.codec_task(corpora={"libri": "tfds:librispeech", "piano_mix": "builtin:piano"},
                          crop_seconds=0.25, data_dir=data_dir)
  batch = next(pipeline.TaskData(task, batch_size=4))
  assert batch["waveform"].shape == (4, 4000) and np.abs(batch["waveform"]).max() > 0.01
  # Another split mapping, given per corpus.
  task = tasks.w2vbert_task(corpora={"libri100": "tfds:librispeech"}, crop_seconds=0.25,
                            data_dir=data_dir, splits={"libri100": {"train": "train_clean100"}})
  data = pipeline.TaskData(task, batch_size=3, shuffle=False)
  assert next(data)["wav"].shape == (3, 4000)
  with pytest.raises(ValueError, match="not among the corpora"):
    tasks.w2vbert_task(corpora={"libri": "tfds:librispeech"}, splits={"other": {}})


class _LoudFrames:
  """Stand-in codec and semantic tokenizer: id 1 for each frame of `hop` samples
  whose RMS is above 0.05, else 0 (the padding)."""
  sample_rate, codebook_size, vocab_size = 16000, 2, 2

  def __init__(self, hop: int, num_levels: int = 1):
    self.hop, self.num_levels, self.frame_rate = hop, num_levels, 16000 / hop

  def _ids(self, x):
    import jax.numpy as jnp

    frames = x[:, :x.shape[1] // self.hop * self.hop].reshape(x.shape[0], -1, self.hop)
    return (jnp.sqrt(jnp.mean(frames**2, axis=-1)) > 0.05).astype(jnp.int32)

  def encode(self, x, num_levels):
    ids = self._ids(x)
    return ids[..., None].repeat(num_levels, axis=-1)

  def tokenize(self, x, lengths=None):
    del lengths  # the frames past a clip are quiet, so they come out as 0 anyway
    return self._ids(x)


def test_tokenize_reads_the_builders_audio_feature(librispeech, tmp_path):
  models = _LoudFrames(320), _LoudFrames(640)
  config = tokenize.JobConfig(split="dev_clean", bucket_seconds=1.0, progress=False)
  manifest = tokenize.run(librispeech, str(tmp_path), *models, config)
  assert manifest["splits"]["dev_clean"]["num_examples"] == 2
  ds = tf_env.tf().data.TFRecordDataset(shards.shard_files(str(tmp_path), "dev_clean"))
  records = {r["id"].decode(): r for r in ds.map(shards.parse_fn()).as_numpy_iterator()}
  assert sorted(records) == ["dev_clean-0", "dev_clean-1"]
  # Every frame of the clip's audio is loud: the samples were read, not zeros.
  np.testing.assert_array_equal(records["dev_clean-1"]["semantic"], np.ones(9600 // 640))
  assert records["dev_clean-1"]["codes"].shape == (2 * 9600 // 640, 1)
  assert records["dev_clean-1"]["codes"].all()
  assert records["dev_clean-1"]["speaker"].decode() == "101"
  with pytest.raises(ValueError, match=r"not 'train'"):
    tokenize.run(librispeech, str(tmp_path / "other"), *models, tokenize.JobConfig(progress=False))


def test_folder_corpora_follow_the_task_sample_rate_and_options(tmp_path, data_dir):
  root = _write_folder(tmp_path / "f24k", [("train", 7200)] * 4 + [("validation", 7200)], 24000)
  task = tasks.codec_task(corpora={"f24k": f"folder:{root}"}, sample_rate=24000,
                          crop_seconds=0.2, data_dir=data_dir)
  assert next(pipeline.TaskData(task, batch_size=4))["waveform"].shape == (4, 4800)
  # Resampled to 16 kHz when the options allow it (a crop of the whole clip).
  task = tasks.w2vbert_task(corpora={"f24k_to_16k": f"folder:{root}"}, crop_seconds=0.3,
                            data_dir=data_dir, folder_options={"allow_resample": True})
  batch = next(pipeline.TaskData(task, batch_size=1, split="validation", shuffle=False))
  original = sf.read(root / "validation" / "clip4.wav", dtype="float32")[0]
  np.testing.assert_allclose(batch["wav"][0], audio.resample(original, 24000, 16000),
                             atol=1e-4)
  with pytest.raises(ValueError, match="sample rate 24000 Hz, expected 16000 Hz"):
    tasks.codec_task(corpora={"f24k_as_16k": f"folder:{root}"}, data_dir=data_dir)
  with pytest.raises(ValueError, match=r"\['sample_rate'\] come from"):
    tasks.codec_task(corpora={"f": f"folder:{root}"}, folder_options={"sample_rate": 24000})


@pytest.fixture(scope="module")
def short_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("short")
  return _write_folder(root, [("train", 8000), ("train", 1600), ("train", 8000),
                              ("validation", 8000)], 16000)


def test_clips_shorter_than_the_crop_raise_naming_the_clip(short_root, data_dir):
  tf = tf_env.tf()
  task = tasks.codec_task(corpora={"short": f"folder:{short_root}"}, crop_seconds=0.25,
                          data_dir=data_dir)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="clip train/clip1: 1600 samples, shorter than the crop of 4000"):
    next(pipeline.TaskData(task, batch_size=3, shuffle=False))


def test_short_clips_are_padded_or_skipped_when_a_setting_says_so(short_root, data_dir):
  task = tasks.codec_task(corpora={"short_padded": f"folder:{short_root}"}, crop_seconds=0.25,
                          data_dir=data_dir, short_clips="pad")
  batch = next(pipeline.TaskData(task, batch_size=3, shuffle=False))["waveform"]
  assert batch.shape == (3, 4000)
  padded = [i for i in range(3) if np.all(batch[i, 1600:] == 0)]
  assert len(padded) == 1 and np.abs(batch[padded[0], :1600]).max() > 0.01
  options = {"min_seconds": 0.25, "on_error": "skip"}
  task = tasks.codec_task(corpora={"short_skipped": f"folder:{short_root}"},
                          crop_seconds=0.25, data_dir=data_dir, folder_options=options)
  assert next(pipeline.TaskData(task, batch_size=2))["waveform"].shape == (2, 4000)
  builder = sources.audio_builder(f"folder:{short_root}", data_dir, **options)
  assert folder.skipped_files(builder)["train"] == [
      ["train/clip1.wav", "0.10 s, shorter than min_seconds=0.25"]]
  with pytest.raises(ValueError, match="short_clips"):
    tasks.codec_task(corpora={"short": f"folder:{short_root}"}, short_clips="trim")


def test_waveforms_of_folders_builtin_and_tfds_splits(short_root, tfds_librispeech):
  wavs = list(sources.waveforms(f"folder:{short_root}", "train"))
  assert [w.size for w in wavs] == [8000, 1600, 8000] and all(w.dtype == np.float32 for w in wavs)
  np.testing.assert_allclose(wavs[1], sf.read(short_root / "train" / "clip1.wav",
                                              dtype="float32")[0])
  assert len(list(sources.waveforms("builtin:speech", "validation"))) == 9
  libri = list(sources.waveforms("tfds:librispeech", "validation"))
  assert sorted(w.size for w in libri) == [8000, 9600] and libri[0].dtype == np.float32
  with pytest.raises(ValueError, match=r"has splits \['train', 'validation'\], not 'test'"):
    next(sources.waveforms(f"folder:{short_root}", "test"))
  with pytest.raises(ValueError, match="24000 Hz"):
    next(sources.waveforms("tfds:librispeech", "validation", sample_rate=24000))


def test_to_float_returns_the_kind_it_was_given():
  tf = tf_env.tf()
  pcm = np.array([-32768, 0, 16384], np.int16)
  out = folder.to_float(pcm)
  assert isinstance(out, np.ndarray) and out.dtype == np.float32
  np.testing.assert_array_equal(out, [-1.0, 0.0, 0.5])
  out = folder.to_float(np.array([0.25, -0.5]))
  assert isinstance(out, np.ndarray) and out.dtype == np.float32
  np.testing.assert_array_equal(out, [0.25, -0.5])
  out = folder.to_float(tf.constant(pcm.astype(np.int64)))
  assert isinstance(out, tf.Tensor) and out.dtype == tf.float32
  np.testing.assert_array_equal(out.numpy(), [-1.0, 0.0, 0.5])


def test_paper_recipe_needs_a_corpus_and_leaves_out_clips_shorter_than_its_crops(
    tmp_path, data_dir):
  import gin

  from soundlm import gin_utils

  root = _write_folder(tmp_path / "long", [("train", 16 * 16000), ("train", 15 * 16000),
                                           ("train", 17 * 16000), ("validation", 16 * 16000)], 16000)
  try:
    with pytest.raises(ValueError, match=r"w2vbert_task.corpora set to `%gin.REQUIRED`"):
      gin_utils.parse(["gin/runs/semantic_paper.gin"], [])
    gin.clear_config()
    gin_utils.parse(["gin/runs/semantic_paper.gin"], [
        f"soundlm.data.w2vbert_task.corpora = {{'paper_long': 'folder:{root}'}}",
        f"soundlm.data.w2vbert_task.data_dir = '{data_dir}'",
        "soundlm.data.TaskData.batch_size = 2"])
    assert next(pipeline.TaskData())["wav"].shape == (2, 16 * 16000)
  finally:
    gin.clear_config()
  builder = sources.audio_builder(f"folder:{root}", data_dir, min_seconds=16.0,
                                  on_error="skip")
  assert folder.skipped_files(builder)["train"] == [
      ["train/clip1.wav", "15.00 s, shorter than min_seconds=16.0"]]
