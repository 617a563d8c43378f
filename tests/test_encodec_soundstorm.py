"""The imported EnCodec (the committed tiny 24 kHz, 75 Hz checkpoint) in the
project's jobs: the tokenization job makes its codes beside a tiny random
16 kHz, 25 Hz semantic tokenizer, and a tiny SoundStorm trains on them."""
import json
import os
import pathlib

import gin
import pytest

from soundlm import train
from soundlm.data import tasks, tokenize
from soundlm.io import shards

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "encodec" / "reflect"
TRAIN = ["--gin_file=gin/runs/soundstorm_tiny.gin", "--gin_file=gin/data/soundstorm_tokens.gin"]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
  """The built-in speech corpus (16 kHz, resampled to the codec's 24 kHz) tokenized."""
  out = str(tmp_path_factory.mktemp("tokens"))
  tokenize.main(["--source=builtin:speech", "--split=validation",
                 f"--data_dir={tmp_path_factory.mktemp('tfds')}", f"--out={out}",
                 f"--codec=hf:{FIXTURE}", "--semantic=tiny", "--allow_resample",
                 "--bucket_seconds=6.0", "--examples_per_shard=16", "--host_index=0",
                 "--num_hosts=1", "--no_progress"])
  return out


def test_tokenization_job_writes_encodec_codes_at_three_frames_per_token(tokens):
  manifest = shards.read_manifest(tokens)
  spec = shards.spec_of(manifest)
  assert (spec.sample_rate, spec.codec_frame_rate, spec.semantic_frame_rate) == (24_000, 75, 25)
  assert (spec.frames_per_semantic, spec.num_levels, spec.codebook_size) == (3, 4, 16)
  assert manifest["splits"]["validation"]["num_examples"] == 9
  with pytest.raises(ValueError, match=r"frames_per_semantic=2 but token shards .* have 3 "
                                       r"\(75 Hz codec frames per 25 Hz semantic token\)"):
    tasks.soundstorm_task(tokens={"speech": tokens}, num_levels=4, codebook_size=16,
                          semantic_vocab=64, crop_seconds=1.28, frames_per_semantic=2)


def test_tiny_soundstorm_learns_on_encodec_tokens(tokens, tmp_path):
  workdir = str(tmp_path / "soundstorm")
  bindings = [f"TOKENS = {{'speech': '{tokens}'}}", "soundstorm_levels = 4",
              "soundstorm_codes = 16", "soundstorm_semantic = 64",
              "SoundStormConfig.frames_per_semantic_token = 3",
              "soundlm.data.soundstorm_task.frames_per_semantic = 3",
              "soundlm.data.TaskData.split = 'validation'",
              "Trainer.num_steps = 15", "Trainer.log_every = 5", "Trainer.eval_every = 1000",
              "Trainer.checkpoint_every = 1000"]
  gin.clear_config()
  try:
    assert train.main([*TRAIN, f"--workdir={workdir}",
                       *(f"--gin_bindings={b}" for b in bindings)]) == 0
  finally:
    gin.clear_config()
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    losses = [r["train/model/loss"] for r in map(json.loads, f) if "train/model/loss" in r]
  assert len(losses) == 3, losses
  # Uniform guessing over 16 codes costs log(16) = 2.77 nats.
  assert losses[-1] < 0.8 * losses[0], losses
