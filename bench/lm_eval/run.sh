#!/usr/bin/env bash
# lm-evaluation-harness scoring a model two ways on the same offline task: through
# `onebit serve` (lm-eval's local-completions client) and with transformers on the checkpoint
# `onebit convert --for transformers` writes (lm-eval's hf model); then the two runs' accuracy
# and per-choice loglikelihoods side by side.
#   PY=venv/bin/python bash bench/lm_eval/run.sh [MODEL.gguf] [TEXT] [N]
# SERVE_FLAGS (default "--kv-cache f32 --head f32", transformers' arithmetic; "" for the
# server's defaults); ONEBIT (default target/release/onebit). Needs lm_eval[api] and
# transformers in PY's environment; runs offline.
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:-models/austen.gguf}
text=${2:-data/persuasion.txt}
n=${3:-200}
py=${PY:-python3}
bin=${ONEBIT:-target/release/onebit}
flags=${SERVE_FLAGS---kv-cache f32 --head f32}
work=$(mktemp -d /tmp/onebit-lm-eval.XXXX)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OPENAI_API_KEY=none
lscpu | grep -E 'Model name|Flags' | cut -c1-300
"$py" bench/lm_eval/make_task.py "$text" "$work/task" --n "$n"
"$bin" convert "$model" --for transformers -o "$work/hf" >/dev/null
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# shellcheck disable=SC2086
"$bin" serve "$model" --port "$port" --slots 1 $flags >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
id=$(curl -s "http://127.0.0.1:$port/v1/models" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')
echo "== onebit serve $flags (local-completions)"
t0=$(date +%s.%N)
"$py" -m lm_eval --model local-completions \
  --model_args "base_url=http://127.0.0.1:$port/v1/completions,model=$id,num_concurrent=1,max_length=256" \
  --include_path "$work/task" --tasks onebit_cloze --output_path "$work/server" --log_samples 2>/dev/null | grep -E '^\|'
echo "wall: $(echo "$(date +%s.%N) - $t0" | bc) s"
echo "== transformers (hf, float32, cpu)"
t0=$(date +%s.%N)
"$py" -m lm_eval --model hf --model_args "pretrained=$work/hf,dtype=float32" --device cpu --batch_size 1 \
  --include_path "$work/task" --tasks onebit_cloze --output_path "$work/hf-out" --log_samples 2>/dev/null | grep -E '^\|'
echo "wall: $(echo "$(date +%s.%N) - $t0" | bc) s"
echo "== per choice, onebit vs transformers"
"$py" bench/lm_eval/compare.py "$work/server" "$work/hf-out"
