"""Starts `onebit serve` on a free loopback port with the shipped model for the tests."""
import os
import socket
import subprocess
import time
import urllib.request

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
BIN = os.environ.get("ONEBIT_BIN", os.path.join(ROOT, "target", "release", "onebit"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(*flags):
    """Starts `onebit serve` on the shipped model with `flags`; yields its URL, then stops it."""
    port = free_port()
    proc = subprocess.Popen(
        [BIN, "serve", os.path.join(ROOT, "models", "austen.gguf"), "--port", str(port), *flags],
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("onebit serve exited: " + proc.stderr.read().decode())
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("onebit serve did not come up")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def server():
    yield from serve("--slots", "2", "--api-key", "test-key", "--ctx", "256")
