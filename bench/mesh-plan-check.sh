#!/bin/bash
# The planner's predictions against measured runs on loopback, 2B4T shape, head pinned to
# core 0 and one worker to core 1, one thread each. Each of ROUNDS rounds first plans
# (`onebit plan --remeasure --batch 8`), then measures one node, tensor parallel and the
# pipeline at SPLIT, each at batch 1 and 8 (onebit bench -p 0 -n 64 -r 3), and prints each
# prediction over what was measured minutes later: on a shared host the compute-bound
# batch-8 speed drifts by 20 % over ten minutes, so a prediction is only compared with the
# runs of its own round.
# BASELINE=path/to/another/onebit also plans with that build (its own worker) every round.
# Usage: [ROUNDS=2] [SPLIT=6,24] [BASELINE=bin] bash bench/mesh-plan-check.sh [model.gguf]
set -euo pipefail
B=${ONEBIT:-target/release/onebit}
M=${1:-/tmp/b4/2b4t.gguf}
SPLIT=${SPLIT:-6,24}
[ -f "$M" ] || { mkdir -p "$(dirname "$M")"; $B init --shape 2b4t -o "$M"; }
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
$B mesh new-key -o "$D/mesh.key" > /dev/null
printf 'key_file = "mesh.key"\nhead = "127.0.0.1:7631"\nworkers = ["127.0.0.1:7632"]\n' > "$D/mesh.toml"
date; lscpu | grep -E "Model name|^CPU\(s\)|Flags"
worker() { taskset -c 1 "$1" worker --listen 127.0.0.1:7632 --key-file "$D/mesh.key" --jobs 1 2> /dev/null & sleep 0.3; }
plan() {
  worker "$1"
  taskset -c 0 "$1" plan "$M" --mesh "$D/mesh.toml" -t 1 --batch 8 --remeasure --wire f32 | tee "$D/plan.txt"
  wait
}
# The batch-1 and batch-8 predictions of one candidate line ("one node (0)", "tensor parallel", ...).
predicted() { { grep -F "$1" "$D/plan.txt" || echo "0 0 - - -"; } | head -1 | awk '{print $(NF-3), $(NF-2)}'; }
bench() { taskset -c 0 $B bench "$M" -t 1 -p 0 -n 64 -r 3 --batch 1,8 "$@" 2>&1 | tee "$D/bench.txt" | grep -E "tg64|mesh:" | sed 's/^/    /'; }
measured() { awk '/tg64 /{a=$2} /tg64@b8/{b=$2} END{print a, b}' "$D/bench.txt"; }
ratio() { awk -v p="$2" -v m="$3" -v n="$1" 'BEGIN{split(p,P," "); split(m,Q," ");
  if (P[1] == 0 || Q[1] == 0 || Q[2] == 0) { printf "%-18s not planned or not measured\n", n; exit }
  printf "%-18s b1 %6.2f / %6.2f = %.2f   b8 %7.2f / %7.2f = %.2f\n", n, P[1], Q[1], P[1]/Q[1], P[2], Q[2], P[2]/Q[2]}'; }
for round in $(seq "${ROUNDS:-2}"); do
  if [ -n "${BASELINE:-}" ]; then
    echo "== round $round: plan by the baseline $BASELINE"
    plan "$BASELINE" > /dev/null
    base=("$(predicted "one node (0)")" "$(predicted "tensor parallel")" "$(predicted "pipeline: blocks [${SPLIT//,/, }]")")
    grep -E "^node|^0 |^1 |^one node \(0\)|^tensor|blocks \[${SPLIT//,/, }\]" "$D/plan.txt"
  fi
  echo "== round $round: plan"
  plan "$B"
  pred=("$(predicted "one node (0)")" "$(predicted "tensor parallel")" "$(predicted "pipeline: blocks [${SPLIT//,/, }]")")
  echo "== round $round: one node (core 0)"
  bench
  meas=("$(measured)")
  echo "== round $round: tensor parallel"
  worker "$B"
  bench --mesh "$D/mesh.toml" --worker-threads 1 --strategy tp
  wait
  meas+=("$(measured)")
  echo "== round $round: pipeline, split $SPLIT"
  worker "$B"
  bench --mesh "$D/mesh.toml" --worker-threads 1 --split "$SPLIT"
  wait
  meas+=("$(measured)")
  echo "== round $round: predicted / measured (tok/s)"
  names=("one node" "tensor parallel" "pipeline [$SPLIT]")
  for i in 0 1 2; do ratio "${names[$i]}" "${pred[$i]}" "${meas[$i]}"; done
  if [ -n "${BASELINE:-}" ]; then
    echo "   the baseline's predictions over the same measurements:"
    for i in 0 1 2; do ratio "${names[$i]}" "${base[$i]}" "${meas[$i]}"; done
  fi
done
