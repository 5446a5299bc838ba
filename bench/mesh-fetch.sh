#!/bin/bash
# Weights from the head: how long a mesh takes to start (and run 8 tokens) when the worker
# has its own copy of the file, when it has none and the head streams its shard (pipeline:
# its blocks; tensor parallel: every tensor), and when the shard is already in its cache.
# The head and the worker are in two network namespaces joined by a veth pair shaped with
# `tc tbf` (RATE, default 1gbit), each pinned to one core. Needs root; deletes its
# namespaces on exit. Usage: [RATE=1gbit] bash bench/mesh-fetch.sh [model.gguf]
set -euo pipefail
B=$(realpath "${ONEBIT:-target/release/onebit}")
M=$(realpath "${1:-/tmp/b4/2b4t.gguf}")
RATE=${RATE:-1gbit}
[ -f "$M" ] || { mkdir -p "$(dirname "$M")"; $B init --shape 2b4t -o "$M"; }
. "$(dirname "$0")/mesh-netns.sh" "$RATE"
mkdir -p "$D/none"
date; lscpu | grep -E "Model name|^CPU\(s\)|Flags"; echo "link: veth, tbf $RATE both ways; model $(du -h "$M" | cut -f1)"
start() {  # label, worker flags..., --, head flags...
  local label=$1; shift; local wf=(); while [ "$1" != -- ]; do wf+=("$1"); shift; done; shift
  ip netns exec $W taskset -c 1 $B worker --listen 10.232.9.2:7662 --key-file "$D/mesh.key" --jobs 1 "${wf[@]}" 2>/dev/null &
  sleep 0.5
  local t0=$(date +%s.%N)
  ip netns exec $A taskset -c 0 $B bench "$M" -t 1 -p 0 -n 8 -r 1 --batch 1 --mesh "$D/mesh.toml" --worker-threads 1 "$@" > "$D/out" 2>&1
  local t1=$(date +%s.%N)
  wait
  printf "%-44s %6.2f s   %s\n" "$label" "$(echo "$t1 - $t0" | bc)" "$(grep -o 'tg8 *[0-9.]*' "$D/out" | tr -s ' ')"
  ls -la "$D/cache" 2>/dev/null | grep gguf | awk '{printf "    cache: %s %.1f MB\n", $9, $5/1e6}' || true
}
for s in pp tp; do
  echo "== strategy $s"
  start "worker has its own copy" -- --strategy $s
  start "worker has none: shard streamed" --models "$D/none" --cache "$D/cache" -- --strategy $s
  start "worker has none: shard in its cache" --models "$D/none" --cache "$D/cache" -- --strategy $s
  rm -rf "$D/cache"
done
