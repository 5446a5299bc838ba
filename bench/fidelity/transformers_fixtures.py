"""Records transformers as the oracle for onebit's Hugging Face loader and writer.

Writes crates/onebit-model/tests/fixtures/hf/: tiny checkpoints made by transformers itself
(random init, save_pretrained) in the forms BitNet checkpoints ship in, and transformers' own
float32 CPU logits at every position of a fixed token sequence:

  bitnet-online    BitNetForCausalLM, bf16 master weights, quantization_config autobitlinear
                   online (transformers ternarizes with absmean on every forward)
  bitnet-packed    the same weights ternarized and packed with transformers' pack_weights,
                   autobitlinear offline (uint8 [out/4, in] + weight_scale that multiplies)
  bitnet-bitlinear the same, linear_class bitlinear (weight_scale = 1/mean|W|, divides)
  llama-online     LlamaForCausalLM (SiLU, no sub-norms, untied head), online autobitlinear

and, for a trained model, what transformers computes on the directory onebit writes
(`onebit convert relu2-t2.gguf --for transformers`): greedy tokens and logits.

Run from the repository root with torch, transformers and accelerate installed:
  python bench/fidelity/transformers_fixtures.py [path/to/onebit]
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch
import transformers
from transformers import AutoModelForCausalLM, BitNetConfig, BitNetForCausalLM, LlamaConfig, LlamaForCausalLM
from transformers.integrations.bitnet import pack_weights

OUT = "crates/onebit-model/tests/fixtures/hf"
ONEBIT = sys.argv[1] if len(sys.argv) > 1 else "target/release/onebit"
SEQ = [1, 17, 200, 33, 5, 91, 140, 7, 250, 64, 3, 128]
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ONLINE = {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "online"}


def small(kind):
    common = dict(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)
    if kind == "bitnet":
        cfg = BitNetConfig(hidden_act="relu2", tie_word_embeddings=True, rope_theta=500000.0, **common)
        return BitNetForCausalLM(cfg)
    cfg = LlamaConfig(hidden_act="silu", tie_word_embeddings=False, rope_theta=10000.0, **common)
    return LlamaForCausalLM(cfg)


def set_quant(d, q):
    p = os.path.join(d, "config.json")
    c = json.load(open(p))
    c["quantization_config"] = q
    json.dump(c, open(p, "w"), indent=2)


def logits_of(d, ids):
    m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    m.eval()
    with torch.no_grad():
        return m, m(torch.tensor([ids])).logits[0].float()


def save_case(name, d, ids, extra=None):
    m, l = logits_of(d, ids)
    dst = os.path.join(OUT, name)
    if d != dst:
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(d, dst)
    l.numpy().astype("<f4").tofile(os.path.join(OUT, name + ".logits.f32"))
    rec = {"transformers": transformers.__version__, "torch": torch.__version__,
           "class": type(m).__name__, "ids": ids, "positions": len(ids), "vocab": l.shape[1],
           "logits": name + ".logits.f32"}
    rec.update(extra or {})
    json.dump(rec, open(os.path.join(OUT, name + ".json"), "w"), indent=1)
    print(name, type(m.model.layers[0].self_attn.q_proj).__name__, l.shape)
    return m


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    tmp = tempfile.mkdtemp()
    # Masters in bf16, the form BitNet training checkpoints ship in.
    for kind in ("bitnet", "llama"):
        d = os.path.join(tmp, kind)
        m = small(kind).to(torch.bfloat16)
        m.save_pretrained(d)
        set_quant(d, ONLINE)
        save_case(kind + "-online", d, SEQ)
    # Packed offline forms of the bitnet master, ternarized as transformers' WeightQuant does.
    src = os.path.join(tmp, "bitnet")
    master = BitNetForCausalLM.from_pretrained(src, dtype=torch.float32)
    sd = {k: v.clone() for k, v in master.state_dict().items()}
    for linear_class in ("autobitlinear", "bitlinear"):
        d = os.path.join(tmp, "packed-" + linear_class)
        master.save_pretrained(d)
        packed = {}
        for k, w in sd.items():
            if k.endswith(".weight") and k.split(".")[-2] in LINEARS:
                s = w.abs().mean().clamp(min=1e-5)
                t = (w / s).round().clamp(-1, 1)
                packed[k] = pack_weights(t.to(torch.int8).clone())
                scale = s if linear_class == "autobitlinear" else 1.0 / s
                packed[k.replace(".weight", ".weight_scale")] = scale.reshape(1).to(torch.float32)
            elif k != "lm_head.weight":
                packed[k] = w.to(torch.float32)
        for f in os.listdir(d):
            if f.endswith(".safetensors"):
                os.remove(os.path.join(d, f))
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in packed.items()}, os.path.join(d, "model.safetensors"),
                  metadata={"format": "pt"})
        set_quant(d, {"quant_method": "bitnet", "linear_class": linear_class, "quantization_mode": "offline"})
        save_case("bitnet-packed" if linear_class == "autobitlinear" else "bitnet-bitlinear", d, SEQ)
    # A trained model written by onebit, read by transformers: greedy tokens and logits.
    d = os.path.join(tmp, "onebit-relu2")
    subprocess.run([ONEBIT, "convert", "crates/onebit-model/tests/fixtures/peers/relu2-t2.gguf",
                    "--for", "transformers", "-o", d], check=True)
    prompt = [934, 367, 259, 1986, 498, 73, 1155, 553, 3106]
    m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    with torch.no_grad():
        gen = m.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False)[0].tolist()
    ids = gen[:-1]
    digest = hashlib.sha256()
    for f in ("config.json", "model.safetensors"):
        digest.update(open(os.path.join(d, f), "rb").read())
    _, l = logits_of(d, ids)
    l.numpy().astype("<f4").tofile(os.path.join(OUT, "onebit-relu2.logits.f32"))
    top2 = torch.topk(l, 2, dim=1)
    rec = {"transformers": transformers.__version__, "torch": torch.__version__,
           "made_by": "onebit convert relu2-t2.gguf --for transformers", "sha256": digest.hexdigest(),
           "prompt": prompt, "tokens": gen[len(prompt):], "ids": ids, "positions": len(ids),
           "vocab": l.shape[1], "logits": "onebit-relu2.logits.f32",
           "top2": [[int(i[0]), float(v[0]), int(i[1]), float(v[1])] for v, i in zip(top2.values, top2.indices)]}
    json.dump(rec, open(os.path.join(OUT, "onebit-relu2.json"), "w"), indent=1)
    print("onebit-relu2 greedy", rec["tokens"])
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
