#!/usr/bin/env bash
# The GeoText run, stage by stage (in-house protocol: train on the official dev users minus a 15%
# validation carve-out, report on the official test users). Needs the corpus in ../shared/data/geotext.
#   bash scripts/run_geotext.sh [RUN_DIR]        (default runs/geotext)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
run=${1:-runs/geotext}
cfg=configs/geotext.yaml
geoae prepare  -c "$cfg" -o "$run/data"
geoae train    -c "$cfg" -d "$run/data" -o "$run/train" --stage pretrain
geoae train    -c "$cfg" -d "$run/data" -o "$run/train" --stage finetune
geoae evaluate --model "$run/train/model" --data "$run/data" --split test --out "$run/report"
