"""Markdown tables of the suites' results, and the report files."""
import json
import math
import os

from soundlm.evaluation.metrics import HIGHER_IS_BETTER

METRIC_HEADERS = {"visqol": "ViSQOL", "pesq": "PESQ", "stoi": "STOI", "si_snr": "SI-SNR (dB)",
                  "mel_distance": "mel distance"}


def _number(value, spec: str = ".3f") -> str:
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "n/a"
  return format(value, spec)


def table(headers, rows) -> str:
  lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def codec_markdown(result: dict) -> str:
  codec = result["codec"]
  metrics = result["metrics"]
  headers = ["row", "kbps"] + [f"{METRIC_HEADERS[m]} {'↑' if HIGHER_IS_BETTER[m] else '↓'}"
                               for m in metrics]
  rows = []
  for row in result["rows"]:
    cells = []
    for m in metrics:
      figure = row["figures"][m]
      cell = _number(figure["mean"])
      if figure["undefined"] and figure["defined"]:
        cell += f" ({figure['undefined']} n/a)"
      cells.append(cell)
    name = row["name"] if row["kind"] == "codec" else f"baseline: {row['name']}"
    rows.append([name, _number(row["kbps"], ".2f")] + cells)
  delay_ms = 1000 * result["delay_samples"] / result["metric_sample_rate"]
  return "\n".join([
      f"## Codec: {codec['model']}, {codec['sample_rate']} Hz, {codec['num_levels']} levels "
      f"of {codec['codebook_size']} codes at {codec['frame_rate']:g} Hz", "",
      f"Mean over {len(result['clips'])} held-out clips ({result['seconds_of_audio']:.1f} s), "
      f"scored at {result['metric_sample_rate']} Hz"
      + (" (resampled from the codec's rate)" if result["resampled"] else "")
      + f". Baselines: silence, white noise at the input's RMS, the input delayed by one "
      f"codec frame ({delay_ms:.1f} ms). n/a: undefined for that output (silence).", "",
      table(headers, rows)])


def semantic_markdown(result: dict) -> str:
  tokenizer = result["tokenizer"]
  return "\n".join([
      f"## Semantic tokens: {tokenizer['source']} (layer {tokenizer['layer']}, "
      f"K={tokenizer['num_clusters']}, {result['clusters_used']} clusters used)", "",
      f"ABX on {len(result['clips'])} held-out clips; chance is 0.5.", "",
      table(["ABX", "triplets", "score"],
            [["content: same sentence, other voices ↑", result["content_triplets"],
              _number(result["content_abx"])],
             ["speaker: same voice, other words (low = speaker-independent)",
              result["speaker_triplets"], _number(result["speaker_abx"])]])])


def lm_markdown(result: dict) -> str:
  rows = []
  for model in result["models"]:
    rows.append([model["model"], model["corpus"], "all", model["targets"],
                 _number(model["loss"]), _number(model["accuracy"])])
    if len(model["levels"]) > 1:
      rows += [["", "", f"level {level['level']}", level["targets"], _number(level["loss"]),
                _number(level["accuracy"])] for level in model["levels"]]
  return "\n".join([
      f"## Language models: held-out loss and accuracy ({result['split']} split)", "",
      "Loss: mean cross-entropy in nats per target token; RVQ levels count from 0 "
      "(the coarsest).", "",
      table(["model", "corpus", "targets of", "targets", "loss ↓", "accuracy ↑"], rows)])


def generation_markdown(result: dict) -> str:
  flat = {k: v for k, v in result.items() if isinstance(v, (int, float, str)) and k != "suite"}
  return "\n".join(["## Generation", "", table(["figure", "value"],
                    [[k, _number(v) if isinstance(v, float) else v] for k, v in flat.items()])])


RENDERERS = {"codec": codec_markdown, "semantic": semantic_markdown, "lm": lm_markdown,
             "generation": generation_markdown}


def markdown(results: dict) -> str:
  """The tables of every suite in `results` ({suite: result})."""
  return "\n\n".join(RENDERERS[suite](result) for suite, result in results.items()) + "\n"


def _plain(value):
  """JSON-safe: numpy scalars as plain numbers, non-finite floats as null."""
  if isinstance(value, dict):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if hasattr(value, "item") and not isinstance(value, (str, bytes)):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def save(out_dir: str, results: dict, settings: dict) -> str:
  """Writes `eval.json` (settings and every figure) and `eval.md` (the tables)
  into `out_dir`; returns the tables."""
  text = "# soundlm eval\n\n" + markdown(results)
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "eval.json"), "w") as f:
    json.dump(_plain({"settings": settings, "results": results}), f, indent=2)
    f.write("\n")
  with open(os.path.join(out_dir, "eval.md"), "w") as f:
    f.write(text)
  return text
