"""The end-to-end pipeline and the batched decode job, with tiny random models."""
import json
import os

import numpy as np
import pytest
import soundfile

from soundlm import decode, partitioning
from soundlm.audiolm.api import AudioLM
from soundlm.generate import Pipeline

# Every test here shares one pipeline; xdist keeps them on one worker.
pytestmark = pytest.mark.xdist_group("pipeline")
PROMPT_SECONDS, DURATION = 0.5, 1.0


@pytest.fixture(scope="module")
def pipeline():
  return Pipeline.random("tiny", seed=0)


def _prompts(pipeline, batch, seconds=PROMPT_SECONDS, seed=0):
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * pipeline.sample_rate)) / pipeline.sample_rate
  tones = [0.3 * np.sin(2 * np.pi * (150 + 50 * i) * t) for i in range(batch)]
  return (np.stack(tones) + 0.01 * rng.standard_normal((batch, t.size))).astype(np.float32)


def _used_samples(pipeline, prompts):
  return prompts.shape[1] // pipeline.samples_per_semantic * pipeline.samples_per_semantic


@pytest.mark.parametrize("acoustic", ["soundstorm", "audiolm"])
def test_continuation_has_the_duration_and_starts_with_the_prompt(pipeline, acoustic):
  prompts = _prompts(pipeline, 2)
  audio = pipeline.generate(prompts, DURATION, rng=0, acoustic=acoustic)
  assert audio.shape == (2, int(DURATION * pipeline.sample_rate))
  assert audio.dtype == np.float32 and np.isfinite(audio).all()
  used = _used_samples(pipeline, prompts)
  np.testing.assert_array_equal(audio[:, :used], prompts[:, :used])
  assert np.abs(audio[:, used:]).max() > 0  # the continuation is generated, not silence


def test_without_keep_prompt_the_start_is_decoded_from_the_prompt_codes(pipeline):
  prompts = _prompts(pipeline, 1)
  audio = pipeline.generate(prompts, DURATION, rng=0, keep_prompt=False)
  used = _used_samples(pipeline, prompts)
  # The prompt's own codes are kept by the acoustic generator, so the start is
  # their decoding (a causal codec: later frames cannot change earlier samples).
  expected = np.asarray(pipeline.codec.decode(pipeline.codec.encode(prompts[:, :used])))
  np.testing.assert_allclose(audio[:, :used], expected, atol=1e-5)


def test_unconditional_generation_and_reproducible_rngs(pipeline):
  first = pipeline.generate(None, DURATION, rng=3, batch_size=2)
  again = pipeline.generate(None, DURATION, rng=3, batch_size=2)
  other = pipeline.generate(None, DURATION, rng=4, batch_size=2)
  assert first.shape == (2, int(DURATION * pipeline.sample_rate))
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)


def test_sharded_pipeline_equals_one_device(pipeline):
  mesh = partitioning.make_mesh(data=2, fsdp=1, tensor=-1)
  sharded = Pipeline.random("tiny", seed=0, mesh=mesh,
                            rules=partitioning.logical_axis_rules())
  prompts = _prompts(pipeline, 2, seed=1)
  for acoustic in ("soundstorm", "audiolm"):
    expected = pipeline.generate(prompts, DURATION, rng=5, acoustic=acoustic)
    np.testing.assert_allclose(sharded.generate(prompts, DURATION, rng=5, acoustic=acoustic),
                               expected, atol=1e-4)


@pytest.mark.parametrize("acoustic", ["soundstorm", "audiolm"])
def test_an_item_decodes_the_same_alone_or_in_any_batch(pipeline, acoustic):
  """Each decode item draws from its own seed: neither its batch companions, its
  position, the batch size nor padding change its audio (AudioLM stage 3
  stacks chunks of every item into one batch; SoundStorm samples all at once)."""
  items = [decode.Item(f"i{n}", None, DURATION, seed, (("acoustic", acoustic),))
           for n, seed in enumerate((11, 12, 13))]
  prompts = _prompts(pipeline, 3)
  together = pipeline.generate_items(items, list(prompts))
  reordered = pipeline.generate_items(items[::-1], list(prompts[::-1]))
  alone = pipeline.generate_items(items[1:2], [prompts[1]])
  # Same tokens; the codec's float sums may differ by round-off across batch shapes.
  np.testing.assert_allclose(together[1], alone[0], atol=1e-5)
  np.testing.assert_allclose(together, reordered[::-1], atol=1e-5)
  assert np.abs(together[0][-1000:] - together[1][-1000:]).max() > 1e-2


