#!/usr/bin/env bash
# Runs the runtime, codec, AudioLM decode and training benchmarks on this machine's
# accelerator, then regenerates BENCHMARKS.md's tables from their JSON.
# Usage: bash launch/bench.sh [OUT_DIR]               measure into OUT_DIR, then regenerate
#        bash launch/bench.sh --regenerate [OUT_DIR]  only regenerate, from OUT_DIR's JSON
#        add --dry_run to print the commands instead of running them.
# OUT_DIR defaults to benchmarks/<platform>-<size> (e.g. benchmarks/gpu-paper);
# commit it with BENCHMARKS.md, which links its plot. Each report fills the
# BENCHMARKS.md block named after its platform, size and batch:
# <platform>-<size>:runtime, ...:runtime-batch8, ...:codec, ...:audiolm and ...:train;
# blocks missing for this platform and size (a first run on a TPU) are appended.
# Environment:
#   SOUNDLM_JAX_EXTRA=cuda12 (or tpu)    accelerator jaxlib, installed by launch/env.sh
#   SOUNDLM_BENCH_SIZE=paper             model size: paper, or tiny (CPU smoke run)
#   SOUNDLM_BENCH_TRAIN_BATCH="8 16 32"  training batches (SoundStorm, AudioLM coarse)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DRY_RUN=0
REGENERATE=0
OUT=""
for arg in "$@"; do
  case "$arg" in
    --dry_run) DRY_RUN=1 ;;
    --regenerate) REGENERATE=1 ;;
    -*) echo "unknown option $arg" >&2; exit 2 ;;
    *) OUT="$arg" ;;
  esac
done
SIZE="${SOUNDLM_BENCH_SIZE:-paper}"
case "$SIZE" in
  paper) LONGEST=30; TRAIN_BATCH="${SOUNDLM_BENCH_TRAIN_BATCH:-8 16 32}" ;;
  tiny) LONGEST=3; TRAIN_BATCH="${SOUNDLM_BENCH_TRAIN_BATCH:-4 8}" ;;
  *) echo "SOUNDLM_BENCH_SIZE must be paper or tiny, got $SIZE" >&2; exit 2 ;;
esac
# shellcheck disable=SC2206
TRAIN_BATCH=($TRAIN_BATCH)

run() {  # Prints the command; runs it unless --dry_run.
  printf '+'; printf ' %q' "$@"; echo
  if [ "$DRY_RUN" = 0 ]; then "$@"; fi
}

if [ -z "$OUT" ] && [ "$REGENERATE" = 1 ]; then
  echo "--regenerate needs the OUT_DIR that holds the reports" >&2; exit 2
fi
PLATFORM="<platform>"
if [ "$DRY_RUN" = 0 ]; then
  source launch/env.sh
  if [ "$REGENERATE" = 1 ]; then
    # The blocks are named after where the reports were measured, not this machine.
    read -r PLATFORM SIZE < <(python -c 'import json, sys
report = json.load(open(sys.argv[1]))
print(report["environment"]["platform"], report["size"])' "$OUT/runtime/runtime.json")
  else
    PLATFORM="$(python -c 'import jax; print(jax.devices()[0].platform)')"
  fi
fi

add_blocks() {  # Appends empty BENCHMARKS.md blocks for a platform and size that has none.
  local prefix="$1" title
  if grep -q "^<!-- BEGIN $prefix:" BENCHMARKS.md; then return 0; fi
  echo "+ add the $prefix blocks to BENCHMARKS.md"
  if [ "$DRY_RUN" = 1 ]; then return 0; fi
  {
    printf '\n## %s results (%s size)\n\nFilled by `bash launch/bench.sh` on %s.\n' \
      "${prefix%-*}" "${prefix##*-}" "${prefix%-*}"
    for block in "runtime:Generation, batch 1" "runtime-batch8:Generation, batch 8" \
                 "codec:Codec" "audiolm:AudioLM decode steps" "train:Training"; do
      title="${block#*:}"
      printf '\n### %s\n\n<!-- BEGIN %s:%s -->\nNot measured yet.\n<!-- END %s:%s -->\n' \
        "$title" "$prefix" "${block%%:*}" "$prefix" "${block%%:*}"
    done
  } >> BENCHMARKS.md
}
OUT="${OUT:-benchmarks/$PLATFORM-$SIZE}"
if [ "$REGENERATE" = 0 ] && [ "$PLATFORM" = cpu ] && [ "$SIZE" = paper ]; then
  echo "no accelerator found (jax sees only the CPU): paper-size benchmarks would take" \
       "hours. Set SOUNDLM_JAX_EXTRA=cuda12 (or tpu), or SOUNDLM_BENCH_SIZE=tiny." >&2
  exit 1
fi
if [ "$REGENERATE" = 0 ]; then
  run python -m soundlm.bench.runtime --size "$SIZE" --batch 1 --out_dir "$OUT/runtime"
  run python -m soundlm.bench.runtime --size "$SIZE" --batch 8 --seconds "$LONGEST" \
    --out_dir "$OUT/runtime_batch8"
  run python -m soundlm.bench.codec --size "$SIZE" --batch 1 32 --out_dir "$OUT/codec"
  run python -m soundlm.bench.audiolm --size "$SIZE" --batch 1 8 64 --out_dir "$OUT/audiolm"
  run python -m soundlm.bench.train --size "$SIZE" --model soundstorm coarse \
    --batch "${TRAIN_BATCH[@]}" --out_dir "$OUT/train"
fi
add_blocks "$PLATFORM-$SIZE"
run python -m soundlm.bench.runtime --from_json "$OUT/runtime/runtime.json" \
  --markdown BENCHMARKS.md
run python -m soundlm.bench.runtime --from_json "$OUT/runtime_batch8/runtime.json" \
  --markdown BENCHMARKS.md
run python -m soundlm.bench.codec --from_json "$OUT/codec/codec.json" --markdown BENCHMARKS.md
run python -m soundlm.bench.audiolm --from_json "$OUT/audiolm/audiolm.json" \
  --markdown BENCHMARKS.md
run python -m soundlm.bench.train --from_json "$OUT/train/train.json" --markdown BENCHMARKS.md
