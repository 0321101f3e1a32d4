#!/usr/bin/env bash
# Train several pictoworld seeds on a lent GPU machine in one `device` call, gate them there, and bring
# back the best (issue 24, item 1: a candidate's offsets are a lottery over seeds; RESULTS.md).
#
#   make device-wheels                                   # here, once: .whl/ (ignored), what the image lacks
#   device run: command "bash tools/device_train_seeds.sh 2-9", carry [".whl"], timeout_s 600
#
# There (no network): installs the carried wheels and this tree into /tmp/site, checks in seconds that a
# GPU training draws what a CPU training draws (the test marked for a GPU), then runs
# tools/train_pictoworld_seeds.py with the v9nc recipe, stopping the least advanced seeds if the rest would
# not finish within DEADLINE_S (default 420 s, which with the set-up fits the tool's 600 s), and packs the
# best, as many as come back (8 files, 64 MiB: about eight of the 7 MB candidates), into $OUT with
# summary.json and log.txt.
# Not yet run on a GPU (none lent since it was written); the same tool with --device cpu ran here against
# the device image's transformers 5.17 and huggingface_hub 1.33, and its saved models load with ours.
# RECIPE (optional) adds the tool's recipe flags, e.g. RECIPE="--unet-channels 64,128 --vae-from
# candidates/pictoworld-v9nc-s1v0" to sweep U-Net seeds on seed 0's VAE (candidates/ travels with the tree).
# Back here: tar -xf each into runs/, then `SKIP_TRAIN=1 bash tools/retrain_pictoworld.sh runs/pictoworld-sN`
# for the best, which measures the held-out figures and stops under the pass odds' 0.25.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${1:-}
[ -n "$SEEDS" ] || { echo "give the seeds, e.g. 2-9" >&2; exit 2; }
[ -n "${OUT:-}" ] || { echo "OUT is unset: the device tool sets it to the folder whose files come back" >&2; exit 2; }
ls .whl/*.whl >/dev/null 2>&1 || { echo "no .whl/: run make device-wheels here and carry .whl" >&2; exit 2; }
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --upgrade --target /tmp/site .
nvidia-smi -L | tee "$OUT/log.txt"
# a mismatch is reported, not fatal: the candidates are judged by their own figures either way
{ python3 -m pytest -q -p no:cacheprovider tests/pictoworld/test_pictoworld_training.py -k gpu 2>&1 ||
  echo "self-check failed: see above"; } | tail -5 | tee -a "$OUT/log.txt"
# shellcheck disable=SC2086  # RECIPE is a list of flags
python3 tools/train_pictoworld_seeds.py /tmp/seeds --seeds "$SEEDS" --device cuda ${RECIPE:-} \
  --deadline-s "${DEADLINE_S:-420}" --reserve-s "${RESERVE_S:-120}" --pack "$OUT" \
  2>&1 | grep -v -e Warning -e torchvision -e "kept in float32" | tee -a "$OUT/log.txt"
