#!/usr/bin/env python3
"""A loopback HTTP server with Range requests for measuring `skyscribe scan` over HTTP against
the same scan of the local file (Python's http.server answers Range with the whole file).
It prints each request's byte count on exit.

    python3 scripts/bench/serve_ranges.py DIR PORT &
    skyscribe scan http://127.0.0.1:PORT/scene.tif …
"""

import http.server
import os
import sys

ROOT, PORT = sys.argv[1], int(sys.argv[2])
served = {"requests": 0, "bytes": 0}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _file(self):
        path = os.path.join(ROOT, self.path.lstrip("/"))
        if not os.path.isfile(path):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return path

    def do_HEAD(self):
        served["requests"] += 1
        path = self._file()
        if path:
            self.send_response(200)
            self.send_header("Content-Length", str(os.path.getsize(path)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

    def do_GET(self):
        served["requests"] += 1
        path = self._file()
        if not path:
            return
        size = os.path.getsize(path)
        start, end = 0, size - 1
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, b = rng[6:].split("-")
            start, end = int(a), min(int(b), size - 1)
        with open(path, "rb") as f:
            f.seek(start)
            body = f.read(end - start + 1)
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        self.wfile.write(body)
        served["bytes"] += len(body)


try:
    http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
except KeyboardInterrupt:
    pass
finally:
    print(f"{served['requests']} requests, {served['bytes']} bytes", file=sys.stderr)
