"""``onebit.nn``: BitLinear (BitNet b1.58) for PyTorch, on onebit's integer kernels.

Forward: per-tensor absmean ternary weights ``γ·Wq`` and per-token int8 absmax activations
``Xq/s``, ``y = (Xq·Wqᵀ)·γ/s`` computed by the same T2 kernels onebit decodes with.
Backward: the straight-through estimator, ``dX = dY·(γ·Wq)``, ``dW = dYᵀ·(Xq/s)``: two
float32 products run by whichever of onebit (the ``gemm`` crate) and PyTorch's BLAS is
faster on this machine (:func:`products_backend`).
At ``lam`` = 1 the forward also writes ``Xq/s`` and ``γ·Wq`` from the codes it has just
made and saves them for the backward (``recompute=True`` saves the input and latent weight
instead and re-quantizes in the backward: less memory, more time).
Tensors reach the kernels as NumPy views of their memory (no copies); they must be
float32 on the CPU. The kernels run on PyTorch's own OpenMP threads where it uses an
OpenMP runtime (Linux wheels), so the two never compete for cores. ``lam`` blends toward full precision (0 = a plain linear layer) for
phase-in fine-tuning.
"""

from __future__ import annotations

import os
import re
import statistics
import time
import warnings
from typing import Iterable, Optional

import torch

from . import _onebit

__all__ = [
    "BitLinear",
    "SteMonitor",
    "replace_linear",
    "ste_monitor",
    "set_num_threads",
    "get_num_threads",
    "threading",
    "products_backend",
    "set_products_backend",
]

set_num_threads = _onebit.set_num_threads
get_num_threads = _onebit.get_num_threads
threading = _onebit.threading


def _torch_openmp_path() -> Optional[str]:
    """The OpenMP runtime this process loaded (PyTorch's), from /proc/self/maps, or None."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and re.match(r"lib(gomp|omp|iomp5)\b[-.\w]*\.so", os.path.basename(parts[5].strip())):
                    return parts[5].strip()
    except OSError:
        pass
    return None


def _share_torch_threads() -> None:
    # PyTorch's OpenMP workers spin after each operator; a second pool of threads fights them
    # for the cores, so by default the kernels run on PyTorch's team (ONEBIT_NN_THREADS=own
    # keeps onebit's own threads).
    if os.environ.get("ONEBIT_NN_THREADS", "openmp") == "own":
        return
    path = _torch_openmp_path()
    if path is None:
        return
    try:
        _onebit.use_openmp(path, torch.get_num_threads())
    except ValueError as e:
        warnings.warn(f"onebit.nn keeps its own threads: {e}")


_share_torch_threads()


def _view(t: torch.Tensor, name: str):
    if t.device.type != "cpu" or t.dtype != torch.float32:
        raise TypeError(f"onebit.nn.BitLinear: {name} must be a float32 CPU tensor, got {t.dtype} on {t.device}")
    return t.detach().numpy()


_BACKENDS = ("torch", "onebit")
_backend: Optional[str] = None


def _products(backend, kernel, d2, xu, wu, want_x, want_w):
    """The STE backward's dense products ``dX = dY·w_used``, ``dW = dYᵀ·x_used``."""
    if backend == "torch":
        return (d2 @ wu if want_x else None), (d2.t() @ xu if want_w else None)
    dx = torch.empty_like(xu) if want_x else None
    dw = torch.empty_like(wu) if want_w else None
    kernel.products(
        None if dx is None else _view(dx, "dx"),
        None if dw is None else _view(dw, "dweight"),
        _view(d2, "dout"),
        _view(xu, "x_used"),
        _view(wu, "w_used"),
    )
    return dx, dw


def _time_backends() -> dict:
    """Median seconds of both backends' products on one fixed shape (1024 tokens, 256x256)."""
    g = torch.Generator().manual_seed(0)
    d2, xu, wu = (torch.randn(*s, generator=g) for s in ((1024, 256), (1024, 256), (256, 256)))
    kernel = _onebit.BitLinearKernel(256, 256)
    times = {b: [] for b in _BACKENDS}
    for _ in range(7):
        for b in _BACKENDS:
            t = time.perf_counter()
            _products(b, kernel, d2, xu, wu, True, True)
            times[b].append(time.perf_counter() - t)
    return {b: statistics.median(t) for b, t in times.items()}


