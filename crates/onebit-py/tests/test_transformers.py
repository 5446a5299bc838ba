"""onebit as a transformers quantization method, on a tiny Llama made by transformers itself."""

import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
import onebit  # noqa: E402
import onebit.nn  # noqa: E402
import onebit.transformers as otf  # noqa: E402

VOCAB, SEQ = 128, 16


def tiny_llama(path):
    cfg = transformers.LlamaConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, vocab_size=VOCAB, max_position_embeddings=64, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    base = transformers.LlamaForCausalLM(cfg)
    base.save_pretrained(path)
    # A one-character-per-token BPE so onebit's loader (which wants a tokenizer), GGUF export
    # and generation work.
    from tokenizers import Tokenizer, models

    tok = Tokenizer(models.BPE({chr(0x100 + i): i for i in range(VOCAB)}, []))
    tok.save(str(path / "tokenizer.json"))
    return base


class Counting(torch.utils.data.Dataset):
    """Rows that count up from a random start: learnable in a few steps."""

    def __init__(self, n=64):
        g = torch.Generator().manual_seed(1)
        starts = torch.randint(0, VOCAB, (n, 1), generator=g)
        self.rows = (starts + torch.arange(SEQ)) % VOCAB

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return {"input_ids": self.rows[i], "labels": self.rows[i].clone()}


def bitlinears(model):
    return {n for n, m in model.named_modules() if isinstance(m, onebit.nn.BitLinear)}


def test_load_finetune_save_and_run_in_onebit(tmp_path):
    base = tiny_llama(tmp_path / "base")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "base", quantization_config=otf.OneBitConfig(modules_to_not_convert=["lm_head"])
    )
    assert len(bitlinears(model)) == 14 and isinstance(model.lm_head, torch.nn.Linear)
    assert torch.equal(model.model.layers[1].mlp.down_proj.weight, base.model.layers[1].mlp.down_proj.weight)
    # The dict form resolves to the same method.
    m2 = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base", quantization_config={"quant_method": "onebit"})
    assert bitlinears(m2) == bitlinears(model)

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "trainer"), max_steps=20, per_device_train_batch_size=8,
        learning_rate=3e-3, logging_steps=1, report_to=[], use_cpu=True, save_strategy="no",
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Counting())
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 20 and sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses

    out = tmp_path / "out"
    model.save_pretrained(out)
    (out / "tokenizer.json").write_bytes((tmp_path / "base" / "tokenizer.json").read_bytes())
    assert json.loads((out / "config.json").read_text())["quantization_config"]["quant_method"] == "onebit"
    # transformers reloads it as BitLinears with the same outputs.
    again = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert bitlinears(again) == bitlinears(model)

    ids = [5, 6, 7, 8, 9, 10, 11, 12]
    model.eval()
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()
        assert (again(torch.tensor([ids])).logits[0].numpy() == want).all()
    # onebit's engine on the saved directory: f32 head and KV cache, as PyTorch computes.
    engine = onebit.AutoModelForCausalLM.from_pretrained(str(out), head="f32", kv_cache="f32", threads=2)
    got = engine.logits(ids)
    err = abs(got - want).max() / abs(want).max()
    # The engine keeps embedding tables in f16 (as llama.cpp does); with the PyTorch model's
    # table rounded the same way the two agree exactly: every other op matches bit for bit.
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        saved = emb.detach().clone()
        emb.copy_(emb.half().float())
        want16 = model(torch.tensor([ids])).logits[0].numpy()
        emb.copy_(saved)
    err16 = abs(got - want16).max() / abs(want16).max()
    exact = onebit.AutoModelForCausalLM.from_pretrained(str(out), head="f32", kv_cache="f32", embeddings="f32", threads=2)
    err32 = abs(exact.logits(ids) - want).max() / abs(want).max()
    print(f"onebit engine vs the fine-tuned PyTorch model: relative {err32:.2e} with f32 embeddings; "
          f"{err:.2e} with the default f16 table ({err16:.2e} against the model with its table rounded to f16)")
    assert err32 <= 1e-3 and err16 <= 1e-6 and err <= 3e-3

    # The packed checkpoint for transformers' own BitNet loader, which onebit reads as well.
    otf.save_bitnet(model, str(tmp_path / "bitnet"), tokenizer=str(tmp_path / "base" / "tokenizer.json"))
    cfg = json.loads((tmp_path / "bitnet" / "config.json").read_text())
    assert cfg["quantization_config"]["quant_method"] == "bitnet"
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "bitnet")
    with torch.no_grad():
        hf_logits = hf(torch.tensor([ids])).logits[0].float().numpy()
    packed = onebit.AutoModelForCausalLM.from_pretrained(str(tmp_path / "bitnet"), head="f32", kv_cache="f32", threads=2)
    err_hf = abs(hf_logits - want).max() / abs(want).max()
    err_packed = abs(packed.logits(ids) - want).max() / abs(want).max()
    print(f"transformers' BitNet loader vs the PyTorch model: relative {err_hf:.2e}; onebit on the packed files: {err_packed:.2e}")
    assert err_packed <= 3e-3 and err_hf <= 3e-3


def test_a_full_precision_model_warns_that_it_needs_finetuning(tmp_path):
    tiny_llama(tmp_path / "base")
    with pytest.warns(UserWarning, match="fine-tuned: onebit.finetune"):
        onebit.AutoModelForCausalLM.from_pretrained(str(tmp_path / "base"), threads=1)
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base", quantization_config=otf.OneBitConfig())
    model.save_pretrained(tmp_path / "qat")
    (tmp_path / "qat" / "tokenizer.json").write_bytes((tmp_path / "base" / "tokenizer.json").read_bytes())
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        onebit.AutoModelForCausalLM.from_pretrained(str(tmp_path / "qat"), threads=1)  # QAT latents: no warning


def test_config_checks():
    with pytest.raises(ValueError):
        otf.OneBitConfig(lam=2.0)
    with pytest.raises(ValueError):
        otf.OneBitConfig(modules_to_not_convert="lm_head")
    # Importing twice does not register twice.
    import importlib

    importlib.reload(otf)