@pytest.mark.parametrize("kwargs, message", [
    (dict(duration=0.4), "not shorter than the requested output"),
    (dict(duration=1.01), "positive multiple of 0.04 s"),
    (dict(acoustic="vocoder"), "acoustic must be one of"),
    (dict(temperature=float("nan")), "temperature must be a finite number > 0"),
    (dict(prompts_dtype=np.int16), "must be float audio .* got int16"),
])
def test_bad_requests_are_refused(pipeline, kwargs, message):
  request = {"duration": DURATION, **kwargs}
  prompts = _prompts(pipeline, 1)
  if "prompts_dtype" in request:
    prompts = (prompts * 32767).astype(request.pop("prompts_dtype"))
  with pytest.raises(ValueError, match=message):
    pipeline.generate(prompts, request.pop("duration"), **request)


def test_missing_and_unreadable_prompt_files_are_clear_errors(pipeline, tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere.wav"):
    pipeline.load_prompt(str(tmp_path / "nowhere.wav"))
  junk = tmp_path / "junk.wav"
  junk.write_bytes(b"not audio at all")
  with pytest.raises(ValueError, match="junk.wav"):
    pipeline.load_prompt(str(junk))


def test_models_of_another_token_space_are_refused(pipeline):
  other = AudioLM.random("tiny", semantic_vocab=pipeline.tokenizer.vocab_size + 1,
                         codebook_size=pipeline.codec.codebook_size,
                         num_levels=pipeline.codec.num_levels, num_coarse_levels=2)
  with pytest.raises(ValueError, match="do not match AudioLM.s semantic stage.*semantic_vocab="):
    Pipeline(pipeline.codec, pipeline.tokenizer, other, pipeline.soundstorm)


def _write_manifest(path, lines):
  with open(path, "w") as f:
    for line in lines:
      f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")


class _Interrupt(BaseException):
  """Stands for a kill: not an error of the batch, so nothing catches it."""


def test_interrupted_manifest_run_writes_every_item_exactly_once(pipeline, tmp_path):
  prompt_path = str(tmp_path / "prompt.wav")
  soundfile.write(prompt_path, _prompts(pipeline, 1)[0], pipeline.sample_rate)
  lines = [{"id": f"p{i}", "prompt": prompt_path, "duration": DURATION, "seed": i}
           for i in range(5)]
  lines += [{"id": "free", "prompt": None, "duration": DURATION},
            {"id": "lost", "prompt": str(tmp_path / "missing.wav"), "duration": DURATION},
            '{"id": "broken", "duration": -1}']
  manifest = str(tmp_path / "items.jsonl")
  _write_manifest(manifest, lines)
  items = decode.parse_manifest(manifest)
  out = str(tmp_path / "out")
  calls = []

  def interrupted(batch, prompts):
    if len(calls) == 1:
      raise _Interrupt  # the job dies during its second batch
    calls.append([it.id for it in batch])
    return pipeline.generate_items(batch, prompts)

  with pytest.raises(_Interrupt):
    decode.run_job(items, interrupted, pipeline.load_prompt, out, pipeline.sample_rate,
                   batch_size=2)
  counts = decode.run_job(items, pipeline.generate_items, pipeline.load_prompt, out,
                          pipeline.sample_rate, batch_size=2)
  with open(os.path.join(out, "manifest-00000.jsonl")) as f:
    records = [json.loads(line) for line in f]
  ids = [r["id"] for r in records]
  assert sorted(ids) == sorted(["p0", "p1", "p2", "p3", "p4", "free", "lost", "broken"])
  assert len(ids) == len(set(ids))  # exactly once across both runs
  assert counts["skipped_done"] == 4  # two bad items and the first batch of two
  status = {r["id"]: r["status"] for r in records}
  assert status["lost"] == status["broken"] == "error"
  assert "missing.wav" in next(r["error"] for r in records if r["id"] == "lost")
  for name in ("p0", "p1", "p2", "p3", "p4", "free"):
    assert status[name] == "ok"
    wav, rate = soundfile.read(os.path.join(out, f"{name}.wav"))
    assert rate == pipeline.sample_rate and wav.shape == (int(DURATION * rate),)
  assert not [f for f in os.listdir(out) if f.endswith(".tmp.wav")]
