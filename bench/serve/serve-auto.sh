#!/usr/bin/env bash
# onebit serve on one node against `serve --mesh --strategy auto` over an emulated slow link on
# loopback (--emulate-link DELAY_MS,JITTER_MS on the head and the worker: every message held
# that long), under bench/serve/loadtest.py. Each node a process pinned to one core with one
# thread. Never run in CI.
#
#   bash bench/serve/serve-auto.sh MODEL.gguf TOKENIZER.json
#
# Knobs: ROUNDS (2), SECONDS_PER_RUN (40), CLIENTS (8), SLOTS (8), MAX_TOKENS (64), PROMPT_WORDS (12),
# EMULATE ("5,2": WiFi-like), MESH_FLAGS ("--strategy auto"; e.g. "--split 9,21" for a
# pipeline), ONEBIT (binary), PY (python with httpx).
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:?a model file}
TOK=${2:?its tokenizer.json}
B=${ONEBIT:-target/release/onebit}
PY=${PY:-python3}
SECS=${SECONDS_PER_RUN:-40}
CLIENTS=${CLIENTS:-8}
SLOTS=${SLOTS:-8}
MT=${MAX_TOKENS:-64}
EMU=${EMULATE:-5,2}
DIR=$(mktemp -d)
trap 'kill ${SRV:-0} ${WRK:-0} 2>/dev/null || true; rm -rf "$DIR"' EXIT
"$B" mesh new-key -o "$DIR/mesh.key"
printf 'key_file = "mesh.key"\nhead = "127.0.0.1:7641"\nworkers = ["127.0.0.1:7642"]\n' > "$DIR/mesh.toml"
lscpu | grep -E 'Model name|Flags' | cut -c1-600
date -u
PORT=18290
serve() { # label, extra serve flags...
  local label=$1; shift
  PORT=$((PORT + 1))
  taskset -c 0 "$B" serve "$MODEL" --tokenizer "$TOK" -t 1 --slots "$SLOTS" --ctx 512 \
    --port "$PORT" "$@" > "$DIR/server.log" 2>&1 &
  SRV=$!
  for _ in $(seq 300); do # bounded: 300 s (auto measures the mesh first)
    curl -sf "http://127.0.0.1:$PORT/health" > /dev/null 2>&1 && break
    kill -0 "$SRV" 2> /dev/null || { cat "$DIR/server.log"; exit 1; }
    sleep 1
  done
  echo "== $label"
  grep -E "^auto:|^mesh:" "$DIR/server.log" || true
  "$PY" bench/serve/loadtest.py "http://127.0.0.1:$PORT" --clients "$CLIENTS" \
    --seconds "$SECS" --max-tokens "$MT" --temperature 0 --prompt-words "${PROMPT_WORDS:-12}"
  kill -INT "$SRV"
  wait "$SRV" || true
}
for round in $(seq "${ROUNDS:-2}"); do
  serve "round $round: one node"
  taskset -c 1 "$B" worker --listen 127.0.0.1:7642 --key-file "$DIR/mesh.key" --jobs 2 \
    --emulate-link "$EMU" 2> "$DIR/worker.log" &
  WRK=$!
  sleep 0.3
  # Measured afresh in the first round (the link's emulation is part of the cache's key).
  remeasure=(); [ "$round" = 1 ] && remeasure=(--remeasure)
  read -r -a flags <<< "${MESH_FLAGS:---strategy auto}"
  [ "${flags[*]}" = "--strategy auto" ] || remeasure=()
  serve "round $round: --mesh ${flags[*]}, link $EMU ms" --mesh "$DIR/mesh.toml" \
    "${flags[@]}" --worker-threads 1 --emulate-link "$EMU" "${remeasure[@]}"
  kill "$WRK" 2>/dev/null || true
  wait "$WRK" 2>/dev/null || true
done
