#!/usr/bin/env bash
# onebit serve on a two-node tensor-parallel mesh on loopback (head pinned to core 0, worker to
# core 1, one thread each) under bench/serve/loadtest.py, for several onebit binaries in
# alternating rounds; the worker's bytes in and out per generated token. Never run in CI.
#
#   bash bench/serve/serve-mesh.sh MODEL.gguf TOKENIZER.json BIN...
#
# Knobs: ROUNDS (2), SECONDS_PER_RUN (40), CLIENTS (8), SLOTS (8), MAX_TOKENS (64),
# TEMPS ("0 0.8": one run per temperature), PY (python with httpx).
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:?a model file}
TOK=${2:?its tokenizer.json}
shift 2
PY=${PY:-python3}
ROUNDS=${ROUNDS:-2}
SECS=${SECONDS_PER_RUN:-40}
CLIENTS=${CLIENTS:-8}
SLOTS=${SLOTS:-8}
MT=${MAX_TOKENS:-64}
TEMPS=${TEMPS:-0 0.8}
DIR=$(mktemp -d)
trap 'kill ${SRV:-0} ${WRK:-0} 2>/dev/null || true; rm -rf "$DIR"' EXIT
"$1" mesh new-key -o "$DIR/mesh.key"
cat > "$DIR/mesh.toml" <<TOML
key_file = "mesh.key"
head = "127.0.0.1:7631"
workers = ["127.0.0.1:7632"]
TOML
lscpu | grep -E 'Model name|Flags' | cut -c1-600
date -u
PORT=18190
for round in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    for temp in $TEMPS; do
      PORT=$((PORT + 1))
      taskset -c 1 "$bin" worker --listen 127.0.0.1:7632 --key-file "$DIR/mesh.key" --jobs 1 \
        2> "$DIR/worker.log" &
      WRK=$!
      taskset -c 0 "$bin" serve "$MODEL" --tokenizer "$TOK" --mesh "$DIR/mesh.toml" --strategy tp \
        --wire f32 -t 1 --worker-threads 1 --slots "$SLOTS" --ctx 512 --port "$PORT" \
        > "$DIR/server.log" 2>&1 &
      SRV=$!
      for _ in $(seq 300); do # bounded: 300 s
        curl -sf "http://127.0.0.1:$PORT/health" > /dev/null 2>&1 && break
        kill -0 "$SRV" 2> /dev/null || { cat "$DIR/server.log"; exit 1; }
        sleep 1
      done
      echo "== round $round $(basename "$bin") temperature $temp"
      "$PY" bench/serve/loadtest.py "http://127.0.0.1:$PORT" --clients "$CLIENTS" \
        --seconds "$SECS" --max-tokens "$MT" --temperature "$temp" | tee "$DIR/load.json"
      kill -INT "$SRV"
      wait "$SRV" || true
      wait "$WRK" || true
      grep "stage done" "$DIR/worker.log" || tail -3 "$DIR/worker.log"
      "$PY" - "$DIR/load.json" "$DIR/worker.log" <<'PYEOF'
import json, re, sys
load = json.load(open(sys.argv[1]))
m = re.search(r"stage done: (\d+) steps, ([\d.]+) MB in, ([\d.]+) MB out", open(sys.argv[2]).read())
if m and load["generated_tokens"]:
    mb = float(m.group(2)) + float(m.group(3))
    print(f"worker in+out: {mb:.1f} MB, {mb * 1e3 / load['generated_tokens']:.1f} kB per generated token")
PYEOF
    done
  done
done
