"""onebit.nn.BitLinear against a pure-PyTorch fake-quant BitLinear (the reference definition)."""

import pytest

torch = pytest.importorskip("torch")
import onebit.nn as onn  # noqa: E402


def fake_quant_linear(x, w, lam=1.0):
    """BitNet b1.58 in plain PyTorch: absmean ternary weights, per-token int8 absmax
    activations, straight-through gradients (the `x + (q - x).detach()` trick)."""
    gamma = w.abs().mean().clamp(min=1e-5)
    wq = (w / gamma).round().clamp(-1, 1) * gamma
    s = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
    xq = (x * s).round().clamp(-128, 127) / s
    w_used = w + lam * (wq - w).detach()
    x_used = x + lam * (xq - x).detach()
    return x_used @ w_used.t()


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


@pytest.fixture(params=["onebit", "torch"])
def products(request):
    """Runs a test once with each backend of the backward's dense products."""
    before = onn.products_backend()
    onn.set_products_backend(request.param)
    yield request.param
    onn.set_products_backend(before)


@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("tokens,fin,fout", [(1, 1, 1), (3, 17, 5), (7, 65, 33), (16, 257, 64), (33, 640, 96), (5, 1000, 37)])
def test_forward_and_ste_backward_match_fake_quant(tokens, fin, fout, recompute, products):
    # Both backward routes (the operands the forward saved, and re-quantizing the saved
    # input), each with both backends of the two products.
    g = torch.Generator().manual_seed(tokens * 1000 + fin)
    x = torch.randn(tokens, fin, generator=g, requires_grad=True)
    layer = onn.BitLinear(fin, fout, recompute=recompute)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(fout, fin, generator=g) * 0.05)
    y = layer(x)
    w_ref = layer.weight.detach().clone().requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    y_ref = fake_quant_linear(x_ref, w_ref)
    assert rel_err(y, y_ref) <= 1e-5
    dy = torch.randn(tokens, fout, generator=g)
    y.backward(dy)
    y_ref.backward(dy)
    assert rel_err(x.grad, x_ref.grad) <= 1e-5
    assert rel_err(layer.weight.grad, w_ref.grad) <= 1e-5


def test_frozen_weight_or_input_without_grad(products):
    # The backward forms only the gradients autograd asks for, through either backend.
    g = torch.Generator().manual_seed(9)
    layer = onn.BitLinear(40, 24)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(24, 40, generator=g) * 0.05)
    x = torch.randn(2, 9, 40, generator=g)
    dy = torch.randn(2, 9, 24, generator=g)
    w_ref = layer.weight.detach().clone().requires_grad_(True)
    x_ref = x.clone().requires_grad_(True)
    fake_quant_linear(x_ref.reshape(18, 40), w_ref).reshape(2, 9, 24).backward(dy)

    layer.weight.requires_grad_(False)
    xg = x.clone().requires_grad_(True)
    layer(xg).backward(dy)
    assert layer.weight.grad is None and rel_err(xg.grad, x_ref.grad) <= 1e-5

    layer.weight.requires_grad_(True)
    layer(x).backward(dy)
    assert rel_err(layer.weight.grad, w_ref.grad) <= 1e-5


def test_products_backend_is_chosen_once_and_can_be_pinned():
    before = onn.products_backend()
    try:
        assert before in ("onebit", "torch")
        assert onn.products_backend() == before  # timed once, then kept
        assert onn.set_products_backend("auto") in ("onebit", "torch")
        assert onn.set_products_backend("torch") == "torch" and onn.products_backend() == "torch"
        with pytest.raises(ValueError, match="products backend 'blas' is not one of auto, onebit, torch"):
            onn.set_products_backend("blas")
        assert onn.products_backend() == "torch"  # a bad name keeps the backend it had
    finally:
        onn.set_products_backend(before)


