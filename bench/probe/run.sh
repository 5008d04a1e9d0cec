#!/usr/bin/env bash
# Bisect an HF parity gap on the GPU machine: variant configs of a base model, each with its own
# transformers reference, our teacher-forced parity per variant, and per-position profiles.
#   bash bench/probe/run.sh bench/models/llama-3.1-8b/config.json
set -uo pipefail
source .device/env.sh
for f in .carry1/*.xz; do xz -dkf "$f"; done
chmod +x .carry1/cuda_engine .carry1/kernels 2>/dev/null
cp .carry1/cuda.node radixlm.linux-x64-gnu-cuda.node
python3 bench/probe/variants.py "$1" /tmp/var > /dev/null
for v in $(ls /tmp/var); do
  [ -f /tmp/ck-$v/reference.json ] || python3 scripts/gpu_reference.py --config /tmp/var/$v --out /tmp/ck-$v --lens 1,37,128,300 > /tmp/ref-$v.log 2>&1
  echo "== $v"
  RADIXLM_CUDA_TESTS=1 RADIXLM_PARITY_MODELS=/tmp/ck-$v timeout 90 .carry1/cuda_engine hf_parity --nocapture 2>&1 | grep "max |d|" | sed 's/.*prompt/prompt/' | cut -c1-170
  timeout 60 node bench/probe/positions.mjs /tmp/ck-$v 2>&1 | tail -4
done
