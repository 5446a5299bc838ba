#!/bin/bash
# The pipeline's split for sequences in flight, planned and measured, on the 2B4T shape on
# loopback: `onebit plan` (its node table shows each node's measured head share, its pipeline
# candidates their splits and predicted 8-sequence figures), then one node with one thread
# at 1, 4 and 8 sequences (8 in two micro-batches of 4 cannot beat one node's T(b8)/T(b4)),
# then the pipeline at 8 sequences with each split in SPLITS. Each node a process pinned to
# one core with one thread.
# Usage: [ROUNDS=2] [SPLITS="6,24 9,21 12,18"] bash bench/mesh-pipeline-splits.sh [model.gguf]
set -euo pipefail
B=${ONEBIT:-target/release/onebit}
M=${1:-/tmp/b4/2b4t.gguf}
[ -f "$M" ] || { mkdir -p "$(dirname "$M")"; $B init --shape 2b4t -o "$M"; }
D=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$D"' EXIT
$B mesh new-key -o "$D/mesh.key"
printf 'key_file = "mesh.key"\nhead = "127.0.0.1:7631"\nworkers = ["127.0.0.1:7632"]\n' > "$D/mesh.toml"
date; lscpu | grep -E "Model name|^CPU\(s\)|Flags"
worker() { taskset -c 1 $B worker --listen 127.0.0.1:7632 --key-file "$D/mesh.key" --jobs 1 & sleep 0.3; }
echo "== plan (8 sequences)"
worker
taskset -c 0 $B plan "$M" --mesh "$D/mesh.toml" -t 1 --batch 8
wait
for round in $(seq "${ROUNDS:-2}"); do
  echo "== round $round: one node, 1 thread (core 0)"
  taskset -c 0 $B bench "$M" -t 1 -p 0 -n 32 -r 2 --batch 1,4,8
  for s in ${SPLITS:-6,24 9,21 12,18}; do
    echo "== round $round: pipeline, split $s"
    worker
    taskset -c 0 $B bench "$M" -t 1 -p 0 -n 32 -r 2 --batch 8 --mesh "$D/mesh.toml" \
      --worker-threads 1 --split "$s"
    wait
  done
done
