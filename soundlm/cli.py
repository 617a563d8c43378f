"""The `soundlm` command: one entry point with a subcommand per job.

    soundlm train --gin_file=gin/runs/lm_tiny.gin --gin.Trainer.num_steps=50 --workdir=/tmp/run
    soundlm tokenize --help
    soundlm generate --prompt=speech.wav --duration=4 --output=out.wav ...
    soundlm decode --manifest=items.jsonl --output_dir=out ...
    soundlm bench runtime --size tiny
    soundlm compile --topology v4-128 --program soundstorm_train
    soundlm eval --codec=/tmp/codec --out=/tmp/eval
    soundlm quickstart

Each subcommand runs the same code as its `python -m` module.
"""
import importlib
import sys

SUBCOMMANDS = {
    "train": ("soundlm.train", "train a model chosen in gin"),
    "tokenize": ("soundlm.data.tokenize", "write semantic and acoustic token shards"),
    "generate": ("soundlm.generate", "continue one prompt (or none) into audio"),
    "decode": ("soundlm.decode", "the batched decode job over a manifest"),
    "quickstart": ("soundlm.quickstart", "train tiny models of everything and generate"),
    "compile": ("soundlm.compile", "compile programs for a TPU slice without one: "
                "memory, FLOPs, fit"),
    "eval": ("soundlm.evaluate", "evaluate work dirs: codec quality vs kbps, semantic ABX, "
             "held-out LM loss, generation"),
}
BENCHMARKS = ("runtime", "codec", "audiolm", "train", "soundstorm", "semantic", "input")


def _usage() -> str:
  lines = ["usage: soundlm <command> [args...]  (soundlm <command> --help for more)", ""]
  lines += [f"  {name:<11} {about}" for name, (_, about) in SUBCOMMANDS.items()]
  lines.append(f"  {'bench':<11} benchmarks: {', '.join(BENCHMARKS)}")
  return "\n".join(lines)


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help"):
    print(_usage())
    return 0 if argv else 2
  command, rest = argv[0], argv[1:]
  if command == "bench":
    if not rest or rest[0] not in BENCHMARKS:
      print(f"usage: soundlm bench {{{','.join(BENCHMARKS)}}} [args...]", file=sys.stderr)
      return 2
    module, rest = f"soundlm.bench.{rest[0]}", rest[1:]
  elif command in SUBCOMMANDS:
    module = SUBCOMMANDS[command][0]
  else:
    print(f"soundlm: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
    return 2
  sys.argv = [f"soundlm {command}", *rest]
  result = importlib.import_module(module).main(rest)
  return result if isinstance(result, int) else 0


if __name__ == "__main__":
  sys.exit(main())
