#!/usr/bin/env bash
# The GPU machine's part of bench/RESULTS.md, run from the repo root there with the built files carried
# (see bench/README.md): correctness first (kernel tests, parity with transformers), then timings with a
# transformers baseline measured in the same call. Logs and JSON go to $OUT, bundled at the end into
# $OUT/results.tgz (the device returns a limited number of files).
#   bench/gpu_run.sh qwen2.5-0.5b [full | quick | bench | tc | tcbench]
#     quick: tests only; bench: timings only; tc: the CUDA-core decode kernel (RADIXLM_DECODE_KERNEL=simt)
#     against the default tensor-core one: engine tests with it, then batch 1 and the big workload with
#     each kernel; tcbench: those timings only (the 8B's tc run does not fit one 600 s call)
set -uo pipefail
model=${1:-qwen2.5-0.5b}; mode=${2:-full}
ck=/tmp/ck-$model
mkdir -p "$OUT"
bundle() { (cd "$OUT" && tar czf /tmp/results.tgz --exclude results.tgz . && mv /tmp/results.tgz results.tgz); }
trap bundle EXIT
source .device/env.sh
for f in .carry1/*.xz; do xz -dkf "$f"; done
chmod +x .carry1/cuda_engine .carry1/kernels 2>/dev/null
cp .carry1/cuda.node radixlm.linux-x64-gnu-cuda.node
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
[ -f "$ck/reference.json" ] || python3 scripts/gpu_reference.py --config "bench/models/$model" --out "$ck" > "$OUT/reference.log" 2>&1
cp "$ck/reference.json" "$OUT/reference.json" 2>/dev/null

bench() {  # bench NAME ARGS...: one `radixlm bench` run, its summary lines echoed
  local name=$1; shift
  echo "== radixlm $name"
  timeout 300 node dist/cli.js bench --model "$ck" --device cuda --skip-tokenizer-init "$@" --output-json "$OUT/$name.json" > "$OUT/$name.log" 2>&1
  echo "rc $?"; grep -E "Decode throughput|Output token throughput|Total token throughput|duration|Median ITL|Median TTFT" "$OUT/$name.log"
}
latency=(--latency --input-len 256 --output-len 128 --runs 3)
r256=(--dataset random --num-prompts 256 --random-input-len 1024 --random-output-len 1024 --random-range-ratio 0.098)
r500=(--dataset random --num-prompts 500 --random-input-len 4096 --random-output-len 2048 --random-range-ratio 0)
if [ "$model" = llama-3.1-8b ]; then big=random500; bigargs=("${r500[@]}"); else big=random256; bigargs=("${r256[@]}"); fi

if [ "$mode" != bench ] && [ "$mode" != tcbench ]; then
  if [ "$model" != llama-3.1-8b ]; then
    echo "== kernels"; RADIXLM_CUDA_TESTS=1 .carry1/kernels --test-threads=1 --nocapture > "$OUT/kernels.log" 2>&1; echo "rc $?"
    grep -E "test result|FAILED|panicked|cases within|tensor cores" "$OUT/kernels.log" | head -20
  fi
  # SmolLM2 vs the CPU f32 path runs when its GGUF was carried to /tmp/smol.gguf beforehand (in parts:
  # it is over the carry limit).
  skip=""; [ -f /tmp/smol.gguf ] || skip="--skip smollm"
  [ "$model" = llama-3.1-8b ] && skip="--skip smollm --skip graphs"
  [ "$mode" = tc ] && export RADIXLM_DECODE_KERNEL=simt
  echo "== engine parity ${RADIXLM_DECODE_KERNEL:-}"
  RADIXLM_MODEL=/tmp/smol.gguf RADIXLM_CUDA_TESTS=1 RADIXLM_PARITY_MODELS=$ck .carry1/cuda_engine --test-threads=1 $skip --nocapture > "$OUT/engine.log" 2>&1; echo "rc $?"
  grep -E "max \|d\||test result|panicked|graphed|overlap|mixed|FAILED|decodeKernel" "$OUT/engine.log" | cut -c1-400 | head -24
fi
[ "$mode" = quick ] && exit 0

if [ "$mode" = tc ] || [ "$mode" = tcbench ]; then
  for k in tensor-cores simt; do
    RADIXLM_DECODE_KERNEL=$k bench "batch1-$k" "${latency[@]}"
    RADIXLM_DECODE_KERNEL=$k bench "$big-$k" "${bigargs[@]}"
  done
  exit 0
fi

echo "== transformers baseline"; python3 bench/hf_baseline.py --model "$ck" --batch 1,64 --input-len 256 --output-len 128 2>/dev/null | tee "$OUT/hf.jsonl"
bench latency "${latency[@]}"
bench latency-no-overlap "${latency[@]}" --disable-overlap-schedule
if [ "$model" = llama-3.1-8b ]; then
  bench random500 "${r500[@]}"
  exit 0
fi
bench bs64 --dataset random --num-prompts 64 --random-input-len 256 --random-output-len 128 --random-range-ratio 1
bench random256 "${r256[@]}"
bench random256-no-overlap "${r256[@]}" --disable-overlap-schedule
