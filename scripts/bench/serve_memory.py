"""The server's memory through bursts of large uploads and after them (issue #30, item 4).

Starts `skyscribe serve` on loopback, sends two bursts of eight 4,000 × 4,000 noise PNGs
(16 megapixels each) to /v1/labels, and prints the server's resident memory (VmRSS) and peak
(VmHWM) in MiB after each burst and 1, 4, 10 and 22 s into the quiet after them. Standard
library only; the PNG is written once to /tmp/skyscribe-16mp.png.

    python3 scripts/bench/serve_memory.py target/release/skyscribe
"""
import os
import re
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib

binary = sys.argv[1]
port = 18411
png_path = "/tmp/skyscribe-16mp.png"
if not os.path.exists(png_path):
    w = h = 4000
    raw = b"".join(b"\x00" + os.urandom(w * 3) for _ in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    with open(png_path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b""))
body = open(png_path, "rb").read()
server = subprocess.Popen([binary, "serve", "--addr", f"127.0.0.1:{port}", "--no-caption",
                           "--max-body-mb", "64", "--max-pixels", "40000000"],
                          stderr=subprocess.DEVNULL)
try:
    time.sleep(4)

    def memory():
        status = open(f"/proc/{server.pid}/status").read()
        field = lambda name: int(re.search(rf"{name}:\s+(\d+)", status).group(1)) // 1024
        return f"resident {field('VmRSS')} MiB, peak {field('VmHWM')} MiB"

    def send():
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/labels?labels=eurosat",
                                     data=body, headers={"Content-Type": "image/png"})
        urllib.request.urlopen(req, timeout=120).read()

    print("started:", memory())
    for burst in (1, 2):
        threads = [threading.Thread(target=send) for _ in range(8)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print(f"after burst {burst}:", memory())
    quiet = 0
    for at in (1, 4, 10, 22):
        time.sleep(at - quiet)
        quiet = at
        print(f"quiet for {at} s:", memory())
finally:
    server.terminate()
    server.wait()
