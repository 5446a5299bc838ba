#!/bin/bash
# Tensor parallelism's two ways for the pieces to meet (--tp-merge), over the links of
# mesh-auto.sh between two network namespaces, head and worker each pinned to one core with
# one thread, 2B4T shape, decode at batch 1 and 8: gather (o and down by rows, four
# all-gathers a block) with f32 and with q8 on the wire, and sum (o and down by columns, two
# exchanges of partial updates a block) with q8; one node for the ratio.
#   lan:  1 Gbit/s (tc tbf) + 0.2 ms emulated delay;  wifi: 100 Mbit/s + 5 ms ± 2 ms;
#   veth: no shaping, no delay.
# Needs root; deletes its namespaces on exit. Usage: [LINKS="lan veth"] bash bench/mesh-merge.sh [model.gguf]
set -euo pipefail
B=$(realpath "${ONEBIT:-target/release/onebit}")
M=$(realpath "${1:-/tmp/b4/2b4t.gguf}")
[ -f "$M" ] || { mkdir -p "$(dirname "$M")"; $B init --shape 2b4t -o "$M"; }
. "$(dirname "$0")/mesh-netns.sh" none
date; lscpu | grep -E "Model name|^CPU\(s\)|Flags"
show() { grep -E "tg[0-9]+ |tg[0-9]+@b8|per token|mesh:" | sed 's/^/    /'; }
mesh() {  # emulate, bench flags...
  local emu=$1; shift
  local e=(); [ "$emu" = none ] || e=(--emulate-link "$emu")
  ip netns exec $W taskset -c 1 $B worker --listen 10.232.9.2:7662 --key-file "$D/mesh.key" --jobs 1 "${e[@]}" 2>/dev/null &
  local w=$!
  sleep 0.5
  ip netns exec $A taskset -c 0 $B bench "$M" -t 1 -p 0 --batch 1,8 --mesh "$D/mesh.toml" --worker-threads 1 --strategy tp "${e[@]}" "$@" 2>&1 | show
  wait $w 2>/dev/null || true
}
declare -A LINK=([lan]="1gbit 0.2 -n 64 -r 3" [wifi]="100mbit 5,2 -n 16 -r 2" [veth]="none none -n 64 -r 3")
for name in ${LINKS:-lan wifi veth}; do
  set -- ${LINK[$name]}; rate=$1 emu=$2; shift 2
  shape "$rate"
  echo "== $name: rate $rate, emulated delay[,jitter] ms: $emu"
  echo "one node, 1 thread (core 0)"; taskset -c 0 $B bench "$M" -t 1 -p 0 --batch 1,8 "$@" 2>&1 | show
  for run in "f32 gather" "q8 gather" "q8 sum"; do
    set -- $run "${@}"; wire=$1 merge=$2; shift 2
    echo "tensor parallel, $wire on the wire, $merge"; mesh "$emu" --wire "$wire" --tp-merge "$merge" "$@"
  done
done
