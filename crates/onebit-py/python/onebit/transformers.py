"""``import onebit.transformers`` registers onebit as a transformers quantization method.

    import onebit.transformers
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path, quantization_config=onebit.transformers.OneBitConfig())

swaps every ``nn.Linear`` except those in ``modules_to_not_convert`` (default: the output
head) for ``onebit.nn.BitLinear`` before the weights load, so full-precision weights become
the latent weights of a 1.58-bit model that ``transformers.Trainer`` can fine-tune
(quantization-aware, straight-through estimator). The dict form
``quantization_config={"quant_method": "onebit"}`` works too. ``save_pretrained`` writes the
latent float32 weights with ``quantization_config`` in config.json: transformers reloads it
as BitLinears (after ``import onebit.transformers``) and ``onebit run`` runs it directly
(ternarizing with absmean, as BitLinear does). ``save_bitnet`` writes the packed ternary
checkpoint that transformers' own BitNet loader reads.

Written against transformers 5.x's ``HfQuantizer`` (``register_quantizer`` /
``register_quantization_config`` in ``transformers.quantizers``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import List, Optional

import torch
from transformers.quantizers import HfQuantizer, register_quantization_config, register_quantizer
from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING
from transformers.utils.quantization_config import QuantizationConfigMixin

from . import _onebit
from .nn import BitLinear

__all__ = ["OneBitConfig", "OneBitQuantizer", "save_bitnet"]

METHOD = "onebit"


def _matches(name: str, patterns: List[str]) -> bool:
    """A module name is skipped when a pattern is it, a dotted suffix of it, or a prefix of it."""
    for p in patterns:
        if name == p or name.endswith("." + p) or name.startswith(p + "."):
            return True
    return False


class OneBitConfig(QuantizationConfigMixin):
    """onebit's 1.58-bit quantization: ternary absmean weights, int8 absmax activations.

    ``lam`` < 1 blends both toward full precision (for a phase-in schedule you drive).
    """

    def __init__(self, modules_to_not_convert: Optional[List[str]] = None, lam: float = 1.0, **kwargs):
        self.quant_method = METHOD
        self.modules_to_not_convert = modules_to_not_convert
        self.lam = float(lam)
        if modules_to_not_convert is not None and not isinstance(modules_to_not_convert, list):
            raise ValueError("modules_to_not_convert must be a list of module names")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"lam {lam} is outside [0, 1]")


class OneBitQuantizer(HfQuantizer):
    """Replaces linears with ``onebit.nn.BitLinear`` before the weights load."""

    requires_calibration = False

    def __init__(self, quantization_config, **kwargs):
        super().__init__(quantization_config, **kwargs)

    def validate_environment(self, *args, **kwargs):
        device_map = kwargs.get("device_map")
        if isinstance(device_map, dict) and any(str(d) not in ("cpu", "disk") for d in device_map.values()):
            raise ValueError("onebit's BitLinear runs on the CPU: load with device_map=None or 'cpu'")

    def update_dtype(self, dtype):
        return dtype

    def _process_model_before_weight_loading(self, model, **kwargs):
        skip = self.get_modules_to_not_convert(
            model, self.quantization_config.modules_to_not_convert, getattr(model, "_keep_in_fp32_modules", None)
        )
        self.modules_to_not_convert = skip
        lam = self.quantization_config.lam
        for name, module in list(model.named_modules()):
            if isinstance(module, torch.nn.Linear) and not _matches(name, skip):
                new = BitLinear(
                    module.in_features,
                    module.out_features,
                    bias=module.bias is not None,
                    lam=lam,
                    device=module.weight.device,
                )
                model.set_submodule(name, new)
        return model

    def _process_model_after_weight_loading(self, model, **kwargs):
        return model

    def is_serializable(self, *args, **kwargs):
        return True

    @property
    def is_trainable(self):
        return True

    @property
    def is_qat_trainable(self):
        return True


# Registration is global in transformers: a second import (importlib.reload) must not fail.
if METHOD not in AUTO_QUANTIZATION_CONFIG_MAPPING:
    register_quantization_config(METHOD)(OneBitConfig)
if METHOD not in AUTO_QUANTIZER_MAPPING:
    register_quantizer(METHOD)(OneBitQuantizer)


def save_bitnet(model, path: str, tokenizer=None) -> None:
    """Writes ``model`` (loaded with ``OneBitConfig``) as the packed ternary checkpoint that
    transformers' own BitNet integration loads (``quant_method: "bitnet"``) and ``onebit run``
    reads: the latent weights are ternarized with absmean, exactly as BitLinear's forward does.
    ``tokenizer`` (a ``tokenizer.json`` path or a transformers tokenizer) goes with it.
    """
    with tempfile.TemporaryDirectory() as tmp:
        latent = os.path.join(tmp, "latent")
        model.save_pretrained(latent)
        if isinstance(tokenizer, (str, os.PathLike)):
            shutil.copy(tokenizer, os.path.join(latent, "tokenizer.json"))
        elif tokenizer is not None:
            tokenizer.save_pretrained(latent)
        os.makedirs(path, exist_ok=True)
        _onebit.convert(latent, path, "transformers")
        for extra in ("generation_config.json",):
            if os.path.exists(os.path.join(latent, extra)):
                shutil.copy(os.path.join(latent, extra), path)
