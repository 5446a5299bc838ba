#!/bin/bash
# One node, tensor parallel, pipeline and --strategy auto over three links between two
# network namespaces joined by a veth pair, head and worker each pinned to one core with one
# thread, 2B4T shape, decode at batch 1 and 8:
#   lan:  1 Gbit/s (tc tbf) + 0.2 ms emulated delay (wired home LAN)
#   wifi: 100 Mbit/s (tc tbf) + 5 ms ± 2 ms emulated delay and jitter
#   veth: no shaping, no delay
# This kernel has no netem: the delay is onebit's test-mode shim (--emulate-link on the head
# and the worker: every message is held until its send time plus the delay). auto measures
# the emulated link afresh (--remeasure) and prints its choice and prediction.
# The pipeline row runs the default split, or PP_SPLIT (e.g. the split `onebit plan --batch 8`
# prints for sequences in flight).
# Needs root; deletes its namespaces on exit.
# Usage: [PP_SPLIT=9,21] [LINKS="lan veth"] bash bench/mesh-auto.sh [model.gguf]
set -euo pipefail
B=$(realpath "${ONEBIT:-target/release/onebit}")
M=$(realpath "${1:-/tmp/b4/2b4t.gguf}")
[ -f "$M" ] || { mkdir -p "$(dirname "$M")"; $B init --shape 2b4t -o "$M"; }
. "$(dirname "$0")/mesh-netns.sh" none
date; lscpu | grep -E "Model name|^CPU\(s\)|Flags"
show() { grep -E "tg[0-9]+ |tg[0-9]+@b8|mesh:|auto:" | sed 's/^/    /'; }
mesh() {  # jobs, emulate, bench flags...
  local jobs=$1 emu=$2; shift 2
  local e=(); [ "$emu" = none ] || e=(--emulate-link "$emu")
  ip netns exec $W taskset -c 1 $B worker --listen 10.232.9.2:7662 --key-file "$D/mesh.key" --jobs "$jobs" "${e[@]}" 2>/dev/null &
  local w=$!
  sleep 0.5
  ip netns exec $A taskset -c 0 $B bench "$M" -t 1 -p 0 --batch 1,8 --mesh "$D/mesh.toml" --worker-threads 1 "${e[@]}" "$@" 2>&1 | show
  # auto may run on the head alone: the worker then still waits for its job.
  sleep 1; kill $w 2>/dev/null || true; wait $w 2>/dev/null || true
}
declare -A LINK=([lan]="1gbit 0.2 -n 64 -r 3" [wifi]="100mbit 5,2 -n 16 -r 2" [veth]="none none -n 64 -r 3")
for name in ${LINKS:-lan wifi veth}; do
  set -- ${LINK[$name]}; rate=$1 emu=$2; shift 2
  shape "$rate"
  echo "== $name: rate $rate, emulated delay[,jitter] ms: $emu"
  echo "one node, 1 thread (core 0)"; taskset -c 0 $B bench "$M" -t 1 -p 0 --batch 1,8 "$@" 2>&1 | show
  echo "tensor parallel"; mesh 1 "$emu" --strategy tp "$@"
  split=(); [ -z "${PP_SPLIT:-}" ] || split=(--split "$PP_SPLIT")
  echo "pipeline ${PP_SPLIT:-(default split)}"; mesh 1 "$emu" "${split[@]}" "$@"
  echo "auto (measured now)"; mesh 2 "$emu" --strategy auto --remeasure "$@"
done
