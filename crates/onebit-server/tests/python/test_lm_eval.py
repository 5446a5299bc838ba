"""lm-evaluation-harness's own OpenAI-completions client (`local-completions`) scoring texts
through `onebit serve`: it finds the server's tokenizer routes by itself (its "remote"
tokenizer), sends token-id prompts with `echo` and `logprobs`, and parses the replies as it
does vLLM's and OpenAI's. Its loglikelihoods must equal the log-softmax of the model's
logits, computed here from the `onebit` package's logits (which equal the Rust engine's;
crates/onebit-py/tests), and agree with lm-eval's `hf` model scoring the same texts with
transformers on the checkpoint `onebit convert --for transformers` writes. Needs `lm_eval`,
transformers and the `onebit` package (.ci/run installs them)."""
import math
import subprocess

import numpy as np
import onebit
import pytest
from lm_eval.api.instance import Instance
from lm_eval.models.openai_completions import LocalCompletionsAPI

from conftest import BIN, ROOT, serve

PAIRS = [
    ("It is a truth universally", " acknowledged"),
    ("Mr. Darcy was", " proud and disagreeable"),
    ("Emma Woodhouse, handsome,", " clever, and rich"),
]
TEXT = "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife."


@pytest.fixture(scope="module")
def lm(server, monkeypatch_module):
    monkeypatch_module.setenv("OPENAI_API_KEY", "test-key")
    lm = LocalCompletionsAPI(base_url=server + "/v1/completions", model="austen", tokenizer_backend="auto",
                             auth_token="test-key", max_length=256, num_concurrent=1, max_retries=1)
    assert lm.tokenizer_backend == "remote", "lm-eval did not find the server's tokenizer routes"
    return lm


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def model():
    return onebit.AutoModelForCausalLM.from_pretrained(f"{ROOT}/models/austen.gguf", threads=1)


def score(model, context, continuation):
    """(sum of ln p(continuation | context), whether every continuation token is the argmax)."""
    logits = model.logits(context + continuation).astype(np.float64)
    total, greedy = 0.0, True
    for i, t in enumerate(continuation):
        row = logits[len(context) + i - 1]
        m = row.max()
        total += row[t] - m - math.log(np.exp(row - m).sum())
        greedy &= int(row.argmax()) == t
    return total, greedy


def test_loglikelihoods_equal_the_models_log_softmax(lm, model):
    reqs = [Instance(request_type="loglikelihood", doc={}, arguments=p, idx=i) for i, p in enumerate(PAIRS)]
    got = lm.loglikelihood(reqs)
    tok = model.tokenizer
    for (ctx, cont), (ll, greedy) in zip(PAIRS, got):
        want, want_greedy = score(model, tok.encode(ctx), tok.encode(cont))
        assert abs(ll - want) <= 1e-4 * max(1.0, abs(want)), (ctx, cont, ll, want)
        assert greedy == want_greedy
    # A continuation the model would write itself is greedy.
    ctx = tok.encode("It is a truth")
    logits = model.logits(ctx)
    cont = tok.decode(ctx + [int(logits[-1].argmax())])[len(tok.decode(ctx)):]
    [(ll, greedy)] = lm.loglikelihood([Instance(request_type="loglikelihood", doc={}, arguments=("It is a truth", cont), idx=0)])
    assert greedy and ll <= 0


def test_rolling_loglikelihood_is_the_texts_log_probability_after_the_end_token(lm, model):
    [got] = lm.loglikelihood_rolling([Instance(request_type="loglikelihood_rolling", doc={}, arguments=(TEXT,), idx=0)])
    tok = model.tokenizer
    eos = model.config["eos_token_id"]
    want, _ = score(model, [eos], tok.encode(TEXT))
    assert abs(got - want) <= 1e-4 * abs(want), (got, want)


def test_generate_until_stops_at_the_stop_string(lm):
    [text] = lm.generate_until([Instance(request_type="generate_until", doc={},
                                         arguments=("It is a truth", {"until": ["."], "max_gen_toks": 24}), idx=0)])
    assert text and "." not in text


# Sentence starts from data/persuasion.txt, each with its own ending and another's.
CLOZE = [
    ("She prized the frank, the open-hearted, the", [" eager character beyond all others.", " people think of letters in such a place as Bath."]),
    ("Captain Wentworth had no fortune. He had been lucky in his", [" profession; but spending freely, what had come freely, had realised nothing.", " picture, as they began to be in motion."]),
    ("Anne had been a most useful", [" friend to her.", " sort of fellow, and would do very well."]),
    ("Sir Walter Elliot, of Kellynch Hall, in Somersetshire, was a man who,", [" for his own amusement, never took up any book but the Baronetage.", " again, and Captain Wentworth walked in alone."]),
]


@pytest.fixture(scope="module")
def exact_server():
    # f32 KV cache and output head: the arithmetic transformers does (the defaults, f16 KV
    # and an int8 head, move a loglikelihood by ~0.05 nats: bench/lm_eval/README.md).
    yield from serve("--slots", "1", "--ctx", "256", "--kv-cache", "f32", "--head", "f32")


def test_loglikelihoods_agree_with_transformers_on_the_converted_checkpoint(exact_server, tmp_path_factory):
    from lm_eval.models.huggingface import HFLM

    hf_dir = tmp_path_factory.mktemp("austen-hf")
    subprocess.run([BIN, "convert", f"{ROOT}/models/austen.gguf", "--for", "transformers", "-o", str(hf_dir)],
                   check=True, capture_output=True)
    reqs = [Instance(request_type="loglikelihood", doc={}, arguments=(ctx, end), idx=i)
            for i, (ctx, ends) in enumerate(CLOZE) for end in ends]
    hf = HFLM(pretrained=str(hf_dir), dtype="float32", device="cpu", batch_size=1).loglikelihood(reqs)
    ours = LocalCompletionsAPI(base_url=exact_server + "/v1/completions", model="austen", tokenizer_backend="auto",
                               max_length=256, num_concurrent=1, max_retries=1).loglikelihood(reqs)
    for r, (a, ga), (b, gb) in zip(reqs, ours, hf):
        # Float summation order can move an activation across an int8 rounding boundary
        # (here at most 0.008 nats; bench/lm_eval: median 0.002, worst 0.07 over 800 choices).
        assert abs(a - b) <= 0.02 + 3e-4 * abs(b), (r.arguments, a, b)
        assert ga == gb
    # The true ending is the likelier one, in both.
    for i in range(len(CLOZE)):
        assert (ours[2 * i][0] > ours[2 * i + 1][0]) == (hf[2 * i][0] > hf[2 * i + 1][0])
