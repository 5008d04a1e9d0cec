#!/usr/bin/env bash
# The GPU machine's part of bench/RESULTS.md, run from the repo root there with the built files carried
# (see bench/README.md): correctness first (kernel tests, parity with transformers), then timings with a
# transformers baseline measured in the same call. Logs and JSON go to $OUT.
#   bench/gpu_run.sh qwen2.5-0.5b [quick | bench]     quick: tests only; bench: timings only
set -uo pipefail
model=${1:-qwen2.5-0.5b}; mode=${2:-full}
ck=/tmp/ck-$model
mkdir -p "$OUT"
source .device/env.sh
for f in .carry1/*.xz; do xz -dkf "$f"; done
chmod +x .carry1/cuda_engine .carry1/kernels 2>/dev/null
cp .carry1/cuda.node radixlm.linux-x64-gnu-cuda.node
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
[ -f "$ck/reference.json" ] || python3 scripts/gpu_reference.py --config "bench/models/$model" --out "$ck" > "$OUT/reference.log" 2>&1
[ "$mode" = bench ] || [ "$model" = llama-3.1-8b ] || { echo "== kernels"; RADIXLM_CUDA_TESTS=1 .carry1/kernels --test-threads=1 > "$OUT/kernels.log" 2>&1; echo "rc $?"; grep -E "test result|FAILED|panicked" "$OUT/kernels.log" | head; }
# SmolLM2 vs the CPU f32 path runs when its GGUF was carried to /tmp/smol.gguf beforehand (in parts:
# it is over the carry limit).
skip=""; [ -f /tmp/smol.gguf ] || skip="--skip smollm"
[ "$model" = llama-3.1-8b ] && skip="--skip smollm --skip graphs"
[ "$mode" = bench ] || { echo "== engine parity"; RADIXLM_MODEL=/tmp/smol.gguf RADIXLM_CUDA_TESTS=1 RADIXLM_PARITY_MODELS=$ck .carry1/cuda_engine --test-threads=1 $skip --nocapture > "$OUT/engine.log" 2>&1; echo "rc $?"; grep -E "max \|d\||test result|panicked|graphed|overlap|FAILED" "$OUT/engine.log" | head -20; }
[ "$mode" = quick ] && exit 0
echo "== transformers baseline"; python3 bench/hf_baseline.py --model "$ck" --batch 1,64 --input-len 256 --output-len 128 2>/dev/null | tee "$OUT/hf.jsonl"
echo "== radixlm batch 1"; node dist/cli.js bench --model "$ck" --device cuda --skip-tokenizer-init --latency --input-len 256 --output-len 128 --runs 3 --output-json "$OUT/latency.json" > "$OUT/latency.log" 2>&1; echo "rc $?"; tail -25 "$OUT/latency.log"
echo "== radixlm batch 1, overlap off"; node dist/cli.js bench --model "$ck" --device cuda --skip-tokenizer-init --latency --input-len 256 --output-len 128 --runs 3 --disable-overlap-schedule --output-json "$OUT/latency-no-overlap.json" > "$OUT/latency-no-overlap.log" 2>&1; echo "rc $?"; tail -8 "$OUT/latency-no-overlap.log"
if [ "$model" = llama-3.1-8b ]; then
  echo "== radixlm 500 prompts, input <= 4096, output <= 2048"; timeout 300 node dist/cli.js bench --model "$ck" --device cuda --skip-tokenizer-init --dataset random --num-prompts 500 --random-input-len 4096 --random-output-len 2048 --random-range-ratio 0 --output-json "$OUT/random500.json" > "$OUT/random500.log" 2>&1; echo "rc $?"; tail -25 "$OUT/random500.log"
  exit 0
fi
echo "== radixlm batch 64 (same as the baseline)"; node dist/cli.js bench --model "$ck" --device cuda --skip-tokenizer-init --dataset random --num-prompts 64 --random-input-len 256 --random-output-len 128 --random-range-ratio 1 --output-json "$OUT/bs64.json" > "$OUT/bs64.log" 2>&1; echo "rc $?"; tail -25 "$OUT/bs64.log"
echo "== radixlm 256 prompts U[100,1024]"; node dist/cli.js bench --model "$ck" --device cuda --skip-tokenizer-init --dataset random --num-prompts 256 --random-input-len 1024 --random-output-len 1024 --random-range-ratio 0.098 --output-json "$OUT/random256.json" > "$OUT/random256.log" 2>&1; echo "rc $?"; tail -25 "$OUT/random256.log"
echo "== radixlm 256 prompts U[100,1024], overlap off"; node dist/cli.js bench --model "$ck" --device cuda --skip-tokenizer-init --dataset random --num-prompts 256 --random-input-len 1024 --random-output-len 1024 --random-range-ratio 0.098 --disable-overlap-schedule --output-json "$OUT/random256-no-overlap.json" > "$OUT/random256-no-overlap.log" 2>&1; echo "rc $?"; tail -8 "$OUT/random256-no-overlap.log"
