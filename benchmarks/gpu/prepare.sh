#!/usr/bin/env bash
# Run HERE (not on the device), in any directory, before a device `run`: puts what the device image lacks
# into two git-ignored folders of the checkout that the call then carries (`carry: [".whl", ".gpu-data"]`):
#   .whl       wheels of the dependencies the device's python3 does not have (pydantic & co; POT, 33 MB, only
#              with WITH_POT=1: AdaRec's EMD needs it), for CPython 3.12 x86-64, at this checkout's .venv versions;
#   .gpu-data  copies of the data sets the benchmarks read (the device cannot see ../shared/data). They are
#              never committed (their licences forbid redistribution): delete the folder after the session.
# DATASETS="citeulike gowalla" (default) picks the folders of $DISTILLREC_DATA_DIR (default ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .git/info
for d in /.whl/ /.gpu-data/; do grep -qxF "$d" .git/info/exclude || echo "$d" >> .git/info/exclude; done
PY=${PY:-.venv/bin/python}
pins=$(WITH_POT=${WITH_POT:-0} "$PY" - <<'PYEOF'
import os
from importlib.metadata import version
names = ["pydantic", "pydantic_core", "annotated-types", "typing-inspection", "typing_extensions"]
print(" ".join(f"{p}=={version(p)}" for p in names + (["POT"] if os.environ["WITH_POT"] == "1" else [])))
PYEOF
)
rm -rf .whl && mkdir -p .whl
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl $pins
data=${DISTILLREC_DATA_DIR:-../shared/data}
rm -rf .gpu-data && mkdir -p .gpu-data
for d in ${DATASETS:-citeulike gowalla}; do cp -r "$data/$d" .gpu-data/; done
du -sh .whl .gpu-data
