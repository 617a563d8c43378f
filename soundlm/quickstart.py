"""The quickstart main job: every model trained small on the built-in corpus,
then speech and piano continuations, in one output folder.

    python -m soundlm.quickstart [--out outputs/quickstart]

Steps (each a real entry point run as its own process; a step whose outputs
exist is skipped, so an interrupted job resumes):
codec -> w2v-BERT -> k-means -> token shards (speech, piano) -> AudioLM
stages 1, 2, 3 -> SoundStorm -> generation (speech continuations with
SoundStorm and with AudioLM stages 2+3, a piano continuation, and each
prompt's clip resynthesised by the codec alone) -> evaluation -> report.
The output folder gets the audio, spectrograms of prompt + continuation,
`report.md` (the codec's figures on held-out speech beside silence, noise and
one-frame-delayed baselines, speaker similarity and synthetic-speech
detection of the continuations, which stage limits the quality, final
losses, compile and generation times), `eval.json` and `eval.md` (as
`soundlm eval` writes them), and each run's work dir.
"""
import argparse
import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
import time

import numpy as np

from soundlm import trainer
from soundlm.evaluation import report as report_lib
from soundlm.io import corpus
from soundlm.io.audio import write_wav

# Lines of a step's log shown on the console: training progress, the
# tokenizer's shard counts, k-means results and Python's tracebacks and
# exception lines (anchored at the line start: libtpu's start-up message on a
# CPU host also holds "Error:" and is no error of the step's).
PROGRESS = re.compile(r"\bstep \d+/\d+|eval step|shards? |embeddings of|wrote "
                      r"|^Traceback|^[\w.]+(Error|Exception|Interrupt): ")


@dataclasses.dataclass(frozen=True)
class Step:
  name: str
  argv: tuple[str, ...]  # `python -m` arguments; {out} is the output folder
  done_when: str  # a path under the output folder that exists once the step is done


def _train(name: str, *gin_files: str, bindings: tuple[str, ...] = ()) -> Step:
  args = [f"--gin_file={f}" for f in gin_files] + [f"--gin_bindings={b}" for b in bindings]
  return Step(name, ("soundlm.train", *args, f"--workdir={{out}}/{name}"),
              f"{name}/DONE")


def _token_bindings() -> tuple[str, ...]:
  return ("TOKENS = {'speech': '{out}/tokens/speech', 'piano': '{out}/tokens/piano'}",)


STEPS = (
    _train("codec", "gin/quickstart/codec.gin"),
    _train("w2v_bert", "gin/quickstart/w2v_bert.gin"),
    Step("kmeans", ("soundlm.semantic.fit_kmeans", "--w2v_bert_workdir={out}/w2v_bert",
                    "--num_iters=20", "--out={out}/kmeans.npz"), "kmeans.npz"),
    *(Step(f"tokens_{kind}", ("soundlm.data.tokenize", f"--source=builtin:{kind}",
                              f"--out={{out}}/tokens/{kind}", "--codec={out}/codec",
                              "--semantic={out}/w2v_bert,{out}/kmeans.npz",
                              "--examples_per_shard=64", "--no_progress"),
           f"tokens/{kind}/manifest.json") for kind in ("speech", "piano")),
    _train("semantic_stage", "gin/quickstart/semantic_stage.gin", bindings=_token_bindings()),
    _train("coarse_stage", "gin/quickstart/coarse_stage.gin", bindings=_token_bindings()),
    _train("fine_stage", "gin/quickstart/fine_stage.gin", bindings=_token_bindings()),
    _train("soundstorm", "gin/quickstart/soundstorm.gin", bindings=_token_bindings()),
)


def _environment() -> dict:
  env = dict(os.environ)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  env["PYTHONUNBUFFERED"] = "1"
  return env


