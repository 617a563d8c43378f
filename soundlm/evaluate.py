"""Evaluation entry point: `python -m soundlm.evaluate` or `soundlm eval`.

    soundlm eval --codec=runs/codec --out=eval/codec        # ViSQOL/PESQ/STOI vs kbps
    soundlm eval --codec=hf:/models/encodec_24khz,6.0 --max_clips=3 --levels=2,4,8
    soundlm eval --semantic=runs/w2v_bert,runs/kmeans.npz     # content and speaker ABX
    soundlm eval --tokens=runs/tokens/speech --semantic_stage=runs/semantic_stage \\
        --coarse_stage=runs/coarse_stage --fine_stage=runs/fine_stage --soundstorm=runs/soundstorm
    soundlm eval runs/codec runs/coarse_stage --tokens=...    # suites picked by model family
    soundlm eval --gin_file=my_eval.gin --gin.evaluate.max_clips=2

Suites (docs/evaluation.md says what each figure means):
* codec: one row per number of RVQ levels on held-out speech (the built-in
  validation clips, or --clips_dir), plus silence, noise and delayed-input
  baselines (`soundlm.evaluation.codec`).
* semantic: content and speaker ABX of a semantic tokenizer
  (`soundlm.evaluation.semantic`).
* lm: held-out loss and accuracy per AudioLM stage and SoundStorm, per RVQ
  level, on token shards (`soundlm.evaluation.lm`).
* generation: figures of generated continuations from the whole pipeline
  (`soundlm.evaluation.generation`); run only when asked for.

Without --suite, every suite whose models are given runs (generation only
when named). Every setting is an argument of the gin-configurable `evaluate`:
flags given on the command line win over gin bindings. The tables are printed
and written with every figure to <out>/eval.md and <out>/eval.json.

Exit status: 0 when done, 2 for bad flags, gin or input (a missing work dir,
a model of the wrong family, clips at another sample rate, ...).
"""
import argparse
import logging
import os
import sys
import time

import gin

from soundlm import gin_utils
from soundlm.evaluation import baselines as baselines_lib
# Imported before gin parses: it registers the generation pipeline's configurables.
from soundlm.evaluation import generation as generation_lib
from soundlm.evaluation import metrics as metrics_lib
from soundlm.evaluation import workdirs as workdir_checks

SUITES = ("codec", "semantic", "lm", "generation")
_GIN_SUFFIX = "\n  In call to configurable"
STAGE_FLAGS = {"semantic": "semantic_stage", "coarse": "coarse_stage", "fine": "fine_stage"}


def _split_list(value):
  if value is None or isinstance(value, (list, tuple)):
    return value
  return [v.strip() for v in str(value).split(",") if v.strip()]


def assign_workdirs(paths, given: dict, kmeans: str | None) -> dict:
  """The model flags that positional work dirs fill, by the family each records."""
  assigned = {}
  for path in paths:
    family = workdir_checks.family(path, "work dir")
    if family == "soundstream":
      flag = "codec"
    elif family == "w2v_bert":
      if kmeans is None:
        raise ValueError(f"work dir {path} holds a w2v-BERT model: give its k-means file "
                         "(--kmeans) to evaluate its tokens")
      flag, path = "semantic", f"{path},{kmeans}"
    elif family == "audiolm":
      from soundlm import models
      flag = STAGE_FLAGS[models.read_config(path, "audiolm").layout.stage]
    else:
      flag = "soundstorm"
    if given.get(flag) is not None or flag in assigned:
      raise ValueError(f"work dir {path} would be the {flag} model, which is already given")
    assigned[flag] = path
  return assigned


def load_clips(clips_dir: str | None, max_clips: int | None):
  """Held-out 16 kHz clips: the built-in validation speech, or a folder's files."""
  from soundlm.io import audio, corpus
  if max_clips is not None and max_clips < 1:
    raise ValueError(f"max_clips must be >= 1, got {max_clips}")
  if clips_dir is None:
    return corpus.load_builtin("validation", kind="speech", max_clips=max_clips)
  if not os.path.isdir(clips_dir):
    raise FileNotFoundError(f"clips_dir {clips_dir} does not exist")
  names = audio.list_audio_files(clips_dir)[:max_clips]
  if not names:
    raise FileNotFoundError(f"clips_dir {clips_dir}: no audio files "
                            f"({', '.join(audio.AUDIO_EXTENSIONS)})")
  clips = []
  for name in names:
    path = os.path.join(clips_dir, name)
    wav, rate = audio.read_audio(path, metrics_lib.SAMPLE_RATE)
    clips.append(corpus.Clip(name, wav, rate, "", "", {}, path))
  return clips


def _suites(suites, codec, semantic, stages: dict, soundstorm) -> list[str]:
  if suites is None:
    present = {"codec": codec, "semantic": semantic,
               "lm": any(stages.values()) or soundstorm}
    chosen = [s for s in SUITES if present.get(s)]
    if not chosen:
      raise ValueError("nothing to evaluate: give a model (--codec, --semantic, "
                       "--semantic_stage/--coarse_stage/--fine_stage, --soundstorm or "
                       "work dirs)")
    return chosen
  suites = _split_list(suites)
  unknown = sorted(set(suites) - set(SUITES))
  if unknown or not suites:
    raise ValueError(f"suites {unknown or 'none given'}: choose among {', '.join(SUITES)}")
  return [s for s in SUITES if s in suites]


