"""Ctrl-C (SIGINT) stops long engine calls with KeyboardInterrupt, leaving a usable state."""

import signal
import subprocess
import sys
import time

from conftest import MODEL, ROOT

GENERATE = f"""
import onebit, sys
m = onebit.AutoModelForCausalLM.from_pretrained({str(MODEL)!r}, threads=2, ctx=2048)
print("ready", flush=True)
import os, signal, threading, traceback
# The signal arrives while the main thread is inside generate: 32 replies generated together
# until the shipped model's 256 positions are full take about a second on 2 cores (one reply
# alone took 40-60 ms, which a signal 50 ms later could miss).
threading.Timer(0.05, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
try:
    m.generate(["It was"] * 32, max_new_tokens=100000, temperature=0.8)
    print("finished", flush=True)
except KeyboardInterrupt as e:
    # Raised from within the engine call (onebit's frame is the last), not after it returned.
    where = traceback.extract_tb(e.__traceback__)[-1].filename
    print("interrupted", "inside" if "onebit" in where else "outside: " + where, flush=True)
# A stream in a with block: Ctrl-C inside the loop body cancels it on the way out.
s = m.generate("It was", max_new_tokens=100000, stream=True, temperature=0.8)
try:
    with s:
        for i, piece in enumerate(s):
            if i == 5:
                import os, signal
                os.kill(os.getpid(), signal.SIGINT)
except KeyboardInterrupt:
    print("stream", s.finish_reason, flush=True)
print("after:", len(m.generate("It was", max_new_tokens=8)) > 0, flush=True)
"""

TRAIN = """
import onebit, sys
try:
    onebit.train(sys.argv[1], sys.argv[2], vocab=512, hidden=64, layers=2, heads=2, ffn=128, seq=32,
                 batch=2, steps=100000, threads=2, verbose=False,
                 callback=lambda e: print("step", e["step"], flush=True) if e["type"] == "step" and e["step"] == 1 else None)
    print("finished", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def run_and_interrupt(code, *args, after="ready"):
    p = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in p.stdout:
        if line.startswith(after):
            break
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    return out, err


def test_ctrl_c_stops_a_generation():
    p = subprocess.run([sys.executable, "-c", GENERATE], capture_output=True, text=True, timeout=60)
    out, err = p.stdout, p.stderr
    assert "interrupted inside" in out and "finished" not in out, out + err
    assert "stream cancelled" in out, out + err
    assert "after: True" in out


def test_ctrl_c_stops_training_with_a_checkpoint(tmp_path):
    data = tmp_path / "d.txt"
    data.write_text((ROOT / "data" / "persuasion.txt").read_text()[:40000])
    out, err = run_and_interrupt(TRAIN, str(data), str(tmp_path / "run"), after="step")
    assert "interrupted" in out, out + err
    assert (tmp_path / "run" / "checkpoint.safetensors").exists()
    steps = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert 1 <= len(steps) < 100000