def products_backend() -> str:
    """Which library runs BitLinear's backward products: ``"onebit"`` (the ``gemm`` crate on
    onebit's threads) or ``"torch"`` (PyTorch's BLAS).

    Set by :func:`set_products_backend` or ``ONEBIT_NN_PRODUCTS``; by default both are timed
    once on this machine (a few ms) and onebit is chosen only when at least 10 % faster: it
    is 2.4x faster than MKL on AMD Zen 5, where MKL does not use the full-width AVX-512.
    The two differ in float32 rounding only (summation order).
    """
    global _backend
    if _backend is None:
        env = os.environ.get("ONEBIT_NN_PRODUCTS", "auto")
        set_products_backend(env)
    return _backend


def set_products_backend(name: str) -> str:
    """Pins the backward products to ``"onebit"`` or ``"torch"``, or ``"auto"`` to time both
    now; returns the backend chosen."""
    global _backend
    if name == "auto":
        t = _time_backends()
        name = "onebit" if t["onebit"] * 1.1 <= t["torch"] else "torch"
    elif name not in _BACKENDS:
        raise ValueError(f"onebit.nn: products backend {name!r} is not one of auto, onebit, torch")
    _backend = name
    return name


class _BitLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, kernel, lam, recompute):
        x2 = x.reshape(-1, x.shape[-1]).contiguous()
        w = weight.contiguous()
        out = torch.empty(x2.shape[0], w.shape[0], dtype=torch.float32)
        ctx.operands = float(lam) == 1.0 and not recompute and x2.shape[0] > 0
        if ctx.operands:
            # The backward's operands from this forward's codes: the backward is then only
            # the two dense products.
            xu, wu = torch.empty_like(x2), torch.empty_like(w)
            kernel.forward_with_operands(_view(out, "out"), _view(xu, "x_used"), _view(wu, "w_used"), _view(x2, "input"), _view(w, "weight"))
            ctx.save_for_backward(xu, wu)
        elif x2.shape[0] > 0:
            kernel.forward(_view(out, "out"), _view(x2, "input"), _view(w, "weight"), float(lam))
            ctx.save_for_backward(x2, w)
        else:
            out.zero_()
            ctx.save_for_backward(x2, w)
        ctx.kernel, ctx.lam, ctx.x_shape = kernel, float(lam), x.shape
        return out.reshape(*x.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx, dout):
        # (fq(x), fq(W)) when the forward saved the operands, else (x, W).
        a, b = ctx.saved_tensors
        d2 = dout.reshape(-1, b.shape[0]).contiguous()
        want_x, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if a.shape[0] == 0 or not (want_x or want_w):
            dx = torch.zeros_like(a) if want_x else None
            dw = torch.zeros_like(b) if want_w else None
        else:
            if ctx.operands:
                xu, wu = a, b
            else:
                # onebit recomputes the quantized operands from the saved input and latent
                # weight, straight into the tensors the products read.
                xu, wu = torch.empty_like(a), torch.empty_like(b)
                ctx.kernel.backward_operands(_view(xu, "x_used"), _view(wu, "w_used"), _view(a, "input"), _view(b, "weight"), ctx.lam)
            dx, dw = _products(products_backend(), ctx.kernel, d2, xu, wu, want_x, want_w)
        return (None if dx is None else dx.reshape(ctx.x_shape)), dw, None, None, None


class BitLinear(torch.nn.Module):
    """``torch.nn.Linear`` with ternary weights and int8 activations (BitNet b1.58).

    The latent ``weight`` stays float32 and is what the optimizer updates; every forward
    quantizes it. ``lam`` < 1 blends both operands toward full precision. ``recompute``
    re-quantizes in the backward instead of keeping the forward's ``Xq/s`` and ``γ·Wq``.
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = False, lam: float = 1.0, device=None, recompute: bool = False
    ):
        super().__init__()
        # The kernel first: it checks the sizes before torch allocates anything.
        self._kernel = _onebit.BitLinearKernel(out_features, in_features)
        self.in_features, self.out_features, self.lam = in_features, out_features, float(lam)
        self.recompute = bool(recompute)
        # Latent weights stay float32 whatever the model's dtype (transformers loads checkpoint
        # tensors into the parameter's dtype); "meta" defers allocation to a loader.
        kw = dict(device=device, dtype=torch.float32)
        self.weight = torch.nn.Parameter(torch.empty(out_features, in_features, **kw))
        self.bias = torch.nn.Parameter(torch.zeros(out_features, **kw)) if bias else None
        if self.weight.device.type != "meta":
            torch.nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        if not dtype.is_floating_point:
            raise TypeError(f"onebit.nn.BitLinear: the input must be a floating-point tensor, got {dtype}")
        # The kernels run float32; bf16/f16/f64 inputs are converted and the output converted back.
        y = _BitLinearFn.apply(x.float(), self.weight, self._kernel, self.lam, self.recompute)
        y = y if self.bias is None else y + self.bias
        return y.to(dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, lam={self.lam}"
            + (", recompute=True" if self.recompute else "")
        )

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, lam: float = 1.0, recompute: bool = False) -> "BitLinear":
        """A BitLinear starting from ``linear``'s weights (copied as the latent weights)."""
        m = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, lam=lam, recompute=recompute)
        with torch.no_grad():
            m.weight.copy_(linear.weight.float())
            if linear.bias is not None:
                m.bias.copy_(linear.bias.float())
        return m


