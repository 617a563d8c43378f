"""The decode job against hostile manifests, torn output manifests and failing
batches, with a stand-in generator (the job's bookkeeping, not the models)."""
import json
import os

import numpy as np
import pytest
import soundfile

from soundlm import decode

RATE = 8000


def fake_generate(items, prompts):
  """Audio whose first sample encodes the item's seed: checks what was decoded."""
  del prompts
  return np.stack([np.full(int(it.duration * RATE), it.seed / 1000, np.float32)
                   for it in items])


def write_lines(path, lines):
  with open(path, "w") as f:
    for line in lines:
      f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")


def run(items, out, generate=fake_generate, batch_size=2):
  return decode.run_job(items, generate, lambda p: np.zeros(RATE, np.float32), str(out),
                        RATE, batch_size)


def records(out, name="manifest-00000.jsonl"):
  with open(os.path.join(out, name)) as f:
    return [json.loads(line) for line in f if line.endswith("\n")]


HOSTILE = {
    "unknown option": ({"id": "a", "duration": 1, "options": {"top_p": 0.9}}, "unknown options"),
    "colliding option": ({"id": "b", "duration": 1, "options": {"batch_size": 2}},
                         "unknown options"),
    "rng option": ({"id": "c", "duration": 1, "options": {"rng": 3}}, "unknown options"),
    "unhashable value": ({"id": "d", "duration": 1, "options": {"temperature": [1]}},
                         "temperature must be a finite number"),
    "nan temperature": ('{"id": "e", "duration": 1, "options": {"temperature": NaN}}',
                        "temperature must be a finite number"),
    "bad acoustic": ({"id": "f", "duration": 1, "options": {"acoustic": "wavenet"}},
                     "acoustic must be one of"),
    "negative seed": ({"id": "g", "duration": 1, "seed": -1}, "seed must be an integer"),
    "huge seed": ({"id": "h", "duration": 1, "seed": 2**40}, "seed must be an integer"),
    "float seed": ({"id": "i", "duration": 1, "seed": 1.9}, "seed must be an integer"),
    "infinite duration": ('{"id": "j", "duration": Infinity}', "duration must be a finite"),
    "boolean duration": ({"id": "k", "duration": True}, "duration must be a finite"),
    "number prompt": ({"id": "l", "duration": 1, "prompt": 3}, "prompt must be a file path"),
    "slash id": ({"id": "x/y", "duration": 1}, "not a safe file name"),
    "escaping id": ({"id": "../x/escaped", "duration": 1}, "not a safe file name"),
    "absolute id": ({"id": "/tmp/abs", "duration": 1}, "not a safe file name"),
    "empty id": ({"id": "", "duration": 1}, "not a safe file name"),
    "dots id": ({"id": "..", "duration": 1}, "not a safe file name"),
    "number id": ({"id": 7, "duration": 1}, "id must be a string"),
    "not an object": ("[1, 2]", "must be a JSON object"),
    "not json": ("{oops", "Expecting"),
}


def test_hostile_lines_are_recorded_and_the_rest_is_decoded(tmp_path):
  good = [{"id": "ok1", "duration": 0.5, "seed": 1},
          {"id": "ok2", "duration": 0.5, "seed": 2, "options": {"temperature": 0.7,
                                                                 "acoustic": "audiolm"}}]
  lines = [line for line, _ in HOSTILE.values()] + good
  write_lines(tmp_path / "items.jsonl", lines)
  items = decode.parse_manifest(str(tmp_path / "items.jsonl"))
  errors = [it for it in items if isinstance(it, decode.BadItem)]
  assert len(errors) == len(HOSTILE)
  for bad, (_, message) in zip(errors, HOSTILE.values()):
    assert message in bad.error, (bad, message)
  # A bad line with a valid id is recorded under that id, others under the line.
  assert errors[0].id == "a" and errors[12].id == "line000013"
  counts = run(items, tmp_path / "out")
  assert counts == {"items": len(lines), "skipped_done": 0, "ok": 2,
                    "errors": len(HOSTILE)}
  written = sorted(f for f in os.listdir(tmp_path / "out") if f.endswith(".wav"))
  assert written == ["ok1.wav", "ok2.wav"]
  assert not (tmp_path / "x").exists() and not os.path.exists("/tmp/abs.wav")
  status = {r["id"]: r["status"] for r in records(tmp_path / "out")}
  assert status["ok1"] == status["ok2"] == "ok" and status["a"] == "error"


