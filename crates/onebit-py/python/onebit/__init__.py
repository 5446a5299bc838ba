"""onebit: 1.58-bit (ternary) language models on ordinary CPUs.

- ``onebit.AutoModelForCausalLM.from_pretrained(path)``: load a GGUF file or a Hugging Face
  directory and ``generate`` text (streaming or batched), or read ``logits``.
- ``onebit.nn.BitLinear``: a drop-in ``torch.nn.Linear`` replacement that trains with the
  straight-through estimator and runs its forward on onebit's integer kernels (needs torch).

Everything runs in the Rust engine; the GIL is released while it works and Ctrl-C stops a
generation between tokens.
"""

from __future__ import annotations

import json
import sys
import warnings
from typing import Callable, Iterator, List, Optional, Sequence, Union

from . import _onebit
from ._onebit import GenerationStream, OneBitError, Tokenizer, __version__

__all__ = [
    "AutoModelForCausalLM",
    "export",
    "finetune",
    "train",
    "CausalLM",
    "GenerationStream",
    "OneBitError",
    "Tokenizer",
    "__version__",
]

Prompt = Union[str, Sequence[int]]


class CausalLM:
    """A loaded 1.58-bit model (use ``AutoModelForCausalLM.from_pretrained``)."""

    def __init__(self, native: "_onebit.Model"):
        self._m = native
        self.tokenizer: Tokenizer = native.tokenizer
        self.config: dict = native.config

    def _ids(self, prompt: Prompt) -> List[int]:
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt, add_special_tokens=True)
        ids = [int(t) for t in prompt]
        return ids

    def generate(
        self,
        prompt: Union[Prompt, Sequence[Prompt]],
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 0.95,
        top_k: int = 40,
        min_p: float = 0.05,
        repetition_penalty: float = 1.0,
        stop: Optional[Union[str, Sequence[str]]] = None,
        seed: int = 42,
        stream: bool = False,
        json_object: bool = False,
        json_schema: Optional[Union[dict, str]] = None,
        grammar: Optional[str] = None,
    ) -> Union[str, List[str], Iterator[str]]:
        """The reply to ``prompt`` (text, or token ids) as text, without the prompt.

        A list of prompts is generated together (one engine pass per token for all of them)
        and returns a list of replies. ``stream=True`` returns an iterator of text pieces for
        one prompt; closing it, leaving its ``with`` block or dropping it cancels the reply.
        ``temperature=0`` is greedy. ``json_object=True`` is OpenAI's JSON mode: the reply is
        one JSON object (tokens that cannot continue one are never sampled) and ends when it
        closes. ``json_schema`` (a dict, or JSON text) is structured output: the reply is one
        document of that JSON schema; a schema keyword that cannot be enforced is a
        ``ValueError`` naming it. ``grammar`` (GBNF text, llama.cpp's syntax with a ``root``
        rule) holds the reply to a sentence of the grammar; a grammar that cannot be read is
        a ``ValueError`` saying where.
        """
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        opts = dict(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            min_p=min_p,
            repetition_penalty=repetition_penalty,
            seed=seed,
            stop=stops,
            json_object=bool(json_object),
            json_schema=None if json_schema is None
            else json_schema if isinstance(json_schema, str) else json.dumps(json_schema),
            grammar=grammar,
        )
        batch = not isinstance(prompt, str) and len(prompt) > 0 and not isinstance(prompt[0], int)
        if batch:
            if stream:
                raise ValueError("stream=True takes one prompt, not a list of prompts")
            ids = [self._ids(p) for p in prompt]  # type: ignore[union-attr]
            return [text for text, _, _ in self._m.generate_batch(ids, opts)]
        s = self._m.stream(self._ids(prompt), opts)  # type: ignore[arg-type]
        if stream:
            return s
        with s:  # Ctrl-C (or any error) while joining cancels the reply at its next token
            return "".join(s)

    def logits(self, input_ids: Prompt, last_only: bool = False):
        """Logits after every token (a float32 NumPy array of shape (tokens, vocab))."""
        return self._m.logits(self._ids(input_ids), last_only=last_only)

    def forward(self, input_ids: Prompt):
        """The same as ``logits(input_ids)``: one row per input token."""
        return self.logits(input_ids)

    __call__ = forward

    def __repr__(self) -> str:
        c = self.config
        return (
            f"CausalLM({c['path']!r}, layers={c['num_hidden_layers']}, hidden={c['hidden_size']}, "
            f"vocab={c['vocab_size']}, kernel={c['kernel']!r})"
        )