def replace_linear(
    module: torch.nn.Module, skip: Iterable[str] = ("lm_head",), lam: float = 1.0, recompute: bool = False
) -> torch.nn.Module:
    """Swaps every ``nn.Linear`` in ``module`` for a ``BitLinear`` with its weights, except those
    whose qualified name or last name part is in ``skip``; returns ``module``."""
    skip = set(skip)
    for name, child in list(module.named_modules()):
        for cname, c in list(child.named_children()):
            full = f"{name}.{cname}" if name else cname
            if isinstance(c, torch.nn.Linear) and not isinstance(c, BitLinear) and cname not in skip and full not in skip:
                setattr(child, cname, BitLinear.from_linear(c, lam=lam, recompute=recompute))
    return module


class SteMonitor:
    """The trainer's STE monitor over a PyTorch module's BitLinears (see ``ste_monitor``)."""

    def __init__(self, module: torch.nn.Module, every: int = 10, callback=None):
        if every < 1:
            raise ValueError("every must be at least 1")
        self.layers = [(n, m) for n, m in module.named_modules() if isinstance(m, BitLinear)]
        if not self.layers:
            raise ValueError("the module has no onebit.nn.BitLinear (use onebit.nn.replace_linear)")
        self.every, self.reports = every, []
        self.callback = callback if callback is not None else (lambda r: print(f"step {r['step']}: {r['summary']}"))
        self._native = _onebit.SteMonitor()
        self._backwards = {n: 0 for n, _ in self.layers}
        self._pending: dict = {}
        self._ready: dict = {}
        self._hooks = []
        for name, m in self.layers:
            self._hooks.append(m.weight.register_post_accumulate_grad_hook(self._after_backward(name)))
            self._hooks.append(m.register_forward_pre_hook(self._before_forward(name)))

    def _after_backward(self, name):
        def hook(p):
            self._backwards[name] += 1
            if self._backwards[name] % self.every == 0:
                grad_norm = float(torch.linalg.vector_norm(p.grad.detach(), dtype=torch.float64))
                self._pending[name] = (self._backwards[name], grad_norm, p.detach().clone())
        return hook

    def _before_forward(self, name):
        def hook(module, args):
            if name in self._pending:
                step, grad_norm, used = self._pending.pop(name)
                now = module.weight.detach()
                update_sq = float(((now.double() - used.double()) ** 2).sum())
                clip = module._kernel.take_clip_counts()  # the forwards up to this report
                self._ready[name] = (step, grad_norm, used, now.clone(), update_sq, clip)
                if len(self._ready) == len(self.layers):
                    self._emit()
        return hook

    def _emit(self):
        rows, step = [], 0
        for name, m in self.layers:
            s, grad_norm, used, now, update_sq, (clipped, seen) = self._ready[name]
            step = max(step, s)
            rows.append((name, used.numpy(), now.numpy(), grad_norm, update_sq, clipped, seen))
        self._ready.clear()
        report = self._native.report(step, rows)
        self.reports.append(report)
        self.callback(report)

    def close(self):
        """Removes the hooks."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()


def ste_monitor(module: torch.nn.Module, every: int = 10, callback=None) -> SteMonitor:
    """Reports, every ``every`` optimizer steps, what onebit's trainer reports per BitLinear:
    shares of weights at -1/0/+1, trit flips and sign flips since the last report, saturated
    latents (|W/γ| > 1.5), clipped activations, gradient norm, update/weight ratio, and
    warnings (frozen, collapsing, vanishing gradient).

    A report is made from the weights a step used and the update the optimizer then applied,
    so it is emitted at the next forward; ``callback(report)`` receives it (default: print the
    summary line) and ``.reports`` keeps them all.
    """
    return SteMonitor(module, every=every, callback=callback)
