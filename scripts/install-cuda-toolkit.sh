#!/usr/bin/env bash
# Installs the slice of the CUDA 13.0 toolkit that crates/radixlm-cuda needs to build, from PyPI wheels
# (no root, no apt, no NVIDIA download site), then prints the `export` lines to use it.
#
#   scripts/install-cuda-toolkit.sh            # installs into $RADIXLM_CUDA_TOOLKIT_DIR or ~/.cache/radixlm/cu13
#   eval "$(scripts/install-cuda-toolkit.sh)"  # ... and puts nvcc on PATH in this shell
#
# Only what `nvcc -ptx` needs is installed: nvcc (driver, cudafe++, ptxas), nvvm (cicc + libdevice: the
# compiler proper), crt and runtime headers (cuda_runtime.h is included implicitly; cuda_bf16.h lives
# there). cccl (CUB / libcu++ headers, 3 MB) is not needed by today's kernels (checked: they build without
# it) but is what GPU sampling kernels (block scan / radix sort) will include; nvcc.profile expects it.
# 5 wheels, ~104 MB download, 271 MB installed.
# No libraries are installed: radixlm-cuda loads libcuda / libcublas at run time through cudarc's
# `dynamic-loading`, so nothing is linked at build time.
#
# Pinned to 13.0.x: driver 580 (CUDA 13.0) on the GPU machine cannot load PTX from a newer nvcc.
# Idempotent: a complete install (marker file with the same pins) is left alone. Progress goes to stderr,
# the export lines alone to stdout.
set -euo pipefail

PINS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
)

dir="${RADIXLM_CUDA_TOOLKIT_DIR:-$HOME/.cache/radixlm/cu13}"
home="$dir/nvidia/cu13"
marker="$dir/.radixlm-installed"
want="${PINS[*]}"

if [[ -f "$marker" && "$(cat "$marker")" == "$want" && -x "$home/bin/nvcc" ]]; then
  echo "CUDA toolkit already installed in $dir" >&2
else
  echo "installing CUDA toolkit (${PINS[*]}) into $dir" >&2
  rm -rf "$dir"
  mkdir -p "$dir"
  python3 -m pip install --quiet --no-deps --disable-pip-version-check --root-user-action=ignore --target "$dir" "${PINS[@]}" >&2
  # nvcc.profile expects the nvvm tree next to bin/; the wheels unpack it there already. Check the result
  # rather than trusting it, so a broken install never gets its marker.
  "$home/bin/nvcc" --version >&2
  echo "$want" >"$marker"
fi

echo "export CUDA_HOME=\"$home\""
echo "export PATH=\"$home/bin:\$PATH\""
