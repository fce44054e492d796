"""CPU of one quiet-run S3 poll in-process (third pass, issue 14): ``JsonReads.read`` (the operator's
conditional GET, answered 304) against a minimal HTTP/1.1 server in its own process, alone and
through ``tunix_operator.poller.Poller`` (200 objects, each every second, for 20 s).

The server keeps connections open (as S3 does), or closes each one with ``--close`` (as moto's
werkzeug server does in tools/bench_operator.py). Run from the repository root:

    .venv/bin/python docs/perf/operator-2026-11-26/s3_poll_probe.py [--close]
"""

from __future__ import annotations

import http.server
import json
import multiprocessing
import os
import pathlib
import socket
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path[:0] = [str(REPO / "operator"), str(REPO / "api")]

from tunix_operator.poller import Poller  # noqa: E402
from tunix_operator.storage import JsonReads  # noqa: E402

BODY = json.dumps({"step": 1}).encode()
ETAG = '"abc"'
OBJECTS = 200


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        unchanged = self.headers.get("If-None-Match") == ETAG
        self.send_response(304 if unchanged else 200)
        self.send_header("ETag", ETAG)
        self.send_header("Content-Length", "0" if unchanged else str(len(BODY)))
        self.end_headers()
        if not unchanged:
            self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


def serve(port: int, protocol: str) -> None:
    Handler.protocol_version = protocol
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def main() -> None:
    protocol = "HTTP/1.0" if "--close" in sys.argv else "HTTP/1.1"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = multiprocessing.Process(target=serve, args=(port, protocol), daemon=True)
    server.start()
    time.sleep(0.5)
    reads = JsonReads()
    options = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"}}
    uris = [f"s3://bench/r{i}/progress.json" for i in range(OBJECTS)]
    for uri in uris:
        assert reads.read(uri, options) is not None
    started = time.process_time()
    for uri in uris * 5:
        reads.read(uri, options)
    alone = 1000 * (time.process_time() - started) / (5 * OBJECTS)
    polls = [0]

    def check(uri: str) -> bool:
        reads.read(uri, options)
        polls[0] += 1
        return False

    poller: Poller[str] = Poller(check, lambda uri: None, workers=8)
    for uri in uris:
        poller.schedule(uri, 1.0)
    time.sleep(2)
    cpu, done = time.process_time(), polls[0]
    time.sleep(20)
    per_poll = 1000 * (time.process_time() - cpu) / (polls[0] - done)
    poller.stop()
    server.terminate()
    print(json.dumps({
        "server": protocol,
        "cpu_ms_per_read_alone": round(alone, 3),
        "cpu_ms_per_poll_through_poller": round(per_poll, 3),
        "polls": polls[0] - done,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
