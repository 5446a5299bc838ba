#!/usr/bin/env bash
# What constrained sampling costs per token: the same 48 sampled tokens plain, in JSON mode,
# held to a JSON schema, to a schema whose string has a `pattern` (every token's bytes walk
# its automaton: no free-text shortcut) and to a GBNF grammar (tests/fixtures/gbnf/json.gbnf), alternating, ROUNDS times each, on the 2B4T shape (128,256-token
# vocabulary: the masks read every token) and on the shipped model (4,096 tokens).
#   bench/constrained-cost.sh [ROUNDS]    (needs /tmp/b4/2b4t.gguf and /tmp/b4/filler.json:
#   onebit init --shape 2b4t -o /tmp/b4/2b4t.gguf;
#   python3 bench/python/bench_python.py filler-tokenizer /tmp/b4/filler.json)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
bin=target/release/onebit
cargo build --release -q -p onebit-cli
schema='{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer","minimum":0,"maximum":120},"tags":{"type":"array","items":{"type":"string","maxLength":8}}},"required":["name","age","tags"],"additionalProperties":false}'
patterned='{"type":"object","properties":{"code":{"type":"string","pattern":"^[A-Za-z0-9 ,.]{300,}$"}},"required":["code"]}'
date -u; lscpu | grep -E "^Model name|^Flags|^CPU\(s\)"; git log --oneline -1
run() {
    local label=$1; shift
    printf '%-8s ' "$label"
    "$bin" "$@" 2>&1 >/dev/null | grep "prompt:"
}
for model in 2b4t austen; do
    if [ "$model" = 2b4t ]; then
        args=(run /tmp/b4/2b4t.gguf --tokenizer /tmp/b4/filler.json -p 'Hello there' -n 48 --temp 1.5 --seed 2)
    else
        args=(run models/austen.gguf -p 'Mr. Darcy said' -n 48 --temp 0.8 --seed 3)
    fi
    echo "== $model: ${args[*]}"
    for _ in $(seq "$rounds"); do
        run plain "${args[@]}"
        run json "${args[@]}" --json
        run schema "${args[@]}" --json-schema "$schema"
        run pattern "${args[@]}" --json-schema "$patterned"
        run grammar "${args[@]}" --grammar-file crates/onebit-model/tests/fixtures/gbnf/json.gbnf
    done
done
date -u
