#!/usr/bin/env bash
# onebit serve (16 slots, then 1 slot) and llama-server (--parallel 16 --cont-batching) under
# bench/serve/loadtest.py on loopback, one after the other on this machine, plus the engine's
# own batch-1 and batch-16 decode rates in the same run. Never run in CI.
#
#   LLAMA_BIN=/path/to/llama.cpp/build/bin bash bench/serve/serve-load.sh TQ2_0.gguf [SHIPPED.gguf]
#
# TQ2_0.gguf: a 2B4T-shaped file both engines read (made by llama.cpp's own llama-quantize);
# SHIPPED.gguf (default models/austen.gguf): the small trained model, onebit only.
# Knobs: SECONDS_PER_RUN (60), CLIENTS (32), MAX_TOKENS_2B4T (64), PY (python with httpx),
# ROUNDS (1: onebit 16-slot / 1-slot pairs on the 2B4T file), ONLY_SHIPPED=1 (skip the 2B4T runs).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIG=${1:?a 2B4T TQ2_0 gguf}
SMALL=${2:-models/austen.gguf}
ONEBIT=${ONEBIT:-target/release/onebit}
PY=${PY:-python3}
SECS=${SECONDS_PER_RUN:-60}
CLIENTS=${CLIENTS:-32}
MT=${MAX_TOKENS_2B4T:-64}
PORT=18090
URL=http://127.0.0.1:$PORT
LOG=$(mktemp)
trap 'kill "${SRV:-0}" 2>/dev/null || true; rm -f "$LOG"' EXIT

lscpu | grep -E 'Model name|Flags' | cut -c1-600
date -u

wait_up() { # bounded: 600 s
  for _ in $(seq 600); do
    curl -sf "$URL/health" >/dev/null 2>&1 && return 0
    kill -0 "$SRV" 2>/dev/null || { cat "$LOG"; return 1; }
    sleep 1
  done
  return 1
}

# A fresh port per server: a stopped llama-server can hold its port a while after its exit.
next_port() { PORT=$((PORT + 1)); URL=http://127.0.0.1:$PORT; }

serve() { # name max_tokens command...
  local name=$1 mt=$2; shift 2
  echo "=== $name"
  "$@" >"$LOG" 2>&1 &
  SRV=$!
  wait_up
  "$PY" bench/serve/loadtest.py "$URL" --clients "$CLIENTS" --seconds "$SECS" --max-tokens "$mt"
  curl -s "$URL/metrics" | grep -E '^onebit_(requests_total|tokens_generated_total|prompt_tokens_per_second|tokens_per_second) ' || true
  kill "$SRV"; wait "$SRV" 2>/dev/null || true
  # llama-server may hold the port a moment after its exit: wait (bounded) until it is free.
  for _ in $(seq 60); do curl -s "$URL/health" >/dev/null 2>&1 || break; sleep 1; done
}

if [ -z "${ONLY_SHIPPED:-}" ]; then
for round in $(seq "${ROUNDS:-1}"); do
  for slots in 16 1; do
    next_port
    serve "round $round: onebit serve, 2B4T TQ2_0 file, $slots slots" "$MT" \
      "$ONEBIT" serve "$BIG" --port $PORT --slots $slots -t 2
  done
done
fi
if [ -n "${LLAMA_BIN:-}" ] && [ -z "${ONLY_SHIPPED:-}" ]; then
  next_port
  serve "llama-server $(cd "$LLAMA_BIN/../.." && git rev-parse --short HEAD 2>/dev/null || echo ?), 2B4T TQ2_0 file, --parallel 16 --cont-batching" "$MT" \
    "$LLAMA_BIN/llama-server" -m "$BIG" --port $PORT -t 2 --parallel 16 --cont-batching -c $((16 * 512))
fi
for slots in 16 1; do
  next_port
  serve "onebit serve, shipped model, $slots slots" 64 "$ONEBIT" serve "$SMALL" --port $PORT --slots $slots -t 2
done
echo "=== engine alone, same run: onebit bench $BIG -p 64 -n 32 --batch 1,16"
"$ONEBIT" bench "$BIG" -p 64 -n 32 -t 2 -r 3 --batch 1,16
