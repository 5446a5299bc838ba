#!/bin/bash
# Element types link by link on a three-node hybrid: an island of two nodes on fast links (the
# head and worker 1 in one network namespace, talking over its loopback) and a third node in a
# second namespace behind a slow link (a veth pair shaped with tc tbf at $RATE, default
# 20mbit: WiFi-like throughput, with a bucket of $BURST, default 2kb, so a 10 kB message pays
# its bytes: a 16 kB bucket refilled between tokens let every message through at veth speed;
# this kernel has no netem, so no added delay). The hybrid runs the island as a tensor-parallel
# stage and the third node as the second stage; 2B4T shape, one thread per process (head
# core 0, worker 1 core 1, worker 2 core 1: three processes on two cores, so stage 2 shares
# a core with worker 1, which waits while stage 2 runs at batch 1).
# First `onebit plan` on the measured mesh; then, alternating: f32 everywhere, int8 everywhere,
# int8 on the hops and f32 in the island (--wire hops=q8,q8/groups=f32,-) at the default split,
# and the last at each of the planner's splits of the hybrid [2, 1].
# Needs root; deletes its namespaces on exit.
# Usage: [RATE=20mbit] [BURST=2kb] [ROUNDS=2] bash bench/mesh-per-link.sh [model.gguf]
set -euo pipefail
B=$(realpath "${ONEBIT:-target/release/onebit}")
M=$(realpath "${1:-/tmp/b4/2b4t.gguf}")
[ -f "$M" ] || { mkdir -p "$(dirname "$M")"; $B init --shape 2b4t -o "$M"; }
RATE=${RATE:-20mbit}; BURST=${BURST:-2kb}
# Namespaces $A (the head and worker 1, 10.232.9.1) and $W (worker 2, 10.232.9.2).
. "$(dirname "$0")/mesh-netns.sh" "$RATE"
X=$A; Y=$W
printf 'key_file = "mesh.key"\nhead = "10.232.9.1:7671"\nworkers = ["10.232.9.1:7672", "10.232.9.2:7673"]\n' > "$D/mesh.toml"
date; lscpu | grep -E "Model name|^CPU\(s\)|Flags"; echo "slow link: tbf $RATE, burst $BURST"
show() { grep -E "tg[0-9]+ |mesh:|wire:|auto:" | sed 's/^/    /'; }
workers() {  # jobs
  ip netns exec $X taskset -c 1 $B worker --listen 10.232.9.1:7672 --key-file "$D/mesh.key" --jobs "$1" 2>/dev/null &
  ip netns exec $Y taskset -c 1 $B worker --listen 10.232.9.2:7673 --key-file "$D/mesh.key" --jobs "$1" 2>/dev/null &
  sleep 0.5
}
hybrid() {  # --wire value, [--split blocks]
  workers 1
  ip netns exec $X taskset -c 0 $B bench "$M" -t 1 -p 0 -n 32 -r 3 --batch 1 --mesh "$D/mesh.toml" \
    --worker-threads 1 --strategy hybrid --groups 2,1 --wire "$@" 2>&1 | show
  wait
}
echo "== onebit plan (measures the mesh: links, then each node alone)"
workers 2
ip netns exec $X taskset -c 0 $B plan "$M" --mesh "$D/mesh.toml" -t 1 --batch 8 2>&1 | tee "$D/plan" | sed 's/^/    /'
kill %1 %2 2>/dev/null || true; wait 2>/dev/null || true
# The planner's splits of the hybrid [2, 1] (for sequences in flight, and for one sequence).
splits=$(grep -oE "^hybrid: nodes per stage \[2, 1\], blocks \[[0-9]+, [0-9]+\]" "$D/plan" | grep -oE "[0-9]+, [0-9]+\]$" | tr -d '] ' | sort -u)
for round in $(seq "${ROUNDS:-2}"); do
  echo "== round $round: one node, 1 thread (core 0)"
  taskset -c 0 $B bench "$M" -t 1 -p 0 -n 32 -r 3 --batch 1 2>&1 | show
  for w in f32 q8 hops=q8,q8/groups=f32,-; do
    echo "== round $round: hybrid [2, 1], default split, --wire $w"
    hybrid "$w"
  done
  for sp in $splits; do
    echo "== round $round: hybrid [2, 1], the planner's split $sp, --wire hops=q8,q8/groups=f32,-"
    hybrid hops=q8,q8/groups=f32,- --split "$sp"
  done
done
