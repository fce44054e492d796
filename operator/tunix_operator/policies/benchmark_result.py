"""A Benchmark-mode attempt exited 0: status.benchmark from the termination message, else
benchmark.json; Failed NoBenchmarkResult without either (a benchmark without numbers is no success,
and rerunning the same image would not help)."""

from __future__ import annotations

from tunix_api import artifacts
from tunix_api.run import AttemptOutcome
from tunix_operator.manifests import artifacts_uri
from tunix_operator.observe import AttemptState
from tunix_operator.policies import history, terminal
from tunix_operator.policies.draft import Draft
from tunix_operator.trainer_output import describe_message, parse_benchmark_document, parse_benchmark_message

NO_BENCHMARK_RESULT = "NoBenchmarkResult"


def succeeded(d: Draft, state: AttemptState) -> None:
    result = parse_benchmark_message(state.termination_message)
    if result is None:
        result = parse_benchmark_document(d.observed.benchmark)
    if result is None:
        history.ended(d, AttemptOutcome.FATAL, state, reason=NO_BENCHMARK_RESULT)
        assert d.run is not None
        where = artifacts.join_uri(artifacts_uri(d.run, d.settings), artifacts.BENCHMARK_FILE)
        terminal.fail(
            d,
            NO_BENCHMARK_RESULT,
            f"attempt {d.attempt} exited 0 but reported no benchmark result: "
            f"{describe_message(state.termination_message)}, and {where} is missing or unreadable",
        )
        return
    d.new.benchmark = result
    history.ended(d, AttemptOutcome.SUCCEEDED, state)
    parts = [
        f"MFU {result.mfu:.2%}" if result.mfu is not None else None,
        f"{result.tokens_per_second:,.0f} tokens/s" if result.tokens_per_second is not None else None,
        f"step p50 {result.step_time_p50_ms:.4g} ms" if result.step_time_p50_ms is not None else None,
    ]
    detail = ", ".join(p for p in parts if p)
    terminal.complete(d, f"attempt {d.attempt} completed" + (f": {detail}" if detail else ""))