class AutoModelForCausalLM:
    """transformers-style entry point."""

    @staticmethod
    def from_pretrained(
        path: str,
        quantization_config: Optional[str] = "1bit-native",
        threads: Optional[int] = None,
        kv_cache: str = "f16",
        head: str = "q8",
        ctx: int = 2048,
        layout: Optional[str] = None,
        mmap: Optional[bool] = None,
        verify: bool = True,
        embeddings: str = "f16",
    ) -> CausalLM:
        """Loads a GGUF file (onebit, llama.cpp TQ1_0/TQ2_0, ik_llama.cpp IQ1_BN/IQ2_BN,
        bitnet.cpp I2_S, f16/f32 masters) or a Hugging Face directory.

        ``quantization_config="1bit-native"`` (the only mode) runs ternary weights on the
        integer kernels; float weights that are not already ternary are ternarized with
        absmean on load, which is only right for BitNet latent weights: fine-tune such a
        model first (``onebit finetune``, or ``onebit.nn.BitLinear`` in PyTorch).
        ``embeddings="f32"`` keeps an embedding table that is copied into memory in f32
        (twice the bytes of the default f16; exact for f32 checkpoints).
        """
        if quantization_config not in (None, "1bit-native"):
            raise ValueError(
                f"quantization_config {quantization_config!r}: only '1bit-native' is supported"
            )
        if _onebit.needs_finetuning(str(path)):
            warnings.warn(
                f"{path}: its linears are full-precision weights that were not trained for 1.58 bits; "
                "they are ternarized on load (absmean) and the model will write poor text until it is "
                "fine-tuned: onebit.finetune(path, data, out) (or `onebit finetune`), or in PyTorch "
                "onebit.transformers.OneBitConfig / onebit.nn.replace_linear",
                UserWarning,
                stacklevel=2,
            )
        native = _onebit.Model.load(
            str(path),
            threads=threads,
            kv_cache=kv_cache,
            head=head,
            ctx=ctx,
            layout=layout,
            mmap=mmap,
            verify=verify,
            embeddings=embeddings,
        )
        return CausalLM(native)


def _events(callback: Optional[Callable[[dict], object]], verbose: bool):
    """Turns the engine's (kind, payload) events into dicts for ``callback``."""

    def on(kind: str, payload: str):
        if kind == "step":
            event = dict(json.loads(payload), type="step")
        else:
            event = {"type": kind, "text": payload}
            if verbose:
                print(("warning: " if kind == "warning" else "") + payload, file=sys.stderr)
        if callback is not None:
            return callback(event) is not False
        return True

    return on


def train(
    data: Union[str, Sequence[str]],
    out: str,
    *,
    tokenizer: Optional[str] = None,
    vocab: int = 4096,
    config: Optional[str] = None,
    resume: Optional[str] = None,
    callback: Optional[Callable[[dict], object]] = None,
    verbose: bool = True,
    **settings,
) -> dict:
    """Trains a BitNet b1.58 model from scratch on text/JSONL files, exactly as ``onebit train``:
    the same run folder (run.toml, metrics.jsonl, monitor.jsonl, checkpoint.safetensors,
    tokenizer.json, model.gguf). ``settings`` are the CLI's flags (hidden, layers, heads,
    kv_heads, ffn, seq, batch, accum, steps, lr, warmup, threads, eval_every, monitor_every,
    save_every, seed, checkpointing, clipped_ste, int8_backward).

    ``callback(event)`` gets ``{"type": "step", "step", "loss", "lr", "tok_s", ...}`` after every
    step (with ``val_loss`` and ``monitor`` when they were computed) and ``{"type":
    "message"|"warning", "text"}``; returning False stops the run (a checkpoint is written).
    """
    files = [data] if isinstance(data, str) else list(data)
    steps, ckpt, model, stopped = _onebit.train(
        files, str(out), settings, tokenizer=tokenizer, vocab=vocab, config=config,
        resume=resume, callback=_events(callback, verbose),
    )
    return {"steps": steps, "checkpoint": ckpt, "model": model, "stopped": stopped}


def finetune(
    model: str,
    data: Union[str, Sequence[str]],
    out: str,
    *,
    callback: Optional[Callable[[dict], object]] = None,
    verbose: bool = True,
    **settings,
) -> dict:
    """Fine-tunes a full-precision Llama-family model (GGUF or HF directory) into 1.58 bits
    with a λ phase-in, exactly as ``onebit finetune`` (settings: tokenizer, steps,
    lambda_warmup, lr, warmup, seq, batch, accum, eval_batches, eval_every, val_share, threads,
    checkpointing, seed). Returns the validation losses before and after and the model path.
    """
    files = [data] if isinstance(data, str) else list(data)
    fp, naive, tuned, path, stopped = _onebit.finetune(
        str(model), files, str(out), settings, callback=_events(callback, verbose)
    )
    return {"fp_loss": fp, "naive_ternary_loss": naive, "finetuned_loss": tuned, "model": path, "stopped": stopped}


def export(src: str, dst: str, target: str = "onebit") -> None:
    """Writes ``src`` (a training checkpoint, an HF directory of latent or float weights, or a
    GGUF file) for ``target``: a GGUF file for ``onebit``, ``llama.cpp``, ``ik_llama.cpp`` or
    ``bitnet.cpp``, or a directory for ``transformers`` (its BitNet loader), as
    ``onebit export`` / ``onebit convert`` do."""
    _onebit.convert(str(src), str(dst), target)
