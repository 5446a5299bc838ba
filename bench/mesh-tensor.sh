#!/bin/bash
# The tensor-parallel executor against one node and the pipeline on the 2B4T shape, on
# loopback: one node with 1 and 2 threads, then a head and one worker, each a process pinned
# to one core with one thread: tensor parallel (equal pieces of every block and of the
# output head), and the pipeline (default split).
# Usage: [ROUNDS=2] [TP_ARGS="--wire q8 --tp-merge sum"] [NO_PP=1] bash bench/mesh-tensor.sh [model.gguf]
# (default model: makes /tmp/b4/2b4t.gguf; TP_ARGS go to the tensor-parallel run, NO_PP=1 skips the pipeline)
set -euo pipefail
B=${ONEBIT:-target/release/onebit}
M=${1:-/tmp/b4/2b4t.gguf}
[ -f "$M" ] || { mkdir -p "$(dirname "$M")"; $B init --shape 2b4t -o "$M"; }
D=$(mktemp -d)
# A failed bench leaves neither a worker listening nor the key behind.
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$D"' EXIT
$B mesh new-key -o "$D/mesh.key"
printf 'key_file = "mesh.key"\nhead = "127.0.0.1:7621"\nworkers = ["127.0.0.1:7622"]\n' > "$D/mesh.toml"
date; lscpu | grep -E "Model name|^CPU\(s\)|Flags"
mesh() {
  taskset -c 1 $B worker --listen 127.0.0.1:7622 --key-file "$D/mesh.key" --jobs 1 &
  sleep 0.3
  taskset -c 0 $B bench "$M" -t 1 -p 0 -n 64 -r 3 --batch 1,8 --mesh "$D/mesh.toml" --worker-threads 1 "$@"
  wait
}
for round in $(seq "${ROUNDS:-2}"); do
  echo "== round $round: one node, 1 thread (core 0)"
  taskset -c 0 $B bench "$M" -t 1 -p 0 -n 64 -r 3 --batch 1,8
  echo "== round $round: one node, 2 threads"
  $B bench "$M" -t 2 -p 0 -n 64 -r 3 --batch 1,8
  echo "== round $round: tensor parallel, 2 processes x 1 thread ${TP_ARGS:-}"
  # shellcheck disable=SC2086 # TP_ARGS is a list of flags
  mesh --strategy tp ${TP_ARGS:-}
  [ -n "${NO_PP:-}" ] && continue
  echo "== round $round: pipeline, 2 processes x 1 thread, default split"
  mesh
done
