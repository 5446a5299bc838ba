"""Times messages across a link the way a pass's exchanges cross it, for bench/link-fidelity.sh.

`server HOST PORT` receives length-prefixed messages and answers each with one byte;
`client HOST PORT SIZE GAP_MS COUNT` sends COUNT messages of SIZE bytes, GAP_MS apart (0:
back to back), and prints the median time from send to answer and the rate it implies.
The gap stands for the compute between two exchanges, during which a token bucket refills.
"""

import socket
import statistics
import sys
import time


def serve(host: str, port: int) -> None:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(1)
    s.settimeout(30)
    c, _ = s.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        head = c.recv(8, socket.MSG_WAITALL)
        if len(head) < 8:
            return
        left = int.from_bytes(head, "little")
        while left:
            got = c.recv(min(1 << 20, left))
            if not got:
                return
            left -= len(got)
        c.sendall(b"k")


def send(host: str, port: int, size: int, gap_ms: float, count: int) -> None:
    for _ in range(50):
        try:
            c = socket.create_connection((host, port), timeout=30)
            break
        except ConnectionRefusedError:
            time.sleep(0.05)
    else:
        sys.exit(f"piece_times.py: nothing listens on {host}:{port}")
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg = size.to_bytes(8, "little") + b"x" * size
    times = []
    for _ in range(count):
        t = time.perf_counter()
        c.sendall(msg)
        c.recv(1)
        times.append(time.perf_counter() - t)
        if gap_ms:
            time.sleep(gap_ms / 1e3)
    med = statistics.median(times[5:])
    print(f"  {size:>8} B, gap {gap_ms:.1f} ms: median {med * 1e3:7.3f} ms, {size / med / 1e6:7.1f} MB/s")


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]))
