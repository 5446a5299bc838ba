#!/bin/bash
# The planner's predictions against measured runs on loopback, 2B4T shape, head pinned to
# core 0 and one worker to core 1, one thread each: `onebit plan --remeasure --batch 8`, then
# for each of ROUNDS rounds one node, tensor parallel and the pipeline at the planner's
# throughput split, each at batch 1 and 8 (onebit bench -p 0 -n 64 -r 3).
# Usage: [ROUNDS=2] [SPLIT=6,24] bash bench/mesh-plan-check.sh [model.gguf]
set -euo pipefail
B=${ONEBIT:-target/release/onebit}
M=${1:-/tmp/b4/2b4t.gguf}
[ -f "$M" ] || { mkdir -p "$(dirname "$M")"; $B init --shape 2b4t -o "$M"; }
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
$B mesh new-key -o "$D/mesh.key" > /dev/null
printf 'key_file = "mesh.key"\nhead = "127.0.0.1:7631"\nworkers = ["127.0.0.1:7632"]\n' > "$D/mesh.toml"
date; lscpu | grep -E "Model name|^CPU\(s\)|Flags"
worker() { taskset -c 1 $B worker --listen 127.0.0.1:7632 --key-file "$D/mesh.key" --jobs 1 2> /dev/null & sleep 0.3; }
echo "== plan"
worker
taskset -c 0 $B plan "$M" --mesh "$D/mesh.toml" -t 1 --batch 8 --remeasure --wire f32
wait
show() { grep -E "tg64|mesh:" | sed 's/^/    /'; }
for round in $(seq "${ROUNDS:-2}"); do
  echo "== round $round: one node (core 0)"
  taskset -c 0 $B bench "$M" -t 1 -p 0 -n 64 -r 3 --batch 1,8 2>&1 | show
  echo "== round $round: tensor parallel"
  worker
  taskset -c 0 $B bench "$M" -t 1 -p 0 -n 64 -r 3 --batch 1,8 --mesh "$D/mesh.toml" --worker-threads 1 --strategy tp 2>&1 | show
  wait
  echo "== round $round: pipeline, split ${SPLIT:-6,24}"
  worker
  taskset -c 0 $B bench "$M" -t 1 -p 0 -n 64 -r 3 --batch 1,8 --mesh "$D/mesh.toml" --worker-threads 1 --split "${SPLIT:-6,24}" 2>&1 | show
  wait
done
