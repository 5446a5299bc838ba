#!/usr/bin/env python3
"""Records llama.cpp's verdicts on GBNF inputs: the oracle of onebit's grammar reader.

For every grammar in crates/onebit-model/tests/fixtures/gbnf/*.gbnf, runs ik_llama.cpp's
gbnf-validator (built by bench/gbnf/build-validator.sh) on hand-written inputs, their
one-character edits and random strings over the grammar's characters, and writes
verdicts.json beside the grammars: whether the validator parsed the grammar, and for each
input whether it is valid, else where (in characters) it failed and how.

Usage: python3 bench/gbnf/make-fixtures.py VALIDATOR_BINARY [SOURCE_DESCRIPTION]
"""
import json
import os
import random
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "..", "crates", "onebit-model", "tests", "fixtures", "gbnf")

HAND = {
    "arith.gbnf": ["1", "1+2", "1 + 2*3", "(1+2)*x_1", "-(-a)", "((1))", "1.5/2.25", "1+", "1..2",
                   "(1", "1)", "x y", "", " 1", "1 +\t2", "_a9*b", "9a", "--1", "1.", "a*(b-(c/d))"],
    "json.gbnf": ['{}', '[]', '{"a": 1}', '{"a":[1,2,{"b":null}]}', '"x\\u00e9y"', '-0.5e+3', '01', '1.',
                  '[1,]', '{"a" 1}', 'true', 'tru', 'nul', '"\\q"', '"tab\tinside"', '"é"',
                  '{\n  "k": "v"\n}', '[\n\n1]', '12345678901234567', '1234567890123456', '"\\u12G4"', '[ ]'],
    "list.gbnf": ["- a\n", "- a\n- b\n", "- a\n(3 items)", "- \n", "-a\n", "- a", "- a\n(1234 items)",
                  "- é ü\n", "", "- a\n- b\n(12 items)", "- a\n(items)"],
    "repeat.gbnf": ["ab-123.", "abcd-123xx!...", "abcde-123.", "a-123.", "ab-12.", "ab-123yzx.", "ab-123xyzx.",
                    "ab-123!", "ab-123!.", "zz-999yzyz.", "ab-123never."],
    "unicode.gbnf": ["α é", "αβγ ABC é", "ω Xé😀ABC", "α aé", "α éé", "α", "a é", "α Ωé😀😀", "α \u00e8é", "α éD"],
    "ambiguous.gbnf": ["abc", "abbc", "ac", "abcx", "abcxxy", "abcyyy", "abcxy", "abcyx", "abbcxxx", "a", "ab", "bc"],
    "anychar.gbnf": ["<>", "<a>", "<a>b>", "<>>", "<>]", "<>[", "<>-", "<>]]", "<", ">", "<\n>", "<é>"],
    "escapes.gbnf": ['Aé\t"\\[|#', 'Aé\t"\\]\n|#', 'Aé\t"\\[||#', 'Aé "\\[|#', 'Aé\t"\\\\|#', 'Aé\t"\\[|'],
    "nullable.gbnf": ["d", "ad", "bd", "abd", "abccd", "ccd", "ba", "abc", "", "aabd", "acd"],
    "left-recursive.gbnf": ["1", "1+1"],
    "undefined.gbnf": ["a"],
    "bad-syntax.gbnf": ["a"],
    "open-repeat.gbnf": ["a"],
    "nullable-star.gbnf": ["c", "ac", "bc", "abc", "babac", "aac", "abab", "", "cc", "ca"],
    "empty-alt-plus.gbnf": ["a"],
}


def run(validator, grammar, text):
    with tempfile.NamedTemporaryFile("wb", delete=False) as f:
        f.write(text.encode("utf-8"))
        path = f.name
    try:
        p = subprocess.run([validator, grammar, path], capture_output=True, timeout=30)
    finally:
        os.unlink(path)
    out = p.stdout.decode("utf-8", "replace")
    if p.returncode != 0 or "failed to parse" in p.stderr.decode("utf-8", "replace"):
        return {"parsed": False}
    if "is valid according" in out:
        return {"parsed": True, "valid": True}
    m = re.search(r"Error: (.*?) at position (\d+)", out, re.S)
    return {"parsed": True, "valid": False, "error": m.group(1).split(" '")[0], "error_pos": int(m.group(2))}


def edits(s, alphabet, rng):
    out = set()
    for _ in range(6):
        if not s:
            break
        i = rng.randrange(len(s))
        c = rng.choice(alphabet)
        out.add(s[:i] + s[i + 1:])
        out.add(s[:i] + c + s[i:])
        out.add(s[:i] + c + s[i + 1:])
    return sorted(out)


def main():
    validator = sys.argv[1]
    source = sys.argv[2] if len(sys.argv) > 2 else "ik_llama.cpp examples/gbnf-validator"
    rng = random.Random(1)
    cases = []
    for name in sorted(HAND):
        grammar = os.path.join(FIX, name)
        hand = HAND[name]
        alphabet = sorted(set("".join(hand)) | set(" \n"))
        inputs = list(hand)
        for h in hand:
            inputs += edits(h, alphabet, rng)
        for _ in range(60):
            inputs.append("".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 9))))
        seen = set()
        for text in inputs:
            if text in seen:
                continue
            seen.add(text)
            v = run(validator, grammar, text)
            cases.append({"grammar": name, "input": text, **v})
            if not v["parsed"]:
                break
    with open(os.path.join(FIX, "verdicts.json.tmp"), "w") as f:
        json.dump({"validator": source, "cases": cases}, f, ensure_ascii=False, indent=0)
    os.replace(os.path.join(FIX, "verdicts.json.tmp"), os.path.join(FIX, "verdicts.json"))
    valid = sum(1 for c in cases if c.get("valid"))
    print(f"{len(cases)} cases, {valid} valid, grammars refused: "
          f"{sorted({c['grammar'] for c in cases if not c['parsed']})}")


if __name__ == "__main__":
    main()
