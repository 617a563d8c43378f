#!/usr/bin/env bash
# The batched decode job on a Cloud TPU VM or pod slice: launch/tpu_pod.sh
# with --module=soundlm.decode (job name `decode`, so `--logs` and `--stop`
# reach it). Every worker runs `python -m soundlm.decode` on its share of the
# manifest (item i goes to host i mod hosts) and writes its own output
# manifest; a relaunch skips the items that any host's manifest already has.
#
# Usage:
#   bash launch/decode_tpu.sh --tpu=NAME --zone=ZONE [--project=P] \
#     [--accelerator_type=v4-32] [--dry_run] -- \
#     --gin_file=gin/generate/quickstart.gin --manifest=items.jsonl \
#     --output_dir=gs://BUCKET/decoded --batch_size=16
#   bash launch/decode_tpu.sh --tpu=NAME --zone=ZONE --logs   (or --stop)
# Model work dirs, the manifest, prompts and the output folder may be gs://
# URIs, which every worker reaches. Other options: launch/tpu_pod.sh --help.
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/tpu_pod.sh" --module=soundlm.decode "$@"
