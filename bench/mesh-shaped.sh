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
A=obsa$$; W=obsb$$
cleanup() { ip netns del $A 2>/dev/null || true; ip netns del $W 2>/dev/null || true; rm -rf "$D"; }
D=$(mktemp -d); trap cleanup EXIT
ip netns add $A; ip netns add $W
ip link add ${A}v type veth peer name ${W}v
ip link set ${A}v netns $A; ip link set ${W}v netns $W
ip -n $A addr add 10.232.9.1/24 dev ${A}v; ip -n $W addr add 10.232.9.2/24 dev ${W}v
ip -n $A link set ${A}v up; ip -n $W link set ${W}v up
ip -n $A link set lo up; ip -n $W link set lo up
for ns in $A $W; do tc -n $ns qdisc add dev ${ns}v root tbf rate $RATE burst 256kb latency 50ms; done
$B mesh new-key -o "$D/mesh.key" >/dev/null
printf 'key_file = "mesh.key"\nhead = "10.232.9.1:7661"\nworkers = ["10.232.9.2:7662"]\n' > "$D/mesh.toml"
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
