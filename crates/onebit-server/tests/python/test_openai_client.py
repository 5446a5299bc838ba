"""The official `openai` package as the client of `onebit serve`: chat, completion,
streaming and error cases, as an application would call them."""
import decimal
import re

import openai
import pytest


def client(server, key="test-key"):
    return openai.OpenAI(base_url=server + "/v1", api_key=key, max_retries=0)


def test_models_lists_the_served_model(server):
    models = client(server).models.list()
    assert [m.id for m in models.data] == ["austen"]


def test_chat_completion(server):
    r = client(server).chat.completions.create(
        model="austen",
        messages=[{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Tell me about Anne."}],
        max_tokens=20,
        temperature=0,
    )
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 20
    assert r.usage.total_tokens == r.usage.prompt_tokens + 20


def test_streamed_chat_equals_the_whole_reply(server):
    c = client(server)
    args = dict(model="austen", messages=[{"role": "user", "content": "Who is Mr Elliot?"}], max_tokens=24, temperature=0)
    whole = c.chat.completions.create(**args).choices[0].message.content
    pieces, finish, usage = [], None, None
    for chunk in c.chat.completions.create(stream=True, stream_options={"include_usage": True}, **args):
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            if ch.delta.content:
                pieces.append(ch.delta.content)
            if ch.finish_reason:
                finish = ch.finish_reason
    assert "".join(pieces) == whole
    assert len(pieces) > 3, "streamed in pieces"
    assert finish == "length"
    assert usage.completion_tokens == 24


def test_text_completion_with_stop(server):
    c = client(server)
    r = c.completions.create(model="austen", prompt="It is a truth universally acknowledged", max_tokens=30, temperature=0)
    text = r.choices[0].text
    assert r.object == "text_completion" and text
    stop = text.split()[len(text.split()) // 2]
    r2 = c.completions.create(model="austen", prompt="It is a truth universally acknowledged", max_tokens=30,
                              temperature=0, stop=[stop])
    assert stop not in r2.choices[0].text
    assert text.startswith(r2.choices[0].text)
    assert r2.choices[0].finish_reason == "stop"


def test_streamed_text_completion(server):
    stream = client(server).completions.create(model="austen", prompt="Anne Elliot", max_tokens=10, temperature=0, stream=True)
    pieces = [ch.choices[0].text for ch in stream if ch.choices]
    assert "".join(pieces)


def test_seeded_sampling_repeats_and_unseeded_does_not(server):
    c = client(server)
    args = dict(model="austen", prompt="Captain Wentworth", max_tokens=16, temperature=0.9, seed=7)
    assert c.completions.create(**args).choices[0].text == c.completions.create(**args).choices[0].text
    # Without a seed every request draws its own (a "regenerate" gives another reply).
    del args["seed"]
    texts = {c.completions.create(**args).choices[0].text for _ in range(4)}
    assert len(texts) > 1, texts


def test_errors_are_openai_exceptions(server):
    with pytest.raises(openai.AuthenticationError):
        client(server, key="wrong").models.list()
    c = client(server)
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="austen", messages=[])
    assert "messages" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model="austen", prompt="word " * 400, max_tokens=5)
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        c.completions.create(model="austen", prompt="hi", n=17)
    with pytest.raises(openai.BadRequestError):
        c.completions.create(model="austen", prompt="hi", temperature=-2)
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model="austen", prompt="hi", logit_bias={"5": 101})
    assert e.value.body["param"] == "logit_bias"
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model="austen", prompt="hi", frequency_penalty=2.5)
    assert e.value.body["param"] == "frequency_penalty"
    # Still serving after the errors.
    assert c.completions.create(model="austen", prompt="It is", max_tokens=3).choices[0].text is not None


def test_chat_logprobs_parse_as_the_client_types_them(server):
    c = client(server)
    args = dict(model="austen", messages=[{"role": "user", "content": "Who is Anne?"}], max_tokens=8, temperature=0,
                logprobs=True, top_logprobs=2)
    r = c.chat.completions.create(**args)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == 8
    for t in content:
        assert isinstance(t, openai.types.chat.ChatCompletionTokenLogprob)
        assert t.logprob <= 0 and len(t.top_logprobs) == 2
        # Greedy: the token taken is the likeliest.
        assert t.top_logprobs[0].logprob == t.logprob and t.top_logprobs[0].token == t.token
        assert bytes(t.bytes).decode() == t.token
    assert "".join(t.token for t in content) == r.choices[0].message.content
    streamed = [t for ch in c.chat.completions.create(stream=True, **args) for choice in ch.choices
                if choice.logprobs for t in choice.logprobs.content]
    assert [(t.token, t.logprob) for t in streamed] == [(t.token, t.logprob) for t in content]


