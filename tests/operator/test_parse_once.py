"""One reconcile parses the run once: reads_needed and decide take the RunView (issue 13)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.operator.drafting import SETTINGS
from tests.operator.factories import at, job, pod, run_body
from tunix_operator.policies import draft
from tunix_operator.state import Observed, decide, reads_needed, view_run


def test_reads_needed_and_decide_reuse_the_parsed_run(monkeypatch: pytest.MonkeyPatch) -> None:
    body = run_body()
    body["status"] = decide(body, Observed(), at(0), SETTINGS).status
    calls: list[Any] = []
    real = draft.parse_run

    def counted(raw: Any) -> Any:
        calls.append(raw)
        return real(raw)

    monkeypatch.setattr(draft, "parse_run", counted)
    view = view_run(body)
    observed = Observed(job=job(), pods=[pod()])
    assert reads_needed(view, observed.job, observed.pods) == (True, False)
    decision = decide(view, observed, at(5), SETTINGS)
    assert decision.status["phase"] == "Running"
    assert len(calls) == 1
