"""CPU of one quiet-run S3 poll in-process against moto (third pass, issue 14): ``JsonReads.read``
through ``tunix_operator.poller.Poller`` (200 objects, each every 2 s, for 20 s), once through the
keep-alive proxy of tools/bench_operator.py (``--s3-keep-alive``) and once to moto directly (a new
connection per request). Run from the repository root:

    .venv/bin/python docs/perf/operator-2026-11-26/s3_poll_probe_moto.py
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path[:0] = [str(REPO), str(REPO / "tools"), str(REPO / "operator"), str(REPO / "api")]

import bench_operator as bench  # noqa: E402
import boto3  # noqa: E402

from tunix_operator.poller import Poller  # noqa: E402
from tunix_operator.storage import JsonReads  # noqa: E402

OBJECTS = 200


def poll_cost(port: int) -> float:
    reads = JsonReads()
    endpoint = {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1"}
    options = {"key": "bench", "secret": "bench", "client_kwargs": endpoint}
    uris = [f"s3://bench/r{i}/progress.json" for i in range(OBJECTS)]
    for uri in uris:
        assert reads.read(uri, options) is not None
    polls = [0]

    def check(uri: str) -> bool:
        reads.read(uri, options)
        polls[0] += 1
        return False

    poller: Poller[str] = Poller(check, lambda uri: None, workers=8)
    for uri in uris:
        poller.schedule(uri, 2.0)
    time.sleep(3)
    cpu, done = time.process_time(), polls[0]
    time.sleep(20)
    cost = 1000 * (time.process_time() - cpu) / (polls[0] - done)
    poller.stop()
    time.sleep(1)  # the checks under way finish before the server goes
    return round(cost, 3)


def main() -> None:
    moto_port, proxy_port = bench.free_port(), bench.free_port()
    code = (
        "import time; from moto.server import ThreadedMotoServer as S; "
        f"s = S(ip_address='127.0.0.1', port={moto_port}, verbose=False); s.start(); time.sleep(1e9)"
    )
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    moto = subprocess.Popen([sys.executable, "-c", code], **quiet)
    command = [sys.executable, "-c", bench.KEEP_ALIVE_PROXY, str(proxy_port), str(moto_port)]
    proxy = subprocess.Popen(command, **quiet)
    try:
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{moto_port}", region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")  # fmt: skip
        for _ in range(100):
            try:
                s3.create_bucket(Bucket="bench")
                break
            except Exception:
                time.sleep(0.3)
        for i in range(OBJECTS):
            s3.put_object(Bucket="bench", Key=f"r{i}/progress.json", Body=b'{"step": 1}')
        result = {
            "cpu_ms_per_poll_keep_alive_proxy": poll_cost(proxy_port),
            "cpu_ms_per_poll_moto_direct": poll_cost(moto_port),
            "load_average_1m": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(result))
    finally:
        moto.terminate()
        proxy.terminate()


if __name__ == "__main__":
    main()
