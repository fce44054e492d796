"""The TunixRun state machine: ``decide(run, observed, now, settings) -> Decision`` (pure).

The state lives in ``status`` (attempt, restarts, preemptions, conditions, attempt history), so a
restarted operator continues where the last one stopped. The policies live one per module in
``tunix_operator.policies``; this module is their public face. See docs/DESIGN.md.
"""

from __future__ import annotations

from tunix_operator.policies.benchmark_result import NO_BENCHMARK_RESULT
from tunix_operator.policies.draft import (
    Action,
    AnnotatePods,
    CreateAttempt,
    Decision,
    DeleteJob,
    Event,
    Observed,
    RunView,
    merge_patch,
    parse_run,
    parse_status,
    view_run,
)
from tunix_operator.policies.machine import decide, fail, reads_needed
from tunix_operator.policies.retries import backoff_seconds
from tunix_operator.policies.terminal import OPERATOR_STOPPED

__all__ = [
    "NO_BENCHMARK_RESULT",
    "OPERATOR_STOPPED",
    "Action",
    "AnnotatePods",
    "CreateAttempt",
    "Decision",
    "DeleteJob",
    "Event",
    "Observed",
    "RunView",
    "backoff_seconds",
    "decide",
    "fail",
    "merge_patch",
    "parse_run",
    "parse_status",
    "reads_needed",
    "view_run",
]
