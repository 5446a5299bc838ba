"""lm-evaluation-harness's own OpenAI-completions client (`local-completions`) scoring texts
through `onebit serve`: it finds the server's tokenizer routes by itself (its "remote"
tokenizer), sends token-id prompts with `echo` and `logprobs`, and parses the replies as it
does vLLM's and OpenAI's. Its loglikelihoods must equal the log-softmax of the model's
logits, computed here from the `onebit` package's logits (which equal the Rust engine's;
crates/onebit-py/tests). Needs `lm_eval` and the `onebit` package (.ci/run installs both)."""
import math

import numpy as np
import onebit
import pytest
from lm_eval.api.instance import Instance
from lm_eval.models.openai_completions import LocalCompletionsAPI

from conftest import ROOT

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
