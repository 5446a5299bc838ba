#!/bin/bash
# One node, tensor parallel (f32 and int8 pieces) and the pipeline over a shaped link: two
# network namespaces joined by a veth pair with a token bucket (`tc tbf`, RATE, default
# 1gbit) on both ends; the head in one, the worker in the other, each pinned to one core with
# one thread, 2B4T shape. No delay is added (this kernel has no netem). Needs root; deletes
# its namespaces on exit. Usage: [RATE=1gbit] bash bench/mesh-shaped.sh [model.gguf]
set -euo pipefail
B=$(realpath "${ONEBIT:-target/release/onebit}")
M=${1:-/tmp/b4/2b4t.gguf}
RATE=${RATE:-1gbit}
[ -f "$M" ] || { mkdir -p "$(dirname "$M")"; $B init --shape 2b4t -o "$M"; }
. "$(dirname "$0")/mesh-netns.sh" "$RATE"
date; lscpu | grep -E "Model name|^CPU\(s\)|Flags"; echo "link: veth, tbf $RATE both ways"
mesh() {
  ip netns exec $W taskset -c 1 $B worker --listen 10.232.9.2:7662 --key-file "$D/mesh.key" --jobs 1 2>/dev/null &
  sleep 0.5
  ip netns exec $A taskset -c 0 $B bench "$M" -t 1 -p 0 -n 64 -r 3 --batch 1,8 --mesh "$D/mesh.toml" --worker-threads 1 "$@"
  wait
}
echo "== probe"
ip netns exec $W taskset -c 1 $B worker --listen 10.232.9.2:7662 --key-file "$D/mesh.key" --jobs 1 2>/dev/null &
sleep 0.5; ip netns exec $A taskset -c 0 $B mesh probe --mesh "$D/mesh.toml"; wait
echo "== one node, 1 thread (core 0)"
taskset -c 0 $B bench "$M" -t 1 -p 0 -n 64 -r 3 --batch 1,8
echo "== tensor parallel, f32 pieces"
mesh --strategy tp
echo "== tensor parallel, int8 pieces"
mesh --strategy tp --wire q8
echo "== pipeline, default split"
mesh
