"""The STE backward's two dense products, f32 (what onebit.nn hands to PyTorch's BLAS today)
against int8 products through torch._int_mm (oneDNN) with the f32 gradient split into three
int8 digits per row (scale = row absmax / 127, then two more digits of 1/254 each), at the
reference training shape's BitLinear sizes (2048 tokens). Prints medians of 20 calls, the time
of the split done in PyTorch ops, and each route's error against a float64 product (largest
absolute difference over the largest value). A probe for issue 16, not a test:

    python bench/python/backward_products.py
"""

import time

import torch


def median_ms(f, n=20):
    f()
    f()
    xs = []
    for _ in range(n):
        a = time.perf_counter()
        f()
        xs.append(time.perf_counter() - a)
    xs.sort()
    return xs[len(xs) // 2] * 1e3


def split3(d):
    """Three int8 digits per row of d and the row scales: d ~ s * (d1 + d2/254 + d3/254**2)."""
    s = d.abs().amax(dim=1, keepdim=True).clamp_min(1e-30) / 127
    y = d / s
    d1 = y.round()
    y = (y - d1) * 254
    d2 = y.round()
    y = (y - d2) * 254
    d3 = y.round()
    return torch.stack([d1, d2, d3]).to(torch.int8), s


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    for tok, o, i in [(2048, 256, 256), (2048, 688, 256), (2048, 256, 688)]:
        d = torch.randn(tok, o)
        w = torch.randint(-1, 2, (o, i)).float()
        xq = torch.randint(-127, 128, (tok, i)).float()
        wi, xit = w.to(torch.int8), xq.to(torch.int8).t().contiguous()
        digits, s = split3(d)
        f32_dx = median_ms(lambda: d @ w)
        f32_dw = median_ms(lambda: d.t() @ xq)
        i8_dx = median_ms(lambda: [torch._int_mm(digits[k], wi) for k in range(3)])
        # dW^T = Xq^T @ (dY / s): the same three products with the digits on the right.
        i8_dw = median_ms(lambda: [torch._int_mm(xit, digits[k]) for k in range(3)])
        split = median_ms(lambda: split3(d))
        p = [torch._int_mm(digits[k], wi).double() for k in range(3)]
        dx = (p[0] + p[1] / 254 + p[2] / 254**2) * s.double()
        ref = d.double() @ w.double()
        err = ((dx - ref).abs().max() / ref.abs().max()).item()
        err32 = (((d @ w).double() - ref).abs().max() / ref.abs().max()).item()
        print(
            f"{tok}x{o}x{i}: dX f32 {f32_dx:.3f} / int8x3 {i8_dx:.3f} ms, dW f32 {f32_dw:.3f} / "
            f"int8x3 {i8_dw:.3f} ms, split {split:.3f} ms; dX error int8x3 {err:.1e}, f32 {err32:.1e}"
        )


if __name__ == "__main__":
    main()
