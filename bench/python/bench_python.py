"""Benchmarks of the Python package, each against its baseline in the same run.

    python bench/python/bench_python.py generate MODEL.gguf [--runs 5] [-n 128]
        onebit's generate() from Python vs `onebit run` (the CLI) on the same file: generated
        tokens per second over prompt + generation (what the CLI's "in all" time covers).
    python bench/python/bench_python.py train [--steps 10]
        one training step of the reference shape (d 256, 4 layers, 4 heads, ffn 688, seq 256,
        batch 8, vocab 8192) as a PyTorch model whose linears are onebit.nn.BitLinear vs the
        same model with a pure-PyTorch fake-quant BitLinear; each variant in its own process
        (peak RSS per variant); medians of the timed steps after 2 warm-up steps.

    python bench/python/bench_python.py filler-tokenizer DIR/tokenizer.json [--vocab 128256]
        a byte-level tokenizer (one token per byte, the rest fillers) for a synthetic model
        made by `onebit init`, which carries none.

The benchmarks print JSON lines; the runs quoted in issues are in bench/runs/ with `lscpu`.
"""

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def generate(a):
    import onebit

    binary = os.path.join(ROOT, "target", "release", "onebit")
    prompt = "The quick brown fox jumps over the lazy dog. " * 2
    m = onebit.AutoModelForCausalLM.from_pretrained(a.model, threads=a.threads)
    py, cli = [], []
    for _ in range(a.runs):
        t = time.perf_counter()
        s = m.generate(prompt, max_new_tokens=a.n, stream=True)
        for _ in s:
            pass
        py.append(s.tokens / (time.perf_counter() - t))
        r = subprocess.run([binary, "run", a.model, "-p", prompt, "-n", str(a.n), "--temp", "0", "-t", str(a.threads)],
                           capture_output=True, text=True, check=True)
        g = re.search(r"generated: (\d+) tokens · ([0-9.]+) s in all", r.stderr)
        cli.append(int(g.group(1)) / float(g.group(2)))
    out = {"bench": "generate", "model": a.model, "threads": a.threads, "new_tokens": a.n, "runs": a.runs,
           "python_tok_s_median": round(statistics.median(py), 2), "cli_tok_s_median": round(statistics.median(cli), 2),
           "python_over_cli": round(statistics.median(py) / statistics.median(cli), 4),
           "python_all": [round(x, 2) for x in py], "cli_all": [round(x, 2) for x in cli]}
    print(json.dumps(out))


def fake_quant_bitlinear():
    """The pure-PyTorch BitLinear class the training benchmarks compare onebit.nn.BitLinear
    with: BitNet b1.58 as fake quantization (absmean ternary weights, per-token int8 absmax
    activations, straight-through estimator)."""
    import torch

    class FakeQuantBitLinear(torch.nn.Linear):
        def forward(self, x):
            w = self.weight
            gamma = w.abs().mean().clamp(min=1e-5)
            wq = w + ((w / gamma).round().clamp(-1, 1) * gamma - w).detach()
            s = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
            xq = x + ((x * s).round().clamp(-128, 127) / s - x).detach()
            return torch.nn.functional.linear(xq, wq)

    return FakeQuantBitLinear


def train_variant(a):
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    d, layers, heads, ffn, seq, batch, vocab = 256, 4, 4, 688, 256, 8, 8192
    if a.variant.startswith("onebit"):
        import onebit.nn

        onebit.nn.set_num_threads(a.threads)
        recompute = a.variant == "onebit-recompute"

        def linear(i, o):
            return onebit.nn.BitLinear(i, o, recompute=recompute)
    else:
        fake_quant = fake_quant_bitlinear()

        def linear(i, o):
            return fake_quant(i, o, bias=False)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.n1, self.n2 = torch.nn.RMSNorm(d), torch.nn.RMSNorm(d)
            self.q, self.k, self.v, self.o = (linear(d, d) for _ in range(4))
            self.gate, self.up, self.down = linear(d, ffn), linear(d, ffn), linear(ffn, d)

        def forward(self, h):
            b, t, _ = h.shape
            x = self.n1(h)
            q, k, v = (m(x).view(b, t, heads, d // heads).transpose(1, 2) for m in (self.q, self.k, self.v))
            att = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            h = h + self.o(att.transpose(1, 2).reshape(b, t, d))
            x = self.n2(h)
            return h + self.down(torch.nn.functional.silu(self.gate(x)) * self.up(x))

    class LM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(vocab, d)
            self.blocks = torch.nn.ModuleList(Block() for _ in range(layers))
            self.norm = torch.nn.RMSNorm(d)
            self.head = torch.nn.Linear(d, vocab, bias=False)

        def forward(self, ids):
            h = self.emb(ids)
            for blk in self.blocks:
                h = blk(h)
            return self.head(self.norm(h))

    model = LM()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    times, losses = [], []
    for step in range(2 + a.steps):
        ids = torch.randint(0, vocab, (batch, seq + 1), generator=g)
        t = time.perf_counter()
        logits = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= 2:
            times.append(time.perf_counter() - t)
        losses.append(loss.item())
    tok = batch * seq
    print(json.dumps({"bench": "train-step", "variant": a.variant, "threads": a.threads, "steps": a.steps,
                      "tok_s_median": round(tok / statistics.median(times), 1),
                      "tok_s_best": round(tok / min(times), 1),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "first_loss": round(losses[0], 4), "last_loss": round(losses[-1], 4)}))


def train(a):
    rows = {}
    variants = ["torch", "onebit"] + (["onebit-recompute"] if a.recompute else [])
    for variant in variants * 2:
        r = subprocess.run([sys.executable, __file__, "train-variant", variant, "--steps", str(a.steps), "-t", str(a.threads)],
                           capture_output=True, text=True, check=True)
        line = json.loads(r.stdout.strip().splitlines()[-1])
        print(json.dumps(line))
        rows.setdefault(variant, []).append(line["tok_s_median"])
    o, t = statistics.median(rows["onebit"]), statistics.median(rows["torch"])
    summary = {"bench": "train-step", "onebit_over_torch": round(o / t, 3), "onebit_tok_s": o, "torch_tok_s": t}
    if a.recompute:
        r = statistics.median(rows["onebit-recompute"])
        summary.update({"onebit_recompute_over_torch": round(r / t, 3), "onebit_recompute_tok_s": r})
    print(json.dumps(summary))


def filler_tokenizer(a):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    for i in range(a.vocab - len(vocab)):
        vocab[f"<filler{i}>"] = len(alphabet) + i
    tok = Tokenizer(models.BPE(vocab, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.save(a.out)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("model")
    g.add_argument("-n", type=int, default=128)
    g.add_argument("--runs", type=int, default=5)
    g.add_argument("-t", "--threads", type=int, default=2)
    t = sub.add_parser("train")
    t.add_argument("--steps", type=int, default=10)
    t.add_argument("-t", "--threads", type=int, default=2)
    t.add_argument("--recompute", action="store_true", help="also time onebit.nn.BitLinear(recompute=True)")
    v = sub.add_parser("train-variant")
    v.add_argument("variant", choices=["onebit", "onebit-recompute", "torch"])
    v.add_argument("--steps", type=int, default=10)
    v.add_argument("-t", "--threads", type=int, default=2)
    f = sub.add_parser("filler-tokenizer")
    f.add_argument("out")
    f.add_argument("--vocab", type=int, default=128256)
    a = p.parse_args()
    {"generate": generate, "train": train, "train-variant": train_variant, "filler-tokenizer": filler_tokenizer}[a.cmd](a)


if __name__ == "__main__":
    main()
