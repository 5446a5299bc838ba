"""Shared paths: the repository's shipped model and the `onebit` binary the CLI tests build."""

import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
MODEL = ROOT / "models" / "austen.gguf"


@pytest.fixture(scope="session")
def onebit_bin() -> str:
    """target/release/onebit (built here if `cargo test --release` has not built it yet)."""
    path = pathlib.Path(os.environ.get("ONEBIT_BIN", ROOT / "target" / "release" / "onebit"))
    if not path.exists():
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "onebit-cli"], cwd=ROOT, check=True)
    return str(path)


@pytest.fixture(scope="session")
def model():
    import onebit

    return onebit.AutoModelForCausalLM.from_pretrained(str(MODEL), threads=2)