def run_step(step: Step, out: str, timings: dict) -> None:
  marker = os.path.join(out, step.done_when)
  if os.path.exists(marker):
    logging.info("[%s] outputs exist: skipped", step.name)
    return
  argv = [a.replace("{out}", out) for a in step.argv]
  logging.info("[%s] python -m %s", step.name, " ".join(argv))
  start = time.time()
  process = subprocess.Popen([sys.executable, "-u", "-m", *argv], env=_environment(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  log_path = os.path.join(out, "logs", f"{step.name}.log")
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "w", buffering=1) as log:
    for line in process.stdout:
      log.write(line)
      if PROGRESS.search(line):
        print(f"  [{step.name}] {line.rstrip()[:160]}", flush=True)
  if process.wait() == trainer.PREEMPTED_EXIT_CODE:
    raise RuntimeError(f"step {step.name} was preempted after saving a checkpoint; run "
                       f"the quickstart again to resume it (see {log_path})")
  if process.returncode != 0:
    raise RuntimeError(f"step {step.name} failed (exit {process.returncode}); "
                       f"see {log_path}")
  if step.argv[0] == "soundlm.train":
    with open(marker, "w") as f:
      f.write("done\n")
  timings[step.name] = time.time() - start
  logging.info("[%s] done in %.0f s", step.name, timings[step.name])


def final_losses(out: str) -> dict[str, dict[str, float]]:
  """The last logged train and eval metrics of each training run."""
  losses = {}
  for step in STEPS:
    path = os.path.join(out, step.name, "metrics.jsonl")
    if not os.path.exists(path):
      continue
    last: dict[str, float] = {}
    with open(path) as f:
      for line in f:
        record = json.loads(line)
        last.update({k: v for k, v in record.items()
                     if "loss" in k or k.startswith("eval/")})
    losses[step.name] = last
  return losses


def spectrogram_png(path: str, audio: np.ndarray, sample_rate: int, prompt_seconds: float,
                    title: str) -> None:
  """Log-magnitude spectrogram with a line where the prompt ends."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  figure, axis = plt.subplots(figsize=(8, 3))
  axis.specgram(audio, NFFT=512, Fs=sample_rate, noverlap=384, cmap="magma")
  axis.axvline(prompt_seconds, color="cyan", linestyle="--", label="end of prompt")
  axis.set_xlabel("time (s)")
  axis.set_ylabel("frequency (Hz)")
  axis.set_title(title)
  axis.legend(loc="upper right")
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def validation_prompts(prompt_seconds: float, duration: float) -> dict[str, list]:
  """The held-out clips the generation step continues; raises before any
  training when the arguments or the corpus cannot give them."""
  if prompt_seconds <= 0:
    raise ValueError(f"--prompt_seconds must be positive, got {prompt_seconds}")
  if duration <= prompt_seconds:
    raise ValueError(f"--duration ({duration} s) must be longer than --prompt_seconds "
                     f"({prompt_seconds} s): the output is the prompt and its continuation")
  prompts = {}
  for kind, count in (("speech", 2), ("piano", 1)):
    clips = [c for c in corpus.load_builtin("validation", kind=kind)
             if c.waveform.size >= duration * c.sample_rate]
    if not clips:
      raise ValueError(f"the built-in {kind} validation split has no clip of --duration "
                       f"{duration} s or more")
    prompts[kind] = clips[:count]
  return prompts


def generate_examples(out: str, pipeline, prompts: dict, prompt_seconds: float,
                      duration: float) -> dict:
  """Speech continuations (SoundStorm and AR acoustic stages), a piano one,
  and each clip resynthesised by the codec (its first `duration` seconds
  encoded and decoded: what the codec alone makes of the input).

  Each generation runs twice: the first call compiles the decoding programs,
  the second is the generation time a user of a warm process sees."""
  rate = pipeline.sample_rate
  samples = int(prompt_seconds * rate)
  examples = {}
  for kind, acoustic in [("speech", "soundstorm"), ("speech", "audiolm"), ("piano", "soundstorm")]:
    clips = prompts[kind]
    batch = np.stack([c.waveform[:samples] for c in clips])
    start = time.time()
    pipeline.generate(batch, duration, rng=0, acoustic=acoustic)
    first_call = time.time() - start
    start = time.time()
    audio = pipeline.generate(batch, duration, rng=0, acoustic=acoustic)
    seconds = time.time() - start
    for clip, wav in zip(clips, audio):
      name = f"{kind}_{acoustic}_{clip.id}"
      write_wav(os.path.join(out, f"{name}.wav"), wav, rate)
      spectrogram_png(os.path.join(out, f"{name}.png"), wav, rate, prompt_seconds,
                      f"{kind} prompt ({clip.speaker}) + {acoustic} continuation")
      examples[name] = {"prompt": clip.path, "text": clip.text, "seconds": seconds,
                        "compile_seconds": max(first_call - seconds, 0.0),
                        "real_time_factor": seconds / (len(clips) * duration)}
  for clip in {c.id: c for clips in prompts.values() for c in clips}.values():
    wav = clip.waveform[:int(duration * rate) // pipeline.codec.hop_length
                        * pipeline.codec.hop_length]
    resynthesised = np.asarray(pipeline.codec.decode(pipeline.codec.encode(wav[None])))[0]
    write_wav(os.path.join(out, f"{clip.meta['kind']}_codec_{clip.id}.wav"), resynthesised,
              rate)
  return examples


def evaluate_outputs(pipeline, prompt_seconds: float, duration: float) -> dict:
  """The codec suite on held-out built-in speech (1 level and all, against
  the baselines) and the generation suite (speaker similarity, detector)."""
  from soundlm.evaluation import codec as codec_eval
  from soundlm.evaluation import generation

  clips = corpus.load_builtin("validation", kind="speech")
  codec = codec_eval.evaluate_codec(
      pipeline.codec, clips, levels=sorted({1, pipeline.codec.num_levels}),
      metrics=("pesq", "stoi", "si_snr", "mel_distance"), progress=False)
  return {"codec": codec, "generation": generation.evaluate_generation(
      pipeline, prompt_seconds=prompt_seconds, duration=duration)}


# The codec target of a useful resynthesis (issue tracker, docs/codec.md).
TARGET_SI_SNR_DB = 5.0
# Continuations within this of noise's speaker similarity keep no voice.
VOICE_MARGIN = 0.05


def limiting_stage(evaluation: dict) -> str:
  """Which stage limits the quality, from the evaluation's figures: the codec
  first (nothing downstream can sound better than its resynthesis), then
  whether the continuations keep the prompt's voice."""
  rows = {row["name"]: row["figures"] for row in evaluation["codec"]["rows"]}
  codec = rows[max((r for r in evaluation["codec"]["rows"] if r["kind"] == "codec"),
                   key=lambda r: r["levels"])["name"]]
  si_snr, mel = codec["si_snr"]["mean"], codec["mel_distance"]["mean"]
  delayed_mel = rows["delayed"]["mel_distance"]["mean"]
  if not si_snr > TARGET_SI_SNR_DB or not mel < delayed_mel:
    return (f"the codec: its resynthesis of held-out speech is at SI-SNR {si_snr:.1f} dB "
            f"(target > {TARGET_SI_SNR_DB:g} dB) and mel distance {mel:.3f} (the input "
            f"delayed by one frame: {delayed_mel:.3f}), so every continuation is decoded "
            "through a codec that does not yet reproduce its input")
  generation = evaluation["generation"]
  noise = generation["speaker/noise"]
  for name in ("soundstorm", "audiolm"):
    similarity = generation.get(f"speaker/{name}")
    if similarity is not None and similarity <= noise + VOICE_MARGIN:
      return (f"the token models: {name} continuations score speaker similarity "
              f"{similarity:.2f} to their prompts, no better than noise ({noise:.2f}; a real "
              f"continuation {generation['speaker/real_continuation']:.2f})")
  return ("the token models: the codec meets its target and the continuations keep the "
          "voice; the detector's accuracy on real vs generated speech is in the table")


def write_report(out: str, timings: dict, examples: dict, evaluation: dict) -> str:
  lines = ["# soundlm quickstart report", "",
           f"**What limits the quality now:** {limiting_stage(evaluation)}.", "",
           "Listen to `*_codec_*.wav` for what the codec alone makes of each prompt's clip.",
           "", report_lib.markdown(evaluation).rstrip(), "",
           "Speaker similarity is the cosine of voice embeddings of the prompt and the "
           "generated part; the detector is a classifier over codec tokens told real from "
           "generated continuations, scored on held-out prompts (0.5: cannot tell).", "",
           "## Final losses", "", "| run | metric | value |", "| --- | --- | --- |"]
  for run, metrics in final_losses(out).items():
    lines += [f"| {run} | {k} | {v:.4g} |" for k, v in sorted(metrics.items())]
  lines += ["", "## Timings (this invocation)", "", "| step | seconds |", "| --- | --- |"]
  lines += [f"| {name} | {seconds:.0f} |" for name, seconds in timings.items()]
  lines += ["", "## Generated audio", "",
            "| file | prompt | compile seconds | generation seconds | real-time factor |",
            "| --- | --- | --- | --- | --- |"]
  lines += [f"| {name}.wav ({name}.png) | {info['prompt']} | {info['compile_seconds']:.1f} | "
            f"{info['seconds']:.1f} | {info['real_time_factor']:.2f} |"
            for name, info in examples.items()]
  path = os.path.join(out, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default="outputs/quickstart", help="output folder")
  parser.add_argument("--prompt_seconds", type=float, default=1.0)
  parser.add_argument("--duration", type=float, default=3.0, help="seconds of output")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
  logging.getLogger("absl").setLevel(logging.WARNING)
  prompts = validation_prompts(args.prompt_seconds, args.duration)
  out = os.path.abspath(args.out)
  if os.path.exists(out) and not os.path.isdir(out):
    raise ValueError(f"--out {out} exists and is not a folder")
  os.makedirs(out, exist_ok=True)
  timings: dict[str, float] = {}
  start = time.time()
  for index, step in enumerate(STEPS, 1):
    logging.info("step %d/%d: %s", index, len(STEPS) + 1, step.name)
    run_step(step, out, timings)
  from soundlm import generate as generate_lib

  logging.info("step %d/%d: generation and evaluation", len(STEPS) + 1, len(STEPS) + 1)
  generation_start = time.time()
  pipeline = generate_lib.load_pipeline(
      codec_workdir=f"{out}/codec", w2v_bert_workdir=f"{out}/w2v_bert",
      kmeans_path=f"{out}/kmeans.npz", semantic_workdir=f"{out}/semantic_stage",
      coarse_workdir=f"{out}/coarse_stage", fine_workdir=f"{out}/fine_stage",
      soundstorm_workdir=f"{out}/soundstorm")
  examples = generate_examples(out, pipeline, prompts, args.prompt_seconds, args.duration)
  timings["generation"] = time.time() - generation_start
  evaluation_start = time.time()
  evaluation = evaluate_outputs(pipeline, args.prompt_seconds, args.duration)
  report_lib.save(out, evaluation, {"prompt_seconds": args.prompt_seconds,
                                    "duration": args.duration})
  timings["evaluation"] = time.time() - evaluation_start
  timings["total"] = time.time() - start
  report = write_report(out, timings, examples, evaluation)
  logging.info("what limits the quality now: %s", limiting_stage(evaluation))
  logging.info("done in %.0f s: %s", timings["total"], report)
  return 0


if __name__ == "__main__":
  sys.exit(main())
