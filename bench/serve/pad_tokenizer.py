#!/usr/bin/env python3
"""Pads a tokenizer.json with reserved special tokens up to a model's vocabulary size, as
Llama 3 pads its own (`<|reserved_special_token_N|>`), so a synthetic 2B4T-shaped model
(`onebit init --shape 2b4t`, 128256 embedding rows) can be served with the shipped tokenizer.

    python3 bench/serve/pad_tokenizer.py models/austen.tokenizer.json 128256 /tmp/b4/tokenizer.json
"""
import json
import sys

src, size, dst = sys.argv[1], int(sys.argv[2]), sys.argv[3]
tok = json.load(open(src))
used = set(tok["model"]["vocab"].values()) | {t["id"] for t in tok.get("added_tokens", [])}
n = max(used) + 1
tok.setdefault("added_tokens", []).extend(
    {"id": i, "content": f"<|reserved_special_token_{i}|>", "single_word": False, "lstrip": False,
     "rstrip": False, "normalized": False, "special": True}
    for i in range(n, size)
)
json.dump(tok, open(dst, "w"))
print(f"{src}: {n} tokens -> {size} ({dst})")
