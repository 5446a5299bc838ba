#!/bin/bash
# A model bigger than one node: the 70B shape (B3 layout, 1.6 bits per weight; a 4096-token
# vocabulary so the shipped tokenizer prints its text) across two processes, each held to
# LIMIT GB (--mem-limit: about half of what the whole model needs), head and worker in two
# network namespaces joined by a 1 Gbit/s tbf-shaped veth pair, one core and one thread
# each. Shows: one process held to LIMIT refuses the model; the pipeline of two runs it and
# prints exactly what one unlimited process prints; tok/s and each process's peak RSS.
# Needs root and ~15 GB of disk. Usage: [LIMIT=9] [N=8] bash bench/mesh-70b.sh [model.gguf]
set -euo pipefail
B=$(realpath "${ONEBIT:-target/release/onebit}")
M=${1:-/tmp/b70/70b-b3.gguf}
LIMIT=${LIMIT:-9}; N=${N:-8}
T=$(realpath models/austen.tokenizer.json)
[ -f "$M" ] || { mkdir -p "$(dirname "$M")"; $B init --shape 70b --format b3 --vocab 4096 -o "$M"; }
M=$(realpath "$M")
. "$(dirname "$0")/mesh-netns.sh" 1gbit
date; lscpu | grep -E "Model name|^CPU\(s\)|Flags"; free -g | head -2
echo "model: $M ($(du -h "$M" | cut -f1)); each process held to $LIMIT GB; link: veth, tbf 1gbit"
RUN=(run "$M" --tokenizer "$T" -p "It is a truth universally acknowledged" -n "$N" -t 1)
rss() { grep -E "Maximum resident" "$1" | awk '{printf "%.2f GB", $6/1e6}'; }
echo "== one process held to $LIMIT GB"
taskset -c 0 $B "${RUN[@]}" --mem-limit "$LIMIT" 2>&1 | tail -1 || true
echo "== one process, no limit (the reference text)"
/usr/bin/time -v taskset -c 0 $B "${RUN[@]}" > "$D/one.txt" 2> "$D/one.err"
grep -E "^prompt:" "$D/one.err"; echo "    peak RSS $(rss "$D/one.err")"
echo "== pipeline of two, each held to $LIMIT GB"
ip netns exec $W /usr/bin/time -v taskset -c 1 $B worker --listen 10.232.9.2:7662 --key-file "$D/mesh.key" --jobs 1 --mem-limit "$LIMIT" 2> "$D/w.err" &
sleep 0.5
ip netns exec $A /usr/bin/time -v taskset -c 0 $B "${RUN[@]}" --mem-limit "$LIMIT" --mesh "$D/mesh.toml" --worker-threads 1 --step-timeout 120 > "$D/two.txt" 2> "$D/two.err"
wait
grep -E "^prompt:|^mesh:" "$D/two.err"
echo "    head peak RSS $(rss "$D/two.err"), worker peak RSS $(rss "$D/w.err")"
if cmp -s "$D/one.txt" "$D/two.txt"; then echo "text: identical to one process"; else echo "text: DIFFERS"; diff "$D/one.txt" "$D/two.txt" || true; fi