def test_a_torn_last_line_is_dropped_and_its_item_decoded_once(tmp_path):
  items = [decode.Item(f"i{n}", None, 0.25, n) for n in range(3)]
  out = tmp_path / "out"
  run(items[:2], out)
  manifest = out / "manifest-00000.jsonl"
  complete = manifest.read_bytes()
  torn = json.dumps({"id": "i2", "status": "ok"})[:17].encode()
  manifest.write_bytes(complete + torn)  # killed while appending i2's record
  counts = run(items, out)
  assert counts["skipped_done"] == 2 and counts["ok"] == 1
  assert manifest.read_bytes().startswith(complete)
  assert [r["id"] for r in records(out)] == ["i0", "i1", "i2"]
  wav, rate = soundfile.read(out / "i2.wav")
  assert rate == RATE and wav[0] == pytest.approx(0.002, abs=1e-4)


def test_a_corrupt_line_inside_the_output_manifest_is_named(tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "manifest-00000.jsonl").write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
  with pytest.raises(ValueError, match=r"manifest-00000.jsonl:2: unreadable record"):
    run([], out)


def test_a_failing_batch_fails_its_items_only_and_counts_add_up(tmp_path):
  items = [decode.Item(f"i{n}", None, 0.25, n) for n in range(5)]

  def flaky(batch, prompts):
    if any(it.id == "i2" for it in batch):
      raise TypeError("unexpected keyword")
    return fake_generate(batch, prompts)

  counts = run(items, tmp_path / "out", generate=flaky)
  assert counts == {"items": 5, "skipped_done": 0, "ok": 3, "errors": 2}
  failed = {r["id"]: r["error"] for r in records(tmp_path / "out") if r["status"] == "error"}
  assert failed == {"i2": "TypeError: unexpected keyword", "i3": "TypeError: unexpected keyword"}


def test_prompts_are_cut_to_whole_buckets_so_few_programs_compile(tmp_path):
  lengths = {"a": 9000, "b": 9500, "c": 12000, "d": 3000}
  items = [decode.Item(name, f"{name}.wav", 0.25, n) for n, name in enumerate(lengths)]
  shapes = []

  def generate(batch, prompts):
    shapes.append({p.shape for p in prompts})
    return fake_generate(batch, prompts)

  counts = decode.run_job(items, generate, lambda p: np.zeros(lengths[p[0]], np.float32),
                          str(tmp_path), RATE, batch_size=2, prompt_bucket=4000)
  assert counts["ok"] == 3 and counts["errors"] == 1
  assert sorted(tuple(s) for s in shapes) == [((8000,),), ((12000,),)]
  by_id = {r["id"]: r for r in records(tmp_path)}
  assert by_id["b"]["prompt_seconds"] == 1.0 and by_id["c"]["prompt_seconds"] == 1.5
  assert "shorter than one prompt bucket" in by_id["d"]["error"]


def test_a_restart_with_another_host_count_decodes_each_item_once(tmp_path):
  items = [decode.Item(f"i{n}", None, 0.25, n) for n in range(6)]
  out = str(tmp_path / "out")
  run_host = lambda items, host, hosts: decode.run_job(  # noqa: E731
      items, fake_generate, lambda p: None, out, RATE, 2, host, hosts)
  assert run_host(items, 0, 2)["ok"] == 3  # i0, i2, i4
  assert run_host(items[:4], 1, 2)["ok"] == 2  # i1, i3; then host 1 was lost
  other = os.path.join(out, "manifest-00001.jsonl")
  with open(other, "a") as f:
    f.write('{"id": "i5", "sta')  # host 1 killed while recording i5
  with open(other, "rb") as f:
    before = f.read()
  counts = run_host(items, 0, 1)  # restarted on one host
  assert counts == {"items": 6, "skipped_done": 5, "ok": 1, "errors": 0}
  ids = [r["id"] for name in ("manifest-00000.jsonl", "manifest-00001.jsonl")
         for r in records(out, name)]
  assert sorted(ids) == [f"i{n}" for n in range(6)]
  with open(other, "rb") as f:
    assert f.read() == before  # another host's manifest is only read
