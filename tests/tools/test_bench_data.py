"""tools/bench_data.py's throughput rows, run end to end on a small seeded dataset."""

from __future__ import annotations

import json
import subprocess
import sys

from tools import bench_data


def test_throughput_rows_have_their_figures_and_windows(tmp_path):
    """A busy child that was there before (as a test harness's servers are) is not counted as the
    pipeline's worker CPU."""
    out = tmp_path / "rows.json"
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        bench_data.main(
            ["throughput", "--tokenizer", "byte", "--workers", "0", "--threads", "1", "--seconds", "0.4",
             "--windows", "2", "--seeded-tokens", "2e5", "--workdir", str(tmp_path), "--json", str(out)]
        )  # fmt: skip
    finally:
        busy.kill()
        busy.wait()
    encoder, one_core, pipeline = json.loads(out.read_text())["rows"]
    assert (
        encoder["encoder_tokens_per_cpu_second"] > 0 and encoder["encoder_threads_1"]["tokens_per_second"] > 0
    )
    windows = one_core["one_core_tokens_per_cpu_second_windows"]
    assert len(windows) == 2 and one_core["one_core_tokens_per_cpu_second_best"] == max(windows)
    assert one_core["one_core_tokens_per_cpu_second"] in windows  # the median of two: the larger
    assert (pipeline["workers"], pipeline["threads"]) == (0, 1)
    assert len(pipeline["tokens_per_second_windows"]) == 2 and pipeline["tokens_per_cpu_second"] > 0
    assert (
        pipeline["trainer_cpu_seconds_per_m_tokens"] > 0 and pipeline["worker_cpu_seconds_per_m_tokens"] == 0
    )
