#!/usr/bin/env bash
# Run ON THE DEVICE, from the repository root, after benchmarks/gpu/prepare.sh here:
#   run(command="bash benchmarks/gpu/run.sh", carry=[".whl", ".gpu-data"], timeout_s=600)
# Installs the carried wheels next to the image's CUDA PyTorch, prints what the GPU is, then times every
# KD method's epoch ÷ the plain student's epoch on CiteULike-LOO on the GPU (the issue's ≤ 1.5× target is
# about this ratio), one JSON file per benchmark under $OUT. METHODS and EPOCHS override the defaults.
set -uo pipefail
PY=${PY:-python3}
if ! "$PY" -c "import pydantic" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}src DISTILLREC_DATA_DIR=${DISTILLREC_DATA_DIR:-.gpu-data} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/distillrec-gpu-out}
mkdir -p "$OUT"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
"$PY" benchmarks/kd_speed.py --device "${DEVICE:-cuda}" --methods "${METHODS:-rd,cd,rrd,ir-rrd,dcd,de-late,de-rrd-late}" \
    --epochs "${EPOCHS:-5}" --json | tee "$OUT/kd_speed.json"