@gin.configurable(denylist=["out_dir"])
def evaluate(out_dir: str, *, suites=None, workdirs=(), codec: str | None = None,
             semantic: str | None = None, kmeans: str | None = None,
             semantic_layer: int | None = None, num_clusters: int = 1024,
             semantic_stage: str | None = None, coarse_stage: str | None = None,
             fine_stage: str | None = None, soundstorm: str | None = None, tokens=None,
             split: str = "validation", clips_dir: str | None = None,
             max_clips: int | None = None, levels=None, metrics=metrics_lib.METRICS,
             baselines=baselines_lib.BASELINES, batch_size: int = 8, seed: int = 0,
             soundstorm_crop_seconds: float | None = None, progress: bool = True) -> dict:
  """Runs the chosen suites, writes <out_dir>/eval.{json,md}; returns {suite: result}."""
  from soundlm.evaluation import report

  models_given = dict(codec=codec, semantic=semantic, semantic_stage=semantic_stage,
                      coarse_stage=coarse_stage, fine_stage=fine_stage, soundstorm=soundstorm)
  models_given.update(assign_workdirs(workdirs, models_given, kmeans))
  codec, semantic, soundstorm = (models_given[k] for k in ("codec", "semantic", "soundstorm"))
  stages = {stage: models_given[flag] for stage, flag in STAGE_FLAGS.items()}
  chosen = _suites(suites, codec, semantic, stages, soundstorm)
  metrics_lib.check_metrics(_split_list(metrics))
  unknown = sorted(set(_split_list(baselines)) - set(baselines_lib.BASELINES))
  if unknown:
    raise ValueError(f"baselines {unknown}: choose among {', '.join(baselines_lib.BASELINES)}")
  settings = dict(suites=chosen, **models_given, tokens=tokens, split=split,
                  clips_dir=clips_dir, max_clips=max_clips, levels=_split_list(levels),
                  metrics=_split_list(metrics), baselines=_split_list(baselines),
                  batch_size=batch_size, seed=seed)
  results = {}
  for suite in chosen:
    start = time.time()
    logging.info("suite %s", suite)
    if suite == "codec":
      results[suite] = _codec_suite(settings, progress)
    elif suite == "semantic":
      results[suite] = _semantic_suite(settings, semantic_layer, num_clusters)
    elif suite == "lm":
      results[suite] = _lm_suite(settings, stages, soundstorm_crop_seconds, progress)
    else:
      results[suite] = _generation_suite(settings, stages)
    results[suite]["seconds"] = time.time() - start
  print(report.save(out_dir, results, settings))
  print(f"wrote eval.json and eval.md to {out_dir}")
  return results


def _codec_suite(settings: dict, progress: bool) -> dict:
  from soundlm.codec.api import Codec
  from soundlm.evaluation.codec import evaluate_codec

  spec = settings["codec"]
  if spec is None:
    raise ValueError("the codec suite needs a codec (--codec=WORKDIR, hf:DIR[,KBPS] or a "
                     "size name for random weights)")
  if not spec.startswith("hf:") and ("/" in spec or spec.startswith(".")):
    workdir_checks.check(spec, "soundstream", "--codec")
  codec = Codec.from_spec(spec)
  clips = load_clips(settings["clips_dir"], settings["max_clips"])
  result = evaluate_codec(codec, clips, levels=settings["levels"],
                          metrics=settings["metrics"], baselines=settings["baselines"],
                          batch_size=settings["batch_size"], seed=settings["seed"],
                          progress=progress)
  result["source"] = spec
  return result


def _semantic_suite(settings: dict, layer: int | None, num_clusters: int) -> dict:
  from soundlm.evaluation.semantic import evaluate_semantic, load_tokenizer

  if settings["semantic"] is None:
    raise ValueError("the semantic suite needs a tokenizer (--semantic=WORKDIR,KMEANS, "
                     "hf:DIR,KMEANS or hf:DIR with --semantic_layer)")
  if settings["clips_dir"] is not None:
    raise ValueError("the semantic suite scores the built-in validation speech (ABX needs "
                     "each clip's sentence and voice); clips_dir is for the codec suite")
  from soundlm.io import corpus
  tokenizer = load_tokenizer(settings["semantic"], layer=layer, num_clusters=num_clusters,
                             seed=settings["seed"])
  return evaluate_semantic(tokenizer, corpus.load_builtin("validation", kind="speech",
                                                          max_clips=settings["max_clips"]))


