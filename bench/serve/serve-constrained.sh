#!/usr/bin/env bash
# What structured output costs a loaded server: onebit serve with 16 slots under
# bench/serve/loadtest.py (16 clients, short prompts, 128-token replies: decode-bound), every
# request plain, in JSON mode, held to a JSON schema, and to a schema whose string has a
# `pattern` (no free-text shortcut: every token's bytes walk its automaton), alternating.
# Loopback only; never run in CI.
#
#   bash bench/serve/serve-constrained.sh MODEL.gguf TOKENIZER.json
#
# Knobs: ROUNDS (2), SECONDS_PER_RUN (40), ONEBIT (binary), PY (python with httpx).
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:?a model file}
TOK=${2:?its tokenizer.json}
B=${ONEBIT:-target/release/onebit}
PY=${PY:-python3}
PORT=18310
"$B" serve "$MODEL" --tokenizer "$TOK" --slots 16 --port "$PORT" > /dev/null 2>&1 &
SRV=$!
trap 'kill "$SRV" 2>/dev/null || true' EXIT
for _ in $(seq 300); do # bounded: 300 s
  curl -sf "http://127.0.0.1:$PORT/health" > /dev/null 2>&1 && break
  kill -0 "$SRV" 2> /dev/null || exit 1
  sleep 1
done
lscpu | grep -E 'Model name|Flags' | cut -c1-600
date -u
git log --oneline -1
schema='{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer","minimum":0,"maximum":120},"tags":{"type":"array","items":{"type":"string","maxLength":8}}},"required":["name","age","tags"],"additionalProperties":false}'
patterned='{"type":"object","properties":{"code":{"type":"string","pattern":"^[A-Za-z0-9 ,.]{300,}$"}},"required":["code"]}'
for round in $(seq "${ROUNDS:-2}"); do
  for kind in plain json schema pattern; do
    case $kind in
      plain) rf=() ;;
      json) rf=(--response-format '{"type": "json_object"}') ;;
      schema) rf=(--response-format "{\"type\": \"json_schema\", \"json_schema\": {\"name\": \"s\", \"schema\": $schema}}") ;;
      pattern) rf=(--response-format "{\"type\": \"json_schema\", \"json_schema\": {\"name\": \"p\", \"schema\": $patterned}}") ;;
    esac
    printf '== round %s %-8s ' "$round" "$kind"
    "$PY" bench/serve/loadtest.py "http://127.0.0.1:$PORT" --clients 16 --seconds "${SECONDS_PER_RUN:-40}" \
      --max-tokens 128 --prompt-words 2 "${rf[@]}" |
      "$PY" -c 'import json,sys; j=json.load(sys.stdin); print(" ".join(f"{k}={j[k]}" for k in ("requests","errors","generated_tokens","aggregate_tok_s","ttft_p50_s","ttft_max_s")))'
  done
done
date -u
