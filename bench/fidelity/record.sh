#!/usr/bin/env bash
# Records the cross-engine oracle fixtures in crates/onebit-model/tests/fixtures/peers/:
# files that llama.cpp, ik_llama.cpp and bitnet.cpp make with their own quantizers from
# onebit's trained models, and what each engine computes (greedy tokens, logits, top-2 per
# step, perplexity) on its own files and on files onebit exports for it. The tests
# (tests/peer_fixtures.rs) then hold onebit to those numbers. Never run in CI.
#
# Needs the engines already built from their public sources (their own CMake builds; not
# scripted here) and their bin folders in:
#   LLAMA_CPP    llama.cpp c392e50        (llama-quantize, llama-perplexity, llama-simple)
#   IK_LLAMA     ik_llama.cpp 8337e4c     (llama-quantize, llama-simple)
#   BITNET_CPP   bitnet.cpp c82b5e6 with its llama.cpp fork 406a503 (llama-quantize)
# and each engine's include folders next to bin/../.. (for the peerlogits driver, compiled
# here against that engine's library). ONEBIT is the onebit binary (target/release/onebit).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${LLAMA_CPP:?set LLAMA_CPP to the llama.cpp build/bin folder}" "${IK_LLAMA:?}" "${BITNET_CPP:?}"
ONEBIT=${ONEBIT:-target/release/onebit}
FX=crates/onebit-model/tests/fixtures/peers
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
PROMPT=934,367,259,1986,498,73,1155,553,3106   # "It is a truth universally acknowledged"
STEPS=32

driver() { # name define bin: compile bench/fidelity/peerlogits.cpp against an engine
  local root; root=$(cd "$3/../.." && pwd)
  local src=$root; [ -d "$root/3rdparty/llama.cpp" ] && src=$root/3rdparty/llama.cpp
  local dirs=() libs=() d
  for lib in llama ggml ggml-base; do
    d=$(find "$root/build" -name "lib$lib.so" -printf '%h\n' | head -1)
    [ -n "$d" ] && { dirs+=("-L$d" "-Wl,-rpath,$d"); libs+=("-l$lib"); }
  done
  g++ -O2 -w "-D$2" -I"$src/include" -I"$src/ggml/include" bench/fidelity/peerlogits.cpp \
      "${dirs[@]}" "${libs[@]}" -o "$W/peerlogits-$1"
}
driver llamacpp PEER_UPSTREAM "$LLAMA_CPP"
driver ik PEER_IK "$IK_LLAMA"
driver bitnet PEER_BITNET "$BITNET_CPP"

# record NAME ENGINE_NAME DRIVER FILE MADE_BY: peer's tokens, top-2 and first logits row.
record() {
  local out="$W/$1"
  "$W/peerlogits-$3" "$4" "$STEPS" "$PROMPT" "$out" 1 > "$out.txt" 2>"$out.err" || { cat "$out.err"; exit 1; }
  head -c $((4 * 4096)) "$out.logits" > "$FX/$1.logits.f32"
  python3 - "$out.txt" "$FX/$1.json" "$2" "$4" "$5" "$1" <<'PY'
import json, sys, hashlib, os
txt, dst, engine, model, made_by, name = sys.argv[1:]
lines = open(txt).read().split("\n")
top2 = [[int(p[3]), float(p[4]), int(p[5]), float(p[6])] for p in (l.split() for l in lines) if p[:1] == ["step"]]
tokens = [int(t) for t in next(l for l in lines if l.startswith("tokens:")).split()[1:]]
rec = {"engine": engine, "made_by": made_by, "model": os.path.basename(model),
       "sha256": hashlib.sha256(open(model, "rb").read()).hexdigest(),
       "prompt": [int(t) for t in os.environ["PROMPT"].split(",")], "tokens": tokens,
       "top2": top2, "logits": name + ".logits.f32"}
json.dump(rec, open(dst, "w"), indent=1)
PY
}
export PROMPT

LC="llama.cpp c392e50"; IK="ik_llama.cpp 8337e4c"; BN="bitnet.cpp c82b5e6"
# 1. Peer files from onebit's models, made by each peer's own quantizer.
$ONEBIT convert $FX/silu-t2.gguf --for llama.cpp --to f32 -o "$W/silu-llamacpp-f32.gguf"
for t in tq2_0 tq1_0; do
  "$LLAMA_CPP/llama-quantize" "$W/silu-llamacpp-f32.gguf" "$FX/llamacpp-$t.gguf" "${t^^}" 1 > /dev/null 2>&1
  record "llamacpp-$t" "$LC" llamacpp "$FX/llamacpp-$t.gguf" "$LC llama-quantize (onebit convert silu-t2.gguf --for llama.cpp --to f32) ${t^^}"
done
$ONEBIT convert $FX/silu-t2.gguf --for bitnet.cpp --to f32 -o "$W/silu-bitnet-f32.gguf"
# bitnet.cpp's I2_S quantizer must run on one thread (its chunks overlap otherwise).
"$BITNET_CPP/llama-quantize" "$W/silu-bitnet-f32.gguf" "$FX/bitnetcpp-i2_s.gguf" I2_S 1 > /dev/null 2>&1
record bitnetcpp-i2_s "$BN" bitnet "$FX/bitnetcpp-i2_s.gguf" "$BN llama-quantize (onebit convert silu-t2.gguf --for bitnet.cpp --to f32) I2_S 1"
$ONEBIT convert $FX/relu2-t2.gguf --for ik_llama.cpp --to f32 -o "$W/relu2-ik-f32.gguf"
for t in iq2_bn iq1_bn; do
  "$IK_LLAMA/llama-quantize" "$W/relu2-ik-f32.gguf" "$FX/ik-$t.gguf" "${t^^}" 1 > /dev/null 2>&1
  record "ik-$t" "$IK" ik "$FX/ik-$t.gguf" "$IK llama-quantize (onebit convert relu2-t2.gguf --for ik_llama.cpp --to f32) ${t^^}"
done

# 2. onebit's exports run by each peer (files not committed: the test rebuilds them and
#    checks the hash).
export_run() { # name source target layout engine_name driver
  $ONEBIT convert "$FX/$2" --for "$3" --to "$4" -o "$W/$1.gguf"
  record "$1" "$5" "$6" "$W/$1.gguf" "onebit convert $2 --for $3 --to $4"
}
export_run onebit-for-llamacpp-tq2_0 silu-t2.gguf llama.cpp tq2_0 "$LC" llamacpp
export_run onebit-for-llamacpp-tq1_0 silu-t2.gguf llama.cpp tq1_0 "$LC" llamacpp
export_run onebit-for-bitnetcpp-i2_s silu-t2.gguf bitnet.cpp i2_s "$BN" bitnet
export_run onebit-for-ik-iq2_bn relu2-t2.gguf ik_llama.cpp iq2_bn "$IK" ik
export_run onebit-for-ik-iq1_bn relu2-t2.gguf ik_llama.cpp iq1_bn "$IK" ik

# 3. Perplexity as llama-perplexity computes it, on llama.cpp's TQ2_0 file.
"$LLAMA_CPP/llama-perplexity" -m "$FX/llamacpp-tq2_0.gguf" -f data/persuasion.txt -c 256 \
    --chunks 16 -t 2 > "$W/ppl.out" 2>&1
grep -E "Final estimate" "$W/ppl.out" | tee "$FX/llamacpp-tq2_0.perplexity.txt"
echo "fixtures written to $FX"
