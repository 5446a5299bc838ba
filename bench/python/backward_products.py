"""The STE backward's two dense products, f32, through both of onebit.nn's backends (PyTorch's
BLAS and onebit's `gemm` crate, `BitLinearKernel.products`), and against int8 products through torch._int_mm (oneDNN) with the f32 gradient split into three
int8 digits per row (scale = row absmax / 127, then two more digits of 1/254 each), at the
reference training shape's BitLinear sizes (2048 tokens). Prints medians of 20 calls, the time
of the split done in PyTorch ops, and each route's error against a float64 product (largest
absolute difference over the largest value). A probe for issue 16, not a test:

    python bench/python/backward_products.py
"""

import time

import torch

import onebit.nn


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
    onebit.nn.set_num_threads(2)
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
        k = onebit.nn._onebit.BitLinearKernel(o, i)
        dx_o, dw_o, dn, xn, wn = torch.empty(tok, i), torch.empty(o, i), d.numpy(), xq.numpy(), w.numpy()
        ob_dx = median_ms(lambda: k.products(dx_o.numpy(), None, dn, xn, wn))
        ob_dw = median_ms(lambda: k.products(None, dw_o.numpy(), dn, xn, wn))
        assert torch.allclose(dx_o, d @ w, rtol=1e-4, atol=1e-3) and torch.allclose(dw_o, d.t() @ xq, rtol=1e-4, atol=1e-2)
        mac = tok * o * i / 1e6
        print(
            f"{tok}x{o}x{i}: dX torch {f32_dx:.3f} ms ({mac / f32_dx:.0f} GMAC/s) / onebit {ob_dx:.3f} ms "
            f"({mac / ob_dx:.0f}), dW torch {f32_dw:.3f} ({mac / f32_dw:.0f}) / onebit {ob_dw:.3f} ({mac / ob_dw:.0f})"
        )
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
