#!/bin/bash
# The planner's choice of the element type on the wire, measured: one node, tensor parallel
# with f32 / f16 / q8 activations, and --strategy auto (--wire auto, measured now) over a
# 1 Gbit/s link (tc tbf, no added delay: a switched wired LAN) between two network
# namespaces, head and worker each pinned to one core with one thread, 2B4T shape, decode at
# batch 1 and 8. Needs root; deletes its namespaces on exit.
# Usage: bash bench/mesh-wire.sh [model.gguf] [rate]
set -euo pipefail
B=$(realpath "${ONEBIT:-target/release/onebit}")
M=$(realpath "${1:-/tmp/b4/2b4t.gguf}")
RATE=${2:-1gbit}
[ -f "$M" ] || { mkdir -p "$(dirname "$M")"; $B init --shape 2b4t -o "$M"; }
. "$(dirname "$0")/mesh-netns.sh" "$RATE"
date; lscpu | grep -E "Model name|^CPU\(s\)|Flags"
show() { grep -E "tg[0-9]+ |tg[0-9]+@b8|mesh:|auto:" | sed 's/^/    /'; }
mesh() {  # jobs, bench flags...
  local jobs=$1; shift
  ip netns exec $W taskset -c 1 $B worker --listen 10.232.9.2:7662 --key-file "$D/mesh.key" --jobs "$jobs" 2>/dev/null &
  local w=$!
  sleep 0.5
  ip netns exec $A taskset -c 0 $B bench "$M" -t 1 -p 0 --batch 1,8 --mesh "$D/mesh.toml" --worker-threads 1 "$@" 2>&1 | show
  sleep 1; kill $w 2>/dev/null || true; wait $w 2>/dev/null || true
}
echo "== link: rate $RATE, no added delay"
echo "one node, 1 thread (core 0)"; taskset -c 0 $B bench "$M" -t 1 -p 0 --batch 1,8 -n 64 -r 3 2>&1 | show
for w in f32 f16 q8; do
  echo "tensor parallel, --wire $w"; mesh 1 --strategy tp --wire $w -n 64 -r 3
done
echo "auto, --wire auto (measured now)"; mesh 2 --strategy auto --remeasure -n 64 -r 3
ip netns exec $W taskset -c 1 $B worker --listen 10.232.9.2:7662 --key-file "$D/mesh.key" --jobs 1 2>/dev/null &
sleep 0.5
echo "onebit plan (from the figures auto cached)"
ip netns exec $A $B plan "$M" --mesh "$D/mesh.toml" -t 1 2>&1 | grep -E "tensor|pipeline|one node|choice" | sed 's/^/    /'
kill %1 2>/dev/null || true
