"""Kubernetes-style conditions and timestamps (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from tunix_api.run import Condition

# Condition types the operator maintains on a TunixRun.
RUNNING = "Running"  # every pod of the current attempt runs
RESTARTING = "Restarting"  # an attempt ended and the next one waits for its backoff
STALLED = "Stalled"  # the last attempt's step stopped advancing (retryPolicy.stallTimeoutSeconds)
SUSPENDED = "Suspended"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
ALL_TYPES = (RUNNING, RESTARTING, STALLED, SUSPENDED, SUCCEEDED, FAILED)


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with second precision, as Kubernetes writes it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    """Parse an RFC 3339 timestamp; None when absent or malformed."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def get_condition(conditions: list[Condition] | None, kind: str) -> Condition | None:
    return next((c for c in conditions or [] if c.type == kind), None)


def is_true(conditions: list[Condition] | None, kind: str) -> bool:
    cond = get_condition(conditions, kind)
    return cond is not None and cond.status == "True"


def set_condition(
    conditions: list[Condition] | None,
    kind: str,
    status: bool,
    reason: str,
    message: str | None,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """Return ``conditions`` with ``kind`` set; lastTransitionTime moves only when status changes."""
    value = "True" if status else "False"
    previous = get_condition(conditions, kind)
    since = previous.last_transition_time if previous and previous.status == value else None
    updated = Condition(
        type=kind,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=since or format_time(now),
        observed_generation=generation,
    )
    others = [c for c in conditions or [] if c.type != kind]
    merged = [*others, updated]
    order = {t: i for i, t in enumerate(ALL_TYPES)}
    return sorted(merged, key=lambda c: order.get(c.type, len(order)))
