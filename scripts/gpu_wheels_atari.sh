#!/usr/bin/env bash
# Download the wheels the GPU machine lacks for the Atari runs (examples/atari_pong.py) into
# .whl_atari/ (git-ignored): gymnasium, ale-py (ships the Atari ROMs) and farama-notifications.
# The GPU image (python 3.12, x86_64; /work/.library/device/KINDS.md "Packages:") already has
# their other needs: numpy, cloudpickle, typing-extensions.
# Usage (here, in the repository root, where pip reaches PyPI): bash scripts/gpu_wheels_atari.sh
# (.whl_atari/ is in .gitignore, so the device tool carries it only when `carry` names it).
# On the GPU machine, carry `.whl_atari` and start the command with
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#     --target /tmp/site .whl_atari/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH || exit;
set -euo pipefail
dest=${1:-.whl_atari}
PYTHON=${PYTHON:-python3}
WHEELS=(gymnasium==1.4.0 ale-py==0.12.1 farama-notifications==0.0.6)
mkdir -p "$dest"
"$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d "$dest" "${WHEELS[@]}"
# One version of each: two stop the whole install on the GPU machine.
for name in gymnasium ale_py farama_notifications; do
  count=$(find "$dest" -maxdepth 1 -iname "${name}-*.whl" | wc -l)
  if [ "$count" -ne 1 ]; then
    echo "expected one ${name} wheel in $dest, found $count" >&2
    exit 1
  fi
done
ls -l "$dest"
du -sh "$dest"
