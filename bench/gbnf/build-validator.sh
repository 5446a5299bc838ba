#!/usr/bin/env bash
# Builds ik_llama.cpp's examples/gbnf-validator (llama.cpp's grammar reader) from its
# grammar sources alone, with bench/gbnf/validator-stubs.cpp for the symbols of libllama and
# ggml its path never calls. Usage: build-validator.sh IK_LLAMA_SOURCE_DIR OUT_BINARY
# (the source from `fetch github:ikawrakow/ik_llama.cpp`, e.g. `git archive HEAD src include
# ggml/include examples/gbnf-validator | tar -x -C DIR`). Needs g++ with C++17.
set -euo pipefail
src=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
inc=(-I"$src/include" -I"$src/src" -I"$src/ggml/include")
for f in "$src/src/llama-grammar.cpp" "$src/src/unicode.cpp" "$src/src/unicode-data.cpp" \
         "$src/examples/gbnf-validator/gbnf-validator.cpp" "$here/validator-stubs.cpp"; do
    g++ -O1 -std=c++17 "${inc[@]}" -c "$f" -o "$tmp/$(basename "$f").o"
done
g++ -o "$out.tmp" "$tmp"/*.o
mv "$out.tmp" "$out"
echo "built $out"
