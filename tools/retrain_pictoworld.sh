#!/usr/bin/env bash
# Retrain pictoworld and measure the candidate against every pinned outcome, in one command.
#
#   bash tools/retrain_pictoworld.sh [OUT]        # OUT defaults to runs/pictoworld-candidate
#   PRESET=smoke RUN_ON=1 bash tools/retrain_pictoworld.sh /tmp/chain   # the whole chain in minutes
#   SEED=1 bash tools/retrain_pictoworld.sh runs/candidate-seed1  # another training seed
#   SKIP_TRAIN=1 bash tools/retrain_pictoworld.sh runs/pictoworld-v7  # measure a trained OUT again
#   SKIP_TRAIN=1 SKIP_HELDOUT=1 bash tools/retrain_pictoworld.sh OUT  # held-out figures already in OUT
#   SKIP_TRAIN=1 JUDGE_ONLY=1 bash tools/retrain_pictoworld.sh OUT    # held-out verdict and odds, then stop
#
# Trains with the working tree's world, renderer and schedule (about an hour on 2 CPU cores), then
# REPLACES the bundled weights in the working tree with the candidate's, measures the unsafe side (judged
# at once: most candidates miss there), the pictoworld acceptance and the default audit on seeds 5000+
# (*seed5000*) and judges them by the tests' own rules (heldout_verdict.py) and by the odds they give the
# tests' seeds (pictoworld_pass_odds.py);
# stops there, with the bundled weights restored, on a miss or odds under MIN_ODDS (0.25). Otherwise it
# re-learns the bundled steering files, runs the three acceptance benchmarks (--no-record: figures go to
# OUT/figures/), and the tests. Among several seeds' candidates,
# choose on the held-out verdict, fixed in advance; the tests' seeds stay held out. Adopt only if the
# verdict has no miss and then every test passes unchanged; otherwise undo with
#   git checkout -- src/diffsteer/pictoworld/weights
# Two jobs run side by side with one thread each: on 2 cores, two jobs of two threads thrash.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/pictoworld-candidate}
PY=.venv/bin/python
W=src/diffsteer/pictoworld/weights
F=$OUT/figures
mkdir -p "$F"

if [ -z "${SKIP_TRAIN:-}" ]; then
  .venv/bin/diffsteer pictoworld train --out "$OUT" --preset "${PRESET:-full}" --seed "${SEED:-0}" 2>&1 |
    tee "$F/train.log"
elif [ ! -f "$OUT/training_record.json" ]; then
  echo "SKIP_TRAIN: $OUT has no trained candidate (training_record.json)" >&2
  exit 2
fi
if [ -n "${SKIP_HELDOUT:-}" ] && [ ! -f "$OUT/audit_seed5000/summary.json" ]; then
  echo "SKIP_HELDOUT: $OUT has no held-out figures (audit_seed5000/summary.json)" >&2
  exit 2
fi
rm -rf "$W/pipeline" "$W/clip" "$W/oracle"
cp -r "$OUT/pipeline" "$OUT/clip" "$OUT/oracle" "$OUT/training_record.json" "$W/"
rm -rf runs/learn-hspace runs/learn-noise-pictoworld runs/noise-weight-sweeps runs/noise-acceptance \
  runs/hspace-strength-calibration runs/noise-weight-calibration  # the calibration sweeps are the old model's

stop_early() {
  echo "$1" >&2
  if [ -n "${RUN_ON:-}" ]; then echo "RUN_ON: going on anyway" >&2; return; fi
  git checkout -- "$W" && git clean -fdq "$W"
  echo "bundled weights restored; figures in $F" >&2
  exit 1
}
if [ -n "${SKIP_HELDOUT:-}" ]; then
  # measured before (they need no steering files): keep the figures, judge them again below
  echo "SKIP_HELDOUT: keeping the held-out figures in $F"
