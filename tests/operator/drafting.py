"""A Draft of one decision, for unit tests of single policies (tunix_operator.policies)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tests.operator.factories import at
from tunix_operator.policies.draft import Draft, Observed, view_run
from tunix_operator.settings import OperatorSettings

SETTINGS = OperatorSettings(artifacts_base_uri="s3://bucket/runs", progress_interval_seconds=7)


def draft(body: dict[str, Any], observed: Observed | None = None, now: datetime | None = None) -> Draft:
    return Draft(view_run(body), observed or Observed(), now or at(0), SETTINGS)