def test_echoed_prompt_logprobs_and_token_id_prompts(server):
    c = client(server)
    prompt = "It is a truth universally acknowledged"
    r = c.completions.create(model="austen", prompt=prompt, max_tokens=4, temperature=0, logprobs=3, echo=True)
    ch = r.choices[0]
    assert ch.text.startswith(prompt)
    lp = ch.logprobs
    n = r.usage.prompt_tokens + r.usage.completion_tokens
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == n
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(v <= 0 for v in lp.token_logprobs[1:])
    assert "".join(lp.tokens) == ch.text
    assert [ch.text[o:o + len(t)] for o, t in zip(lp.text_offset, lp.tokens)] == lp.tokens
    # The reply's tokens are greedy: each the likeliest of its alternatives.
    for tok, v, top in list(zip(lp.tokens, lp.token_logprobs, lp.top_logprobs))[-4:]:
        assert len(top) == 3 and max(top.values()) == v and top[tok] == v
    # The same prompt as token ids (the server's own /tokenize): the same completion.
    import json
    import urllib.request
    req = urllib.request.Request(server + "/tokenize", data=json.dumps({"content": prompt}).encode(),
                                 headers={"content-type": "application/json", "authorization": "Bearer test-key"})
    ids = json.load(urllib.request.urlopen(req))["tokens"]
    assert len(ids) == r.usage.prompt_tokens
    by_ids = c.completions.create(model="austen", prompt=ids, max_tokens=4, temperature=0)
    assert prompt + by_ids.choices[0].text == ch.text


def test_logit_bias_forces_and_bans_tokens(server):
    import json
    import urllib.request
    c = client(server)
    req = urllib.request.Request(server + "/tokenize", data=json.dumps({"content": " Anne"}).encode(),
                                 headers={"content-type": "application/json", "authorization": "Bearer test-key"})
    [anne] = json.load(urllib.request.urlopen(req))["tokens"]
    args = dict(model="austen", prompt="It is a truth universally acknowledged", max_tokens=3, temperature=0, logprobs=1)
    forced = c.completions.create(logit_bias={str(anne): 100}, **args).choices[0]
    assert forced.text == " Anne" * 3
    plain = c.completions.create(**args).choices[0]
    first = plain.logprobs.tokens[0]
    req = urllib.request.Request(server + "/tokenize", data=json.dumps({"content": first}).encode(),
                                 headers={"content-type": "application/json", "authorization": "Bearer test-key"})
    [first_id] = json.load(urllib.request.urlopen(req))["tokens"]
    banned = c.completions.create(logit_bias={str(first_id): -100}, **args).choices[0]
    assert banned.logprobs.tokens[0] != first
    # The reported log-probabilities stay the model's own: the banned token is still the likeliest.
    assert list(banned.logprobs.top_logprobs[0]) == [first]
    # Penalties are accepted in OpenAI's range.
    assert c.completions.create(presence_penalty=0.5, frequency_penalty=1.0, **args).choices[0].text


