"""fit_kmeans on any folder corpus, and the model fingerprint that k-means files carry."""
import os
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import pytest
import soundfile as sf

from soundlm.semantic import fit_kmeans
from soundlm.semantic.api import SemanticEmbedder, SemanticTokenizer, params_digest
from soundlm.semantic.kmeans import KMeans

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "w2v_bert"
HF_ARGS = [f"--hf_dir={FIXTURE / 'relative_key'}", "--layer=3"]


@pytest.fixture(scope="module")
def folder_corpus(tmp_path_factory):
  """A folder of speech-like 16 kHz files outside the built-in layout."""
  root = tmp_path_factory.mktemp("my_audio")
  rng = np.random.default_rng(0)
  t = np.arange(24_000) / 16_000
  for i, split in enumerate(["train"] * 3 + ["validation"]):
    (root / split).mkdir(exist_ok=True)
    wav = 0.3 * np.sin(2 * np.pi * (150 + 50 * i) * t * (1 + 0.3 * t))
    sf.write(root / split / f"clip{i}.flac", wav + 0.02 * rng.standard_normal(t.size), 16_000)
  return root


@pytest.fixture(scope="module")
def fitted(folder_corpus, tmp_path_factory):
  """fit_kmeans run on the folder, in a process where TensorFlow cannot be imported."""
  out = tmp_path_factory.mktemp("kmeans") / "kmeans.npz"
  code = ("import sys\n"
          "for name in ('tensorflow', 'tensorflow_datasets', 'seqio'):\n"
          "  sys.modules[name] = None\n"
          "from soundlm.semantic import fit_kmeans\n"
          "fit_kmeans.main(sys.argv[1:])\n")
  run = subprocess.run(
      [sys.executable, "-c", code, *HF_ARGS, "--num_clusters=4", "--num_iters=2",
       "--window_seconds=0.5", f"--corpus=folder:{folder_corpus}", f"--out={out}"],
      capture_output=True, text=True, cwd=pathlib.Path(__file__).parents[1])
  assert run.returncode == 0, run.stderr
  assert "from 3 clips of folder:" in run.stderr  # the train split: 3 x 1.5 s
  return out


def test_fit_kmeans_reads_any_folder_and_records_the_model(fitted):
  kmeans = KMeans.load(fitted)
  assert (kmeans.num_clusters, kmeans.layer) == (4, 3)
  assert kmeans.model["source"] == f"hf:{FIXTURE / 'relative_key'}"
  assert kmeans.model["layer"] == 3 and kmeans.model["step"] is None
  embedder = SemanticEmbedder.from_hf(FIXTURE / "relative_key", 3)
  assert kmeans.model["params"] == params_digest(embedder.params, 3)


def test_tokenizer_refuses_kmeans_fitted_on_another_model(fitted):
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    tokenizer = SemanticTokenizer.from_hf(FIXTURE / "relative_key", fitted)
  assert tokenizer.vocab_size == 4
  with pytest.raises(ValueError, match=r"kmeans.npz was fitted on layer 3 of hf:\S*relative_key "
                                       r".*not on this model: layer 3 of hf:\S*rotary"):
    SemanticTokenizer.from_hf(FIXTURE / "rotary", fitted)


def test_kmeans_files_without_a_fingerprint_load_with_a_warning(fitted, tmp_path):
  kmeans = KMeans.load(fitted)
  old = tmp_path / "old.npz"
  with open(old, "wb") as f:  # the version 1 format
    np.savez(f, centroids=kmeans.centroids, mean=kmeans.mean, std=kmeans.std, layer=3,
             version=1)
  assert KMeans.load(old).model is None
  with pytest.warns(UserWarning, match="old.npz records no fingerprint"):
    tokenizer = SemanticTokenizer.from_hf(FIXTURE / "rotary", old)
  assert tokenizer.vocab_size == 4


def test_digest_covers_exactly_what_the_layer_depends_on():
  rng = np.random.default_rng(0)
  block = lambda: {"attention": {"kernel": rng.standard_normal((8, 8))},  # noqa: E731
                   "norm": {"scale": np.ones(8)}}
  params = {"frontend": {"kernel": rng.standard_normal((4, 8))},
            "mask_embedding": rng.standard_normal(8), "layers_0": block(), "layers_1": block()}
  digest = params_digest(params, 1)
  above = {**params, "layers_1": block()}
  below = {**params, "layers_0": block()}
  assert params_digest(above, 1) == digest and params_digest(below, 1) != digest
  assert params_digest(above, 2) != params_digest(params, 2)
  assert params_digest({**params, "mask_embedding": params["mask_embedding"] + 1}, 1) == digest
  reshaped = {**params, "frontend": {"kernel": params["frontend"]["kernel"].reshape(8, 4)}}
  assert params_digest(reshaped, 1) != digest


def test_corpus_root_without_the_builtin_layout_points_to_folder_corpora(folder_corpus, capsys):
  with pytest.raises(SystemExit):
    fit_kmeans.main([*HF_ARGS, f"--corpus_root={folder_corpus}", "--out=unused.npz"])
  assert f"use --corpus=folder:{folder_corpus}" in capsys.readouterr().err


def test_work_dir_without_its_model_files_says_so(fitted, tmp_path):
  with pytest.raises(FileNotFoundError, match="model.json does not exist: .* is not the work dir"):
    SemanticTokenizer.load(tmp_path, fitted)
  with pytest.raises(FileNotFoundError, match="no config.gin in this work dir"):
    fit_kmeans.main([f"--w2v_bert_workdir={tmp_path}", f"--out={tmp_path / 'k.npz'}"])
  with pytest.raises(FileNotFoundError, match="does not exist"):
    SemanticTokenizer.load(tmp_path / "missing", fitted)
  assert not os.path.exists(tmp_path / "k.npz")


class _Frames:
  """Stand-in embedder: one row per 320 samples, the row's index in the stream."""

  class config:
    width = 1

  def __init__(self):
    self.count = 0

  def embed(self, batch):
    rows = batch.shape[0] * (batch.shape[1] // 320)
    out = np.arange(self.count, self.count + rows, dtype=np.float32).reshape(batch.shape[0], -1, 1)
    self.count += rows
    return out


def test_max_rows_keeps_a_uniform_sample_of_the_stream():
  from soundlm.semantic.fit_kmeans import collect_embeddings
  clips = (np.zeros(16000 * 3 + 100, np.float32) for _ in range(20))  # streamed once
  rows, unused = collect_embeddings(_Frames(), clips, window_seconds=1.0, batch_size=4,
                                    max_rows=300)
  assert rows.shape == (300, 1) and unused == pytest.approx(20 * 100 / 16000)
  assert len(np.unique(rows)) == 300  # no row twice
  # 20 clips x 3 windows x 50 rows: every part of the stream is represented.
  counts = np.histogram(rows, bins=6, range=(0, 3000))[0]
  assert counts.min() > 25, counts
  everything, _ = collect_embeddings(_Frames(), [np.zeros(16000 * 3, np.float32)] * 2, 1.0)
  np.testing.assert_array_equal(everything[:, 0], np.arange(300))
  with pytest.raises(ValueError, match="max_rows"):
    collect_embeddings(_Frames(), [], 1.0, max_rows=0)
