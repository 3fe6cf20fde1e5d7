#!/bin/sh
# Screenshots of TensorBoard as a reader first sees it, for docs/: the HParams table and the
# Images tab of three smoke runs (amortized, semi-amortized, per-datapoint), trained,
# evaluated on 300 test points and boarded. Needs Debian's `chromium` (headless) and the
# project installed; run from the repository root:
#     sh docs/screenshots.sh [ROOT]        # ROOT: where the runs go (default runs/screenshots)
# VI_LAB="python -m vi_lab" uses a checkout without installing it.
set -eu
ROOT=${1:-runs/screenshots}
VI_LAB=${VI_LAB:-vi-lab}
PORT=${PORT:-6199}
for kind in amortized semi_amortized local; do
    [ -f "$ROOT/$kind/metrics.json" ] || $VI_LAB train configs/smoke.yaml inference.kind=$kind --run-dir "$ROOT/$kind"
    [ -f "$ROOT/$kind/eval/gaps.json" ] || $VI_LAB evaluate "$ROOT/$kind" num_points=300
done
$VI_LAB board "$ROOT"
python -m tensorboard.main --logdir "$ROOT" --port "$PORT" --host 127.0.0.1 2>/dev/null &
BOARD=$!
trap 'kill $BOARD' EXIT
sleep 15  # the server reads the runs in the background
shoot() {  # shoot TAB FILE: the page after its scripts have run (virtual time), 1600 x 900
    chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1600,900 \
        --virtual-time-budget=20000 --screenshot="$2" "http://127.0.0.1:$PORT/#$1" 2>/dev/null
    echo "written: $2"
}
shoot hparams docs/tensorboard_hparams.png
shoot images docs/tensorboard_images.png