def test_products_with_wrong_shapes_are_clear_errors():
    import numpy as np

    k = onn._onebit.BitLinearKernel(8, 16)
    dout, xu, wu = np.ones((4, 8), np.float32), np.ones((4, 16), np.float32), np.ones((8, 16), np.float32)
    dx, dw = np.zeros((4, 16), np.float32), np.zeros((8, 16), np.float32)
    k.products(dx, dw, dout, xu, wu)
    assert (dx == 8).all() and (dw == 4).all()
    with pytest.raises(ValueError, match="output gradient has 28 values, expected 32"):
        k.products(dx, dw, np.ones((4, 7), np.float32), xu, wu)
    with pytest.raises(ValueError, match="w_used has 120 values, expected 128"):
        k.products(dx, dw, dout, xu, np.ones((8, 15), np.float32))
    with pytest.raises(ValueError, match="input gradient has 60 values, expected 64"):
        k.products(np.zeros((4, 15), np.float32), None, dout, xu, wu)
    with pytest.raises(ValueError, match="weight gradient has 120 values, expected 128"):
        k.products(dx, np.zeros((8, 15), np.float32), 2 * dout, xu, wu)
    assert (dx == 8).all()  # a refused call writes neither output
    with pytest.raises(ValueError, match="not whole rows of 16"):
        k.products(None, dw, dout, np.ones((4, 15), np.float32), wu)


def _fwd_bwd(layer, x, dy):
    x = x.detach().clone().requires_grad_(True)
    layer.weight.grad = None
    y = layer(x)
    y.backward(dy)
    return y.detach(), x.grad, layer.weight.grad.clone()


def test_kernels_run_on_torchs_openmp_threads_with_the_same_bits():
    import sys

    if sys.platform.startswith("linux"):
        # The Linux torch wheel runs its operators on libgomp; onebit.nn lends its kernels to it.
        assert onn.threading() == "openmp"
    g = torch.Generator().manual_seed(5)
    layer = onn.BitLinear(256, 200)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(200, 256, generator=g) * 0.05)
    x, dy = torch.randn(300, 256, generator=g), torch.randn(300, 200, generator=g)
    shared = _fwd_bwd(layer, x, dy)
    try:
        onn._onebit.use_openmp(None, 2)
        assert onn.threading() == "own"
        own = _fwd_bwd(layer, x, dy)
    finally:
        onn._share_torch_threads()
    for a, b in zip(shared, own):
        assert torch.equal(a, b)
    before = onn.threading()
    with pytest.raises(ValueError, match="not a loaded OpenMP runtime"):
        onn._onebit.use_openmp("/nonexistent/libgomp.so.1", 2)
    assert onn.threading() == before  # a failed switch keeps the pool it had


def test_leading_dimensions_bias_and_blend():
    layer = onn.BitLinear(48, 24, bias=True, lam=0.5)
    x = torch.randn(2, 3, 48, requires_grad=True)
    y = layer(x)
    assert y.shape == (2, 3, 24)
    ref = fake_quant_linear(x.detach().reshape(6, 48), layer.weight.detach(), lam=0.5).reshape(2, 3, 24) + layer.bias.detach()
    assert rel_err(y.detach(), ref) <= 1e-5
    y.sum().backward()
    assert x.grad.shape == x.shape and layer.bias.grad.shape == (24,)


@pytest.mark.filterwarnings("ignore:Input #:UserWarning")
def test_gradcheck_in_plain_linear_mode():
    # lam = 0 is an ordinary linear layer, whose gradients gradcheck can verify; the kernels
    # compute in float32, so the finite-difference step and tolerances are float32-sized.
    torch.manual_seed(0)
    layer = onn.BitLinear(9, 5, lam=0.0)
    x = torch.randn(4, 9, requires_grad=True)
    fn = lambda x, w: onn._BitLinearFn.apply(x, w, layer._kernel, 0.0, False)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, layer.weight), eps=1e-2, atol=1e-3, rtol=1e-3, fast_mode=False)


def test_wrong_tensors_are_clear_errors():
    layer = onn.BitLinear(8, 4)
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(2, 8, dtype=torch.int32))
    # Other float types run in float32 and come back in their own type.
    x = torch.randn(2, 8)
    assert layer(x.bfloat16()).dtype == torch.bfloat16
    assert torch.equal(layer(x.double()), layer(x).double())
    with pytest.raises(TypeError, match="float32 CPU tensor"):
        onn._BitLinearFn.apply(x, layer.weight.double(), layer._kernel, 1.0, False)
    with pytest.raises(ValueError, match="whole rows|values"):
        layer(torch.randn(2, 7))
    with pytest.raises(ValueError):
        onn.BitLinear(0, 4)


