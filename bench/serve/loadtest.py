"""Load test of an OpenAI-compatible server (onebit serve, llama-server): N concurrent
clients stream /v1/completions for a fixed time, each sending its next request as soon as the
last one ends. Reports requests, errors, aggregate generated tokens per second, and
time-to-first-token percentiles. Loopback only; bounded in clients and time.

TTFT is the time to the first piece of text: a random-weight model whose tokens decode to
nothing (a tokenizer padded with special tokens) shows its first text late. For synthetic
models use `bench/python/bench_python.py filler-tokenizer`, whose fillers are plain words.

  python bench/serve/loadtest.py URL --clients 32 --seconds 60 --max-tokens 64 [--model ID]
      [--temperature T (0.8; 0 is greedy)] [--prompt-words N (12)]
      [--response-format JSON (e.g. '{"type": "json_object"}': every reply constrained)]
"""
import argparse
import asyncio
import json
import random
import statistics
import time

import httpx

WORDS = ("Anne Elliot Captain Wentworth Bath Kellynch Lady Russell Mary Charles Musgrove Louisa "
         "Henrietta Lyme sea walk letter father baronet navy officer evening party concert").split()


async def client(i, url, model, deadline, max_tokens, temperature, words, stats, response_format=None):
    rng = random.Random(i)
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0)) as http:
        while time.monotonic() < deadline:
            prompt = " ".join(rng.choice(WORDS) for _ in range(words))
            body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": temperature, "stream": True,
                    "stream_options": {"include_usage": True}}
            if model:
                body["model"] = model
            if response_format:
                body["response_format"] = response_format
            t0 = time.monotonic()
            first, pieces, usage = None, 0, None
            try:
                async with http.stream("POST", url + "/v1/completions", json=body) as r:
                    if r.status_code != 200:
                        stats["errors"].append(r.status_code)
                        await r.aread()
                        await asyncio.sleep(0.5)
                        continue
                    async for line in r.aiter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        j = json.loads(line[6:])
                        if j.get("usage"):
                            usage = j["usage"]
                        for c in j.get("choices") or []:
                            if c.get("text"):
                                pieces += 1
                                if first is None:
                                    first = time.monotonic() - t0
            except Exception as e:  # a dropped or refused connection counts as an error
                stats["errors"].append(repr(e))
                continue
            stats["requests"] += 1
            stats["ttft"].append(first if first is not None else time.monotonic() - t0)
            stats["tokens"] += usage["completion_tokens"] if usage else pieces
            stats["prompt_tokens"] += usage.get("prompt_tokens", 0) if usage else 0
            stats["latency"].append(time.monotonic() - t0)


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--model", default=None)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--prompt-words", type=int, default=12, help="words a prompt (prefill work per request)")
    p.add_argument("--response-format", type=json.loads, default=None, help="sent as each request's response_format")
    a = p.parse_args()
    assert a.url.startswith(("http://127.", "http://localhost", "http://[::1]")), "loopback only"
    assert a.clients <= 256 and a.seconds <= 600
    stats = {"requests": 0, "errors": [], "tokens": 0, "prompt_tokens": 0, "ttft": [], "latency": []}
    start = time.monotonic()
    deadline = start + a.seconds
    await asyncio.gather(*(client(i, a.url, a.model, deadline, a.max_tokens, a.temperature, a.prompt_words, stats, a.response_format)
                           for i in range(a.clients)))
    wall = time.monotonic() - start
    q = lambda v, f: sorted(v)[min(len(v) - 1, int(f * len(v)))] if v else float("nan")
    print(json.dumps({
        "url": a.url, "clients": a.clients, "response_format": a.response_format, "seconds": round(wall, 1), "requests": stats["requests"],
        "errors": len(stats["errors"]), "error_kinds": sorted(set(map(str, stats["errors"])))[:5],
        "prompt_tokens": stats["prompt_tokens"], "generated_tokens": stats["tokens"], "aggregate_tok_s": round(stats["tokens"] / wall, 2),
        "ttft_p50_s": round(q(stats["ttft"], 0.5), 3), "ttft_p90_s": round(q(stats["ttft"], 0.9), 3),
        "ttft_max_s": round(max(stats["ttft"], default=float("nan")), 3),
        "latency_p50_s": round(statistics.median(stats["latency"]), 3) if stats["latency"] else None,
    }))


if __name__ == "__main__":
    asyncio.run(main())
