#!/usr/bin/env bash
# The GPU checks a session runs when its task is lent a device machine, as one prepared script.
#
# The device image has Python 3.12 with torch, transformers and tokenizers, but not pydantic, and it cannot fetch
# anything. So first, here (PyPI is reachable):
#     bash tools/device_check.sh --prepare        # wheels for the missing packages into .whl/ (git-ignored)
# then, through the device tool:
#     run(command="OUT=$OUT bash tools/device_check.sh", carry=[".whl"], timeout_s=540)
# It times txc against transformers on the GPU for both encoder layouts at batch 32 and 128 (bf16 autocast), then
# runs the CUDA tests. Everything it prints also lands in $OUT. If `padded` loses to `packed` there, flip the CUDA
# default in `Encoder.unpads` (04_encoder).
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = --prepare ]; then
  rm -rf .whl && mkdir -p .whl
  python -m pip download -q -d .whl --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any \
    'pydantic>=2.6' 'fastcore==1.14.5'
  ls .whl
  exit 0
fi

OUT=${OUT:-/tmp/device_check}; mkdir -p "$OUT"
py=python3
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $py -m pip install -q --no-index --find-links .whl 'pydantic>=2.6' 'fastcore==1.14.5' && $py -m pip install -q --no-deps --no-build-isolation -e .
  $py -c "import torch, transformers, txc; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)"
  for bs in 32 128; do
    $py -c 'import sys; from txc.cli import main; sys.exit(main(sys.argv[1:]))' bench --device cuda --amp --preset base --layout packed padded --batch-size $bs --repeats 3
  done
  $py -m pytest -q -p no:cacheprovider tests/test_cuda.py
} 2>&1 | tee "$OUT/device_check.log"
