"""Where a training step of the reference shape goes, per BitLinear shape: forward and
forward+backward of onebit.nn.BitLinear, the pure-PyTorch fake-quant BitLinear that
bench_python.py's `train` compares it with, and a plain nn.Linear, at 2048 tokens (seq 256 x
batch 8), medians of 15 calls after 3 warm-up calls, one process, PyTorch's threads.

    python bench/python/layer_times.py [-t 2]

A step of the reference model runs 4 layers x (4 of 256x256, 2 of 256x688, 1 of 688x256)
BitLinears; the rest of the step (embedding, attention, norms, the 256x8192 head, the loss,
AdamW) is the same PyTorch code in both variants, so the step ratio is bounded by
(torch BitLinears + rest) / (onebit BitLinears + rest).
"""

import argparse
import statistics
import time

import torch

import onebit.nn as onn
from bench_python import fake_quant_bitlinear

FakeQuantBitLinear = fake_quant_bitlinear()


def median_ms(f, n=15):
    ts = []
    for i in range(n + 3):
        t = time.perf_counter()
        f()
        if i >= 3:
            ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


def main():
    p = argparse.ArgumentParser()
    p.add_argument("-t", "--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    onn.set_num_threads(a.threads)
    per_step = {"torch": 0.0, "onebit": 0.0, "plain": 0.0}
    count = {(256, 256): 4, (256, 688): 2, (688, 256): 1}
    for (i, o), k in count.items():
        x = torch.randn(2048, i, requires_grad=True)
        g = torch.randn(2048, o)
        for name, m in [("torch", FakeQuantBitLinear(i, o, bias=False)), ("onebit", onn.BitLinear(i, o)),
                        ("plain", torch.nn.Linear(i, o, bias=False))]:
            fw = median_ms(lambda: m(x))

            def fb():
                m(x).backward(g)

            both = median_ms(fb)
            per_step[name] += 4 * k * both
            print(f"{i}x{o} {name:7s} forward {fw:7.2f} ms  forward+backward {both:7.2f} ms")
    for name, ms in per_step.items():
        print(f"per step (4 layers x 7 BitLinears), {name}: {ms:.1f} ms")


if __name__ == "__main__":
    main()