else
  # the world's unsafe side (issue 24): explicit and paraphrased unsafe prompts at the default guidance,
  # planted neutral rates at 256 images each at 1.0 (the revised gate, RESULTS.md), the oracle's unsafe
  # heads on renders; judged by heldout_verdict.py
  # the revised gate's run on this very training (by hand or by the seed sweep): the same command, seeds
  # and sizes; one older than the training record is another model's and is measured again
  if [ "$F/gate_seed5000.json" -nt "$OUT/training_record.json" ]; then
    cp "$F/gate_seed5000.json" "$F/pictoworld_unsafe_seed5000.json"
  else
    $PY research/pictoworld_unsafe.py "$W" --seed 5000 --neutral-guidance 1.0 --n-explicit 64 --n-neutral 256 \
      --json-out "$F/pictoworld_unsafe_seed5000.json" > "$F/pictoworld_unsafe_seed5000.txt" 2>&1
  fi
  # the gate first: it has missed on most candidates, and the acceptance and the audit below take most
  # of the held-out part's minutes
  $PY research/heldout_verdict.py "$OUT" --unsafe-only > "$F/heldout_verdict.txt" 2> "$F/heldout_verdict.err" ||
    stop_early "$(cat "$F/heldout_verdict.txt")"
  # the same acceptance figures on seeds the tests never use: judge the candidate here first, on twice the
  # tests' images, so that a model that draws what it should is rarely rejected by sampling noise alone
  # "default" is the model's own guidance (pictoworld.RECOMMENDED_GUIDANCE), the one the default audit uses
  for g in default 7.5; do
    guidance=(); [ "$g" = default ] || guidance=(--guidance "$g")
    $PY research/pictoworld_acceptance.py --seed 5000 "${guidance[@]}" --n-explicit 64 --n-neutral 128 --no-record \
      --json-out "$F/pictoworld_${g}_seed5000.json" > "$F/pictoworld_${g}_seed5000.txt" 2>&1
  done
  rm -rf "$OUT/audit_seed5000"
  # 384 images per prompt, not the default 192: on one default-sized audit an exact model still misses
  # somewhere in a third of runs (benchmarks/audit_rule_power.py); at 384, in under a tenth
  .venv/bin/diffsteer audit --seed 5000 --images-per-prompt 384 --out "$OUT/audit_seed5000" \
    > "$F/audit_seed5000.txt" 2>&1
fi
# Stop before the steering and the tests (most of the chain's hour) unless the held-out figures give the
# candidate a chance: no miss by the tests' rules on those seeds, and odds of at least MIN_ODDS (0.25) that
# the tests' own seeds pass every pinned cell (research/pictoworld_pass_odds.py, calibrated by simulation;
# RESULTS.md, "the pass odds were not calibrated"). RUN_ON=1 goes on anyway, the tests then run as
# information.
$PY research/heldout_verdict.py "$OUT" > "$F/heldout_verdict.txt" 2> "$F/heldout_verdict.err" ||
  stop_early "$(cat "$F/heldout_verdict.txt")"
$PY research/pictoworld_pass_odds.py "$OUT" --min-odds "${MIN_ODDS:-0.25}" > "$F/pass_odds.txt" ||
  stop_early "$(cat "$F/pass_odds.txt")"
if [ -n "${JUDGE_ONLY:-}" ]; then
  # the steering and the tests take most of an hour: a short session judges now and goes on later
  cat "$F/heldout_verdict.txt" "$F/pass_odds.txt"
  git checkout -- "$W" && git clean -fdq "$W"
  echo "JUDGE_ONLY: the candidate goes on; bundled weights restored. Go on with" \
    "SKIP_TRAIN=1 SKIP_HELDOUT=1 bash tools/retrain_pictoworld.sh $OUT" >&2
  exit 0
fi

export OMP_NUM_THREADS=1
# each pair: wait on both PIDs, so a failed job stops the script (set -e) and its log says why
( $PY tools/learn_pictoworld_vectors.py > "$F/learn_vectors.txt" 2>&1 &&
  $PY research/pictoworld_acceptance.py --guidance 7.5 --no-record > "$F/pictoworld_7.5.txt" 2>&1 ) &
a=$!
( $PY tools/learn_pictoworld_directions.py > "$F/learn_directions.txt" 2>&1 &&
  $PY research/pictoworld_acceptance.py --no-record > "$F/pictoworld_default.txt" 2>&1 ) &
b=$!
wait "$a"; wait "$b"
$PY research/hspace_acceptance.py --n 64 --guidance 7.5 --no-record > "$F/hspace_7.5.txt" 2>&1 &
a=$!
$PY research/noise_acceptance.py --n 64 --no-record > "$F/noise_default.txt" 2>&1 &
b=$!
wait "$a"; wait "$b"
.venv/bin/pytest -q > "$F/tests.txt" 2>&1 || true
tail -n 15 "$F/tests.txt"
cat "$F/heldout_verdict.txt" "$F/pass_odds.txt"
echo "figures in $F; undo with: git checkout -- $W"
