"""onebit.train against `onebit train`: the same run folder and the same losses."""

import json
import subprocess

import pytest

import onebit
from conftest import ROOT

FLAGS = dict(hidden=64, layers=2, heads=2, ffn=128, seq=32, batch=2, steps=6, warmup=2,
             threads=2, eval_every=3, monitor_every=3, seed=5)


def losses(run_dir):
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(l["step"], l["loss"]) for l in lines]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "text.txt"
    p.write_text((ROOT / "data" / "persuasion.txt").read_text()[:60000])
    return p


def test_train_writes_the_cli_run_folder_with_the_same_losses(corpus, tmp_path, onebit_bin):
    events = []
    r = onebit.train(str(corpus), str(tmp_path / "py"), vocab=512, callback=events.append, verbose=False, **FLAGS)
    assert r["steps"] == 6 and not r["stopped"]
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4, 5, 6]
    assert all(e["loss"] > 0 and e["tok_s"] > 0 for e in steps)
    assert "val_loss" in steps[2] and steps[2].get("monitor")
    assert any(e["type"] == "message" and "train /" in e["text"] for e in events)
    for f in ["run.toml", "metrics.jsonl", "monitor.jsonl", "checkpoint.safetensors", "tokenizer.json", "model.gguf"]:
        assert (tmp_path / "py" / f).exists(), f
    args = [onebit_bin, "train", "--data", str(corpus), "-o", str(tmp_path / "cli"), "--vocab", "512"]
    for k, v in FLAGS.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    cli = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr
    assert losses(tmp_path / "py") == losses(tmp_path / "cli")
    m = onebit.AutoModelForCausalLM.from_pretrained(r["model"], threads=2)
    assert m.config["num_hidden_layers"] == 2 and isinstance(m.generate("Anne", max_new_tokens=4), str)


def test_a_callback_stops_the_run_with_a_checkpoint(corpus, tmp_path):
    r = onebit.train(str(corpus), str(tmp_path), vocab=512, verbose=False,
                     callback=lambda e: not (e["type"] == "step" and e["step"] == 2), **FLAGS)
    assert r["stopped"] and r["steps"] == 2
    assert (tmp_path / "checkpoint.safetensors").exists()
    # Resuming picks up from the checkpoint and runs to the end.
    r2 = onebit.train(str(corpus), str(tmp_path), resume=str(tmp_path / "checkpoint.safetensors"), verbose=False, steps=4)
    assert r2["steps"] == 4 and not r2["stopped"]


def test_bad_settings_are_errors_before_anything_is_written(corpus, tmp_path):
    with pytest.raises(ValueError, match="unknown training setting 'hiden'"):
        onebit.train(str(corpus), str(tmp_path / "a"), hiden=64)
    with pytest.raises(FileNotFoundError):
        onebit.train(str(tmp_path / "missing.txt"), str(tmp_path / "b"))
    with pytest.raises(ValueError):
        onebit.train(str(corpus), str(tmp_path / "c"), hidden=64, heads=3)
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()
    with pytest.raises(RuntimeError, match="boom"):
        def cb(e):
            if e["type"] == "step":
                raise RuntimeError("boom")
        onebit.train(str(corpus), str(tmp_path / "d"), vocab=512, callback=cb, verbose=False, **FLAGS)