def test_json_mode_replies_parse_with_pythons_json(server):
    import json
    import urllib.request
    c = client(server)
    req = urllib.request.Request(server + "/tokenize", data=json.dumps({"content": "}"}).encode(),
                                 headers={"content-type": "application/json", "authorization": "Bearer test-key"})
    [close] = json.load(urllib.request.urlopen(req))["tokens"]
    args = dict(model="austen", messages=[{"role": "user", "content": "Describe Anne as JSON."}],
                response_format={"type": "json_object"}, temperature=0)
    # The prose model, held to JSON: its reply starts an object and runs to max_tokens...
    r = c.chat.completions.create(max_tokens=30, **args)
    assert r.choices[0].message.content.startswith("{")
    # ...and once `}` is favoured the object closes, the reply stops, and json.loads reads it.
    r = c.chat.completions.create(max_tokens=30, logit_bias={str(close): 100}, **args)
    assert r.choices[0].finish_reason == "stop"
    assert json.loads(r.choices[0].message.content) == {}
    # Structured output: the reply is a document of the schema (a json_schema the server
    # cannot enforce is a 400 naming the keyword).
    schema = {"type": "object", "additionalProperties": False, "required": ["mood", "n", "p", "tag"],
              "properties": {"mood": {"enum": ["happy", "sad"]}, "n": {"type": "integer", "minimum": 1, "maximum": 9, "multipleOf": 3},
                             "p": {"type": "number", "minimum": 0.25, "exclusiveMaximum": 0.75, "multipleOf": 0.05},
                             "tag": {"type": "string", "pattern": "^#[a-z]+$", "minLength": 3, "maxLength": 7}}}
    r = c.chat.completions.create(
        model="austen", messages=[{"role": "user", "content": "How is Anne?"}], max_tokens=150, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "mood", "schema": schema, "strict": True}})
    doc = json.loads(r.choices[0].message.content)
    assert r.choices[0].finish_reason == "stop"
    assert list(doc) == ["mood", "n", "p", "tag"] and doc["mood"] in ("happy", "sad") and doc["n"] in (3, 6, 9)
    assert 0.25 <= doc["p"] < 0.75 and decimal.Decimal(str(doc["p"])) % decimal.Decimal("0.05") == 0
    assert re.fullmatch(r"#[a-z]{2,6}", doc["tag"])
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(
            model="austen", messages=[{"role": "user", "content": "hi"}],
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": True}}})
    assert e.value.body["param"] == "response_format" and "uniqueItems" in e.value.body["message"]
    # llama-server's `grammar` (a client passes it in extra_body): the reply is a sentence of
    # the grammar; a grammar that cannot be read is a 400 saying where.
    grammar = 'root ::= ("Yes" | "No") ", " [a-z]{1,8} (" " [a-z]{1,8}){0,2} "."\n'
    r = c.chat.completions.create(
        model="austen", messages=[{"role": "user", "content": "Is Emma clever?"}], max_tokens=60, temperature=0.9,
        seed=1, extra_body={"grammar": grammar})
    assert re.fullmatch(r"(Yes|No), [a-z]{1,8}( [a-z]{1,8}){0,2}\.", r.choices[0].message.content), r
    assert r.choices[0].finish_reason == "stop"
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="austen", messages=[{"role": "user", "content": "hi"}],
                                  extra_body={"grammar": "root ::= [a-"})
    assert e.value.body["param"] == "grammar" and "line 1" in e.value.body["message"]
    # Function calling: a named tool_choice makes the reply a call, as tool_calls.
    tools = [{"type": "function", "function": {"name": "get_time", "description": "The time now"}}]
    args = dict(model="austen", messages=[{"role": "user", "content": "What time is it?"}], max_tokens=100,
                temperature=0, tools=tools, tool_choice={"type": "function", "function": {"name": "get_time"}})
    r = c.chat.completions.create(**args)
    assert r.choices[0].finish_reason == "tool_calls" and r.choices[0].message.content is None
    [call] = r.choices[0].message.tool_calls
    assert call.type == "function" and call.function.name == "get_time" and json.loads(call.function.arguments) == {}
    # Streamed, the client's chunks carry the same call.
    chunks = list(c.chat.completions.create(stream=True, **args))
    calls = [d for ch in chunks for d in (ch.choices[0].delta.tool_calls or []) if ch.choices]
    assert [(d.function.name, d.function.arguments) for d in calls] == [("get_time", call.function.arguments)]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(
            model="austen", messages=[{"role": "user", "content": "hi"}], tools=tools,
            tool_choice={"type": "function", "function": {"name": "get_date"}})
    assert e.value.body["param"] == "tool_choice"


def test_pydantic_models_through_the_clients_parse(server):
    # The openai package's own structured-output path: `parse` turns a pydantic model into its
    # strict JSON schema (pydantic's patterns, multiple_of, dates, sets of literals, dicts with
    # key patterns and sizes) and validates the reply with pydantic, the judge here.
    import datetime
    from typing import Annotated, Literal

    from pydantic import BaseModel, Field, StringConstraints

    class Heroine(BaseModel):
        name: Annotated[str, StringConstraints(min_length=1, max_length=12)]
        tag: Annotated[str, StringConstraints(pattern=r"^#[a-z]+$", max_length=7)]
        age: Annotated[int, Field(ge=0, le=120, multiple_of=5)]
        born: datetime.date
        sisters: set[Literal["Jane", "Mary", "Kitty"]] = Field(max_length=2)
        wit: Annotated[float, Field(gt=0, le=1, multiple_of=0.05)]
        suitors: dict[Annotated[str, StringConstraints(pattern=r"^[A-Z][a-z]+$", max_length=8)], int] = Field(
            min_length=1, max_length=2)

    c = client(server)
    r = c.chat.completions.parse(model="austen", messages=[{"role": "user", "content": "Describe Emma."}],
                                 max_tokens=220, temperature=0, response_format=Heroine)
    assert r.choices[0].finish_reason == "stop", r
    h = r.choices[0].message.parsed
    assert isinstance(h, Heroine) and h.age % 5 == 0 and 1 <= len(h.suitors) <= 2
    assert decimal.Decimal(str(h.wit)) % decimal.Decimal("0.05") == 0 and isinstance(h.born, datetime.date)


def test_several_prompts_and_n_choices(server):
    c = client(server)
    r = c.completions.create(model="austen", prompt=["Anne Elliot", "Captain Wentworth"], n=2, max_tokens=6,
                             temperature=0.8, seed=3)
    assert [ch.index for ch in r.choices] == [0, 1, 2, 3]
    assert all(ch.text for ch in r.choices)
    assert r.usage.completion_tokens == 24
    chat = c.chat.completions.create(model="austen", messages=[{"role": "user", "content": "Hello"}], n=2, max_tokens=5,
                                     temperature=0.8, seed=3)
    assert [ch.index for ch in chat.choices] == [0, 1]
