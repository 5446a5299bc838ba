#!/bin/bash
# The planner's predictions against measured runs over an emulated link: head and worker in
# two network namespaces joined by a tbf-shaped veth pair (mesh-netns.sh, a wire-like bucket)
# with onebit's test-mode delay shim, each pinned to one core with one thread, 2B4T shape.
# Each of ROUNDS rounds plans (`onebit plan --remeasure --batch 8`), then measures one node,
# tensor parallel with f32 (gathered, exact) and q8 (summed), the pipeline at SPLIT (default:
# the split the round's plan gives 8 sequences in flight) with f32 and q8, and
# --strategy auto, each at batch 1 and 8 (onebit bench -p 0), and prints each prediction over
# what was measured in its round.
#   LINK=lan:  1 Gbit/s + 0.2 ms;  LINK=wifi: 100 Mbit/s + 5 ms ± 2 ms
# Needs root; deletes its namespaces on exit.
# Usage: [LINK=lan] [ROUNDS=2] [SPLIT=12,18] bash bench/mesh-plan-link.sh [model.gguf]
set -euo pipefail
SPLIT_ARG=${SPLIT:-}
B=$(realpath "${ONEBIT:-target/release/onebit}")
M=$(realpath "${1:-/tmp/b4/2b4t.gguf}")
[ -f "$M" ] || { mkdir -p "$(dirname "$M")"; $B init --shape 2b4t -o "$M"; }
declare -A LINKS=([lan]="1gbit 0.2 -n 64 -r 3" [wifi]="100mbit 5,2 -n 16 -r 2")
set -- ${LINKS[${LINK:-lan}]}; RATE=$1 EMU=$2; shift 2; RUNS=("$@")
. "$(dirname "$0")/mesh-netns.sh" "$RATE"
date; lscpu | grep -E "Model name|^CPU\(s\)|Flags"
echo "link ${LINK:-lan}: tbf $RATE, bucket $(bucket "$RATE") B, emulated delay[,jitter] $EMU ms"
worker() {
  ip netns exec $W taskset -c 1 $B worker --listen 10.232.9.2:7662 --key-file "$D/mesh.key" --jobs 1 --emulate-link "$EMU" 2> /dev/null &
  WPID=$!; sleep 0.5
}
stop() { sleep 1; kill $WPID 2> /dev/null || true; wait $WPID 2> /dev/null || true; }
on_head() { ip netns exec $A taskset -c 0 $B "$@"; }
# The batch-1 and batch-8 predictions of the first candidate line containing $1 whose wire is $2.
predicted() {
  awk -v n="$1" -v w="$2" 'index($0, n) && $(NF-4) == w { print $(NF-3), $(NF-2); f=1; exit } END { if (!f) print "0 0" }' "$D/plan.txt"
}
bench() {
  on_head bench "$M" -t 1 -p 0 "${RUNS[@]}" --batch 1,8 "$@" 2>&1 | tee "$D/bench.txt" | grep -E "tg[0-9]+ |tg[0-9]+@b8|mesh:|auto:" | sed 's/^/    /'
}
measured() { awk '/tg[0-9]+ /{a=$2} /tg[0-9]+@b8/{b=$2} END{print a, b}' "$D/bench.txt"; }
mesh() { worker; bench --mesh "$D/mesh.toml" --worker-threads 1 --emulate-link "$EMU" "$@"; stop; }
ratio() { awk -v p="$2" -v m="$3" -v n="$1" 'BEGIN{split(p,P," "); split(m,Q," ");
  if (P[1] == 0 || Q[1] == 0 || Q[2] == 0) { printf "%-24s not planned or not measured\n", n; exit }
  printf "%-24s b1 %6.2f / %6.2f = %.2f   b8 %7.2f / %7.2f = %.2f\n", n, P[1], Q[1], P[1]/Q[1], P[2], Q[2], P[2]/Q[2]}'; }
for round in $(seq "${ROUNDS:-2}"); do
  echo "== round $round: plan"
  worker
  on_head plan "$M" --mesh "$D/mesh.toml" -t 1 --batch 8 --remeasure --emulate-link "$EMU" | tee "$D/plan.txt"
  stop
  # The plan's pipeline for 8 sequences in flight ("... in flight ...: pipeline: blocks [12, 18] ..."), else 12,18.
  SPLIT=${SPLIT_ARG:-$(sed -n 's/.*in flight.*pipeline: blocks \[\([0-9]*\), \([0-9]*\)\].*/\1,\2/p' "$D/plan.txt")}
  SPLIT=${SPLIT:-12,18}
  names=("one node" "tp f32 gather" "tp q8 sum" "pp [$SPLIT] f32" "pp [$SPLIT] q8")
  s="pipeline: blocks [${SPLIT//,/, }]"
  pred=("$(predicted "one node (0)" -)" "$(predicted "tensor parallel" f32)" "$(predicted "tensor parallel" q8)"
    "$(predicted "$s" f32)" "$(predicted "$s" q8)")
  echo "== round $round: one node (core 0)"; bench; meas=("$(measured)")
  echo "== round $round: tensor parallel, f32"; mesh --strategy tp --wire f32; meas+=("$(measured)")
  echo "== round $round: tensor parallel, q8 (summed)"; mesh --strategy tp --wire q8; meas+=("$(measured)")
  echo "== round $round: pipeline $SPLIT, f32"; mesh --split "$SPLIT" --wire f32; meas+=("$(measured)")
  echo "== round $round: pipeline $SPLIT, q8"; mesh --split "$SPLIT" --wire q8; meas+=("$(measured)")
  echo "== round $round: auto (the plan above, cached)"; mesh --strategy auto
  echo "== round $round: predicted / measured (tok/s)"
  for i in "${!names[@]}"; do ratio "${names[$i]}" "${pred[$i]}" "${meas[$i]}"; done
done
