"""onebit's Python inference API against the `onebit` CLI on the shipped model."""

import math
import re
import subprocess

import numpy as np
import pytest

import onebit
from conftest import MODEL, ROOT

PROMPT = "It is a truth universally acknowledged"


def cli(onebit_bin, *args):
    r = subprocess.run([onebit_bin, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout, r.stderr


def test_greedy_generation_equals_the_cli(model, onebit_bin):
    out, _ = cli(onebit_bin, "run", str(MODEL), "-p", PROMPT, "-n", "48", "--temp", "0")
    # The CLI prints the prompt, the reply and a newline.
    assert out.startswith(PROMPT) and out.endswith("\n")
    want = out[len(PROMPT) : -1]
    got = model.generate(PROMPT, max_new_tokens=48)
    assert len(want) > 20
    assert got == want


def test_sampled_generation_equals_the_cli_with_the_same_seed(model, onebit_bin):
    flags = ["--temp", "0.8", "--top-k", "20", "--top-p", "0.9", "--seed", "7", "--repeat-penalty", "1.1"]
    out, _ = cli(onebit_bin, "run", str(MODEL), "-p", PROMPT, "-n", "40", *flags)
    got = model.generate(PROMPT, max_new_tokens=40, temperature=0.8, top_k=20, top_p=0.9, seed=7, repetition_penalty=1.1)
    assert got == out[len(PROMPT) : -1]


def test_json_mode_equals_the_cli_and_starts_an_object(model, onebit_bin):
    out, _ = cli(onebit_bin, "run", str(MODEL), "-p", PROMPT, "-n", "40", "--temp", "0.8", "--seed", "3", "--json")
    got = model.generate(PROMPT, max_new_tokens=40, temperature=0.8, seed=3, json_object=True)
    assert got == out[len(PROMPT) : -1]
    assert got.startswith("{") and got != model.generate(PROMPT, max_new_tokens=40, temperature=0.8, seed=3)


def test_json_schema_equals_the_cli_and_is_a_document_of_the_schema(model, onebit_bin):
    import json
    schema = {"type": "object", "additionalProperties": False, "required": ["mood", "n"],
              "properties": {"mood": {"enum": ["happy", "sad"]}, "n": {"type": "integer", "minimum": 1, "maximum": 9}}}
    out, _ = cli(onebit_bin, "run", str(MODEL), "-p", PROMPT, "-n", "120", "--temp", "0.8", "--seed", "3",
                 "--json-schema", json.dumps(schema))
    got = model.generate(PROMPT, max_new_tokens=120, temperature=0.8, seed=3, json_schema=schema)
    assert got == out[len(PROMPT) : -1]
    doc = json.loads(got)
    assert list(doc) == ["mood", "n"] and doc["mood"] in ("happy", "sad") and 1 <= doc["n"] <= 9
    assert model.generate(PROMPT, max_new_tokens=120, temperature=0.8, seed=3, json_schema=json.dumps(schema)) == got
    with pytest.raises(ValueError, match="uniqueItems"):
        model.generate(PROMPT, json_schema={"type": "array", "uniqueItems": True})


def test_grammar_equals_the_cli_and_is_a_sentence_of_the_grammar(model, onebit_bin):
    import re
    grammar = 'root ::= ("Yes" | "No") ", " word (" " word){0,3} "."\nword ::= [a-z]{1,10}\n'
    out, _ = cli(onebit_bin, "run", str(MODEL), "-p", PROMPT, "-n", "60", "--temp", "0.9", "--seed", "5",
                 "--grammar", grammar)
    got = model.generate(PROMPT, max_new_tokens=60, temperature=0.9, seed=5, grammar=grammar)
    assert got == out[len(PROMPT) : -1]
    assert re.fullmatch(r"(Yes|No), [a-z]{1,10}( [a-z]{1,10}){0,3}\.", got), got
    with pytest.raises(ValueError, match="undefined rule word"):
        model.generate(PROMPT, grammar='root ::= word\n')


def test_stream_pieces_concatenate_to_the_full_text(model):
    full = model.generate(PROMPT, max_new_tokens=40)
    s = model.generate(PROMPT, max_new_tokens=40, stream=True)
    pieces = list(s)
    assert len(pieces) > 5
    assert "".join(pieces) == full == s.text
    assert s.finish_reason == "length" and s.tokens == 40


def test_stop_strings_and_cancelling_a_stream(model):
    full = model.generate(PROMPT, max_new_tokens=40)
    stop = full[10:14]
    cut = model.generate(PROMPT, max_new_tokens=40, stop=stop)
    assert cut == full[: full.index(stop)]
    s = model.generate(PROMPT, max_new_tokens=200, stream=True)
    first = next(s)
    s.close()
    assert list(s) == [] and s.finish_reason == "cancelled" and s.text == first
    # The model is free again after a cancelled stream.
    assert model.generate(PROMPT, max_new_tokens=40) == full


def test_batched_generation_equals_one_at_a_time(model):
    prompts = [PROMPT, "Mr. Darcy", "She was", "Emma Woodhouse, handsome, clever"]
    batch = model.generate(prompts, max_new_tokens=24)
    assert batch == [model.generate(p, max_new_tokens=24) for p in prompts]


def test_logits_score_text_as_the_cli_perplexity_does(model, onebit_bin, tmp_path):
    text = (ROOT / "data" / "persuasion.txt").read_text()[:3000]
    f = tmp_path / "t.txt"
    f.write_text(text)
    out, _ = cli(onebit_bin, "perplexity", str(MODEL), "-f", str(f), "-c", "128", "--chunks", "2")
    want = float(re.search(r"PPL = ([0-9.]+)", out).group(1))
    tok = model.tokenizer
    ids = tok.encode(text, add_special_tokens=True)
    bos = model.config["bos_token_id"]
    adds_bos = tok.encode("a", add_special_tokens=True)[0] != tok.encode("a", add_special_tokens=False)[0]
    nll = []
    for c in range(2):
        chunk = ids[c * 128 : (c + 1) * 128]
        feed = ([bos] + chunk[1:]) if adds_bos else chunk
        logits = model.logits(feed).astype(np.float64)
        assert logits.shape == (128, model.config["vocab_size"])
        for j in range(64, 127):
            row = logits[j]
            m = row.max()
            nll.append(-(row[chunk[j + 1]] - m - math.log(np.exp(row - m).sum())))
    ppl = math.exp(sum(nll) / len(nll))
    print(f"perplexity from Python logits {ppl:.6f}, onebit perplexity {want}")
    assert abs(ppl - want) <= 1e-4 * want, (ppl, want)


def test_logits_are_an_owned_array_and_last_only_matches(model):
    ids = model.tokenizer.encode(PROMPT)
    all_rows = model.logits(ids)
    last = model.logits(ids, last_only=True)
    assert all_rows.dtype == np.float32 and all_rows.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(last[0], all_rows[-1])
    # Greedy's first token is the argmax of the last row.
    tok, top = model.tokenizer, int(all_rows[-1].argmax())
    want = tok.decode(ids + [top])[len(tok.decode(ids)) :]
    assert want and model.generate(ids, max_new_tokens=1) == want


def test_ternary_models_load_without_a_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        onebit.AutoModelForCausalLM.from_pretrained(str(MODEL), threads=1)


def test_tokenizer_round_trips(model):
    tok = model.tokenizer
    for text in ["Hello world", "It is a truth universally acknowledged, that a single man", "café — naïve", "  spaces\n\nand lines"]:
        ids = tok.encode(text, add_special_tokens=False)
        assert all(isinstance(i, int) for i in ids)
        assert tok.decode(ids) == text
    chat = tok.apply_chat_template([{"role": "user", "content": "Who is Emma?"}])
    assert "Who is Emma?" in chat and isinstance(tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=True), list)
    assert tok.vocab_size == model.config["vocab_size"]


def test_errors_are_python_exceptions_with_the_engine_message(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        onebit.AutoModelForCausalLM.from_pretrained(str(tmp_path / "missing.gguf"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 40)
    with pytest.raises(onebit.OneBitError):
        onebit.AutoModelForCausalLM.from_pretrained(str(bad))
    with pytest.raises(ValueError, match="kv_cache"):
        onebit.AutoModelForCausalLM.from_pretrained(str(MODEL), kv_cache="f8")
    with pytest.raises(ValueError, match="quantization_config"):
        onebit.AutoModelForCausalLM.from_pretrained(str(MODEL), quantization_config="4bit")
    with pytest.raises(ValueError, match="temperature"):
        model.generate(PROMPT, temperature=float("nan"))
    with pytest.raises(ValueError, match="top_p|top-p"):
        model.generate(PROMPT, top_p=2.0)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.logits([1, 2, 10**9])
    with pytest.raises(ValueError, match="no tokens"):
        model.logits([])
    with pytest.raises(ValueError, match="context"):
        model.logits([1] * 5000)
    with pytest.raises(OverflowError):
        model.logits([-1])
    # Still usable after every error above.
    assert model.generate(PROMPT, max_new_tokens=4)