def _lm_suite(settings: dict, stages: dict, crop_seconds, progress: bool) -> dict:
  from soundlm.evaluation import lm

  if settings["tokens"] is None:
    raise ValueError("the lm suite needs token shards (--tokens=DIR, or {'corpus': DIR} in "
                     "gin) with a held-out split")
  if not any(stages.values()) and settings["soundstorm"] is None:
    raise ValueError("the lm suite needs a model: --semantic_stage, --coarse_stage, "
                     "--fine_stage or --soundstorm")
  common = dict(split=settings["split"], batch_size=settings["batch_size"],
                seed=settings["seed"], progress=progress)
  results = []
  for stage, flag in STAGE_FLAGS.items():
    if stages[stage] is not None:
      results += lm.evaluate_stage(stages[stage], settings["tokens"], flag=f"--{flag}",
                                   **common)
  if settings["soundstorm"] is not None:
    results += lm.evaluate_soundstorm(settings["soundstorm"], settings["tokens"],
                                      crop_seconds=crop_seconds, **common)
  return {"suite": "lm", "split": settings["split"], "models": results}


def _generation_suite(settings: dict, stages: dict) -> dict:
  """The whole pipeline's continuations of held-out speech (`evaluate_generation`)."""
  w2v_bert, _, kmeans = (settings["semantic"] or "").partition(",")
  missing = [f"--{flag}" for stage, flag in STAGE_FLAGS.items() if stages[stage] is None]
  missing += [] if settings["codec"] else ["--codec"]
  missing += [] if kmeans and not w2v_bert.startswith("hf:") else ["--semantic=WORKDIR,KMEANS"]
  if missing:
    raise ValueError(f"the generation suite runs the whole pipeline: give {', '.join(missing)}")
  result = generation_lib.evaluate_generation(
      {"codec_workdir": settings["codec"], "w2v_bert_workdir": w2v_bert, "kmeans_path": kmeans,
       "semantic_workdir": stages["semantic"], "coarse_workdir": stages["coarse"],
       "fine_workdir": stages["fine"], "soundstorm_workdir": settings["soundstorm"]},
      max_prompts=settings["max_clips"], seed=settings["seed"])
  return {"suite": "generation", **result}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  gin_utils.add_flags(parser)
  parser.add_argument("workdirs", nargs="*",
                      help="training work dirs; each fills --codec, --semantic (with "
                           "--kmeans), a --*_stage or --soundstorm by the family it records")
  parser.add_argument("--out", default="outputs/eval", help="folder for eval.json and eval.md")
  flags = parser.add_argument_group("evaluate", "each flag overrides the gin binding "
                                    "evaluate.<name>")
  flags.add_argument("--suite", dest="suites", help=f"comma-separated: {', '.join(SUITES)}")
  flags.add_argument("--codec", help="codec work dir, hf:DIR[,KBPS|,levels=N], or a size "
                     "name (random weights)")
  flags.add_argument("--semantic", help="WORKDIR,KMEANS, hf:DIR,KMEANS or hf:DIR")
  flags.add_argument("--kmeans", help="k-means file of a w2v-BERT work dir given positionally")
  flags.add_argument("--semantic_layer", type=int)
  flags.add_argument("--num_clusters", type=int, help="k-means fitted for hf:DIR alone")
  for flag in STAGE_FLAGS.values():
    flags.add_argument(f"--{flag}", help="AudioLM stage work dir")
  flags.add_argument("--soundstorm", help="SoundStorm work dir")
  flags.add_argument("--tokens", help="token shard folder (held-out split inside)")
  flags.add_argument("--split", help="held-out split of the token shards")
  flags.add_argument("--clips_dir", help="16 kHz audio files for the codec suite "
                     "(default: the built-in validation speech)")
  flags.add_argument("--max_clips", type=int)
  flags.add_argument("--levels", help="comma-separated RVQ level counts (default 1..Q)")
  flags.add_argument("--metrics", help=f"comma-separated: {', '.join(metrics_lib.METRICS)}")
  flags.add_argument("--baselines",
                     help=f"comma-separated: {', '.join(baselines_lib.BASELINES)} ('' none)")
  flags.add_argument("--batch_size", type=int)
  flags.add_argument("--seed", type=int)
  flags.add_argument("--soundstorm_crop_seconds", type=float)
  flags.add_argument("--no_progress", dest="progress", action="store_false", default=None)
  args = gin_utils.parse_args(parser, argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                      force=True)
  logging.getLogger("absl").setLevel(logging.WARNING)
  given = {name: value for name, value in vars(args).items()
           if value is not None and name not in (
               "gin_file", "gin_bindings", "gin_search_paths", "workdirs", "out")}
  for name in ("levels", "metrics", "baselines"):
    if name in given:
      given[name] = _split_list(given[name])
  if "levels" in given:
    try:
      given["levels"] = [int(q) for q in given["levels"]]
    except ValueError:
      parser.error(f"--levels: expected comma-separated integers, got {args.levels!r}")
  if args.workdirs:
    given["workdirs"] = args.workdirs
  try:
    gin_utils.parse_from_args(args)
    evaluate(args.out, **given)
  except (FileNotFoundError, ValueError, ImportError) as error:
    # gin appends the configurable's name to errors raised inside it.
    parser.exit(2, f"error: {str(error).split(_GIN_SUFFIX)[0]}\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