def tiny_transformer(vocab=64, d=32, layers=2, seq=16):
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.n1, self.n2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
            self.q, self.k, self.v, self.o = (torch.nn.Linear(d, d, bias=False) for _ in range(4))
            self.up, self.down = torch.nn.Linear(d, 4 * d, bias=False), torch.nn.Linear(4 * d, d, bias=False)

        def forward(self, h):
            b, t, _ = h.shape
            a = self.n1(h)
            q, k, v = (m(a).view(b, t, 4, d // 4).transpose(1, 2) for m in (self.q, self.k, self.v))
            att = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            h = h + self.o(att.transpose(1, 2).reshape(b, t, d))
            return h + self.down(torch.relu(self.up(self.n2(h))) ** 2)

    class LM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(vocab, d)
            self.blocks = torch.nn.ModuleList(Block() for _ in range(layers))
            self.norm = torch.nn.LayerNorm(d)
            self.lm_head = torch.nn.Linear(d, vocab, bias=False)

        def forward(self, ids):
            h = self.emb(ids)
            for blk in self.blocks:
                h = blk(h)
            return self.lm_head(self.norm(h))

    return LM()


def test_replace_linear_trains_a_small_transformer():
    torch.manual_seed(0)
    model = onn.replace_linear(tiny_transformer(), skip=["lm_head"])
    kinds = {type(m).__name__ for m in model.modules()}
    assert "BitLinear" in kinds and isinstance(model.lm_head, torch.nn.Linear)
    assert sum(isinstance(m, onn.BitLinear) for m in model.modules()) == 12
    # A learnable sequence task: each row counts up from a random start (mod vocab).
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(50):
        start = torch.randint(0, 64, (8, 1))
        ids = (start + torch.arange(17)) % 64
        logits = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first, (first, last)


def test_ste_monitor_reports_the_trainers_figures():
    torch.manual_seed(3)
    model = torch.nn.Sequential(onn.BitLinear(40, 24), torch.nn.ReLU(), onn.BitLinear(24, 8))
    reports = []
    mon = onn.ste_monitor(model, every=2, callback=reports.append)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    layers = [model[0], model[2]]
    used, after, grads, inputs = {}, {}, {}, {0: [], 2: []}
    model[0].register_forward_pre_hook(lambda m, a: inputs[0].append(a[0].detach().clone()))
    model[2].register_forward_pre_hook(lambda m, a: inputs[2].append(a[0].detach().clone()))
    for step in range(1, 6):
        x = torch.randn(6, 40)
        w_now = [m.weight.detach().clone() for m in layers]
        loss = model(x).pow(2).mean()
        if step == 5:
            break
        opt.zero_grad()
        loss.backward()
        grads[step] = [m.weight.grad.detach().clone() for m in layers]
        used[step] = w_now
        opt.step()
        after[step] = [m.weight.detach().clone() for m in layers]
    assert [r["step"] for r in reports] == [2, 4]
    prev_trits = None
    for r, step in zip(reports, [2, 4]):
        trits_now = []
        for i, (row, idx) in enumerate(zip(r["layers"], [0, 2])):
            w, w_next, g = used[step][i].double(), after[step][i].double(), grads[step][i].double()
            gamma = w.abs().mean().clamp(min=1e-5)
            t = (w / gamma).round().clamp(-1, 1)
            trits_now.append(t)
            n = t.numel()
            assert row["name"] == ("0" if idx == 0 else "2")
            assert row["neg"] == pytest.approx((t == -1).sum().item() / n, abs=1e-6)
            assert row["zero"] == pytest.approx((t == 0).sum().item() / n, abs=1e-6)
            assert row["pos"] == pytest.approx((t == 1).sum().item() / n, abs=1e-6)
            assert row["saturated"] == pytest.approx(((w_next / gamma).abs() > 1.5).sum().item() / n, abs=1e-6)
            assert row["grad_norm"] == pytest.approx(g.norm().item(), rel=1e-5)
            assert row["update_ratio"] == pytest.approx(((w_next - w).norm() / w_next.norm()).item(), rel=1e-4)
            if prev_trits is None:
                assert row["flips"] == 0.0
            else:
                p = prev_trits[i]
                assert row["flips"] == pytest.approx((p != t).sum().item() / n, abs=1e-6)
                assert row["sign_flips"] == pytest.approx((p * t == -1).sum().item() / n, abs=1e-6)
            # Activations at ±127 after per-token absmax quantization, over this report's forwards.
            first = 0 if step == 2 else 2
            xs = torch.cat(inputs[idx][first:step])
            q = (xs * 127 / xs.abs().amax(-1, keepdim=True).clamp(min=1e-5)).round().clamp(-128, 127)
            want = ((q == 127) | (q == -127) | (q == -128)).sum().item() / q.numel()
            assert row["act_clip"] == pytest.approx(want, abs=1e-6)
        prev_trits = trits_now
        assert "ste: zero" in r["summary"]
    mon.close()
