"""Goodput: what a run's time went to, from its attempt history (pure; defined in docs/DESIGN.md).

The accounting runs from ``since`` (attempt 0 created) to ``until`` (the run's end, or now):

- each attempt's *window* runs from its first reported step to its last (to ``until`` while it runs,
  to its end when it succeeded); the window's time is split between the steps it trained for the
  first time (**productive**) and steps at or below the furthest step an earlier attempt reached
  (**rework**), in proportion to the steps;
- **idle** is the time the run waited on purpose before an attempt (``waitedSeconds``: backoff,
  suspension);
- **restart** is the rest: from the run's start or an attempt's last reported step to the next
  reported step (scheduling, image pull, compile, restore, steps no report covered, final save);
- ``stepsLost`` adds, per resume, how far below that furthest step the attempt resumed.

productive + rework + restart + idle = wall, and goodputPercent = 100 * productive / wall.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from tunix_api.run import AttemptOutcome, AttemptRecord, EarlierAttempts, GoodputStatus, LostSeconds
from tunix_operator.conditions import format_time, parse_time


@dataclass(frozen=True)
class Tally:
    """Goodput parts of some attempts, and the furthest step they reached."""

    productive: float = 0.0
    rework: float = 0.0
    idle: float = 0.0
    steps_lost: int = 0
    furthest: int | None = None

    @classmethod
    def of(cls, earlier: EarlierAttempts | None) -> Tally:
        if earlier is None:
            return cls()
        return cls(
            earlier.productive_seconds or 0.0,
            earlier.rework_seconds or 0.0,
            earlier.idle_seconds or 0.0,
            earlier.steps_lost or 0,
            earlier.last_step,
        )


def _seconds(start: str | None, end: datetime | None) -> float:
    begin = parse_time(start)
    if begin is None or end is None:
        return 0.0
    return max(0.0, (end - begin).total_seconds())


def add_attempt(tally: Tally, record: AttemptRecord, until: datetime) -> Tally:
    """``tally`` with one more attempt (attempts are added oldest first)."""
    furthest = tally.furthest
    lost = 0
    if furthest is not None and record.first_step is not None:
        lost = max(0, furthest - (record.restored_from or 0))
    productive = rework = 0.0
    if record.first_step is not None and record.last_step is not None:
        open_window = record.outcome is None or record.outcome == AttemptOutcome.SUCCEEDED
        end = (parse_time(record.end_time) or until) if open_window else parse_time(record.last_step_time)
        window = _seconds(record.first_step_time, end)
        first, last = record.first_step, record.last_step
        done_before = -1 if furthest is None else furthest
        if last > first:
            new = min(max(0, last - max(first, done_before)), last - first)
            share = new / (last - first)
        else:
            share = 1.0 if last > done_before else 0.0
        productive, rework = window * share, window * (1.0 - share)
        furthest = last if furthest is None else max(furthest, last)
    return Tally(
        tally.productive + productive,
        tally.rework + rework,
        tally.idle + (record.waited_seconds or 0.0),
        tally.steps_lost + lost,
        furthest,
    )


def fold(earlier: EarlierAttempts | None, record: AttemptRecord, until: datetime) -> EarlierAttempts:
    """``earlier`` with ``record`` (the oldest listed attempt, ended) folded in."""
    tally = add_attempt(Tally.of(earlier), record, until)
    return EarlierAttempts(
        count=((earlier.count or 0) if earlier else 0) + 1,
        productive_seconds=tally.productive,
        rework_seconds=tally.rework,
        idle_seconds=tally.idle,
        steps_lost=tally.steps_lost,
        last_step=tally.furthest,
    )


def account(
    since: datetime,
    until: datetime,
    attempts: Sequence[AttemptRecord],
    earlier: EarlierAttempts | None = None,
) -> GoodputStatus:
    """status.goodput from ``since`` to ``until`` over the attempts (and those folded in ``earlier``)."""
    tally = Tally.of(earlier)
    for record in attempts:
        tally = add_attempt(tally, record, until)
    wall = max(0.0, (until - since).total_seconds())
    restart = max(0.0, wall - tally.productive - tally.rework - tally.idle)
    return GoodputStatus(
        since=format_time(since),
        wall_seconds=round(wall, 1),
        productive_seconds=round(tally.productive, 1),
        lost_seconds=LostSeconds(
            rework=round(tally.rework, 1), restart=round(restart, 1), idle=round(tally.idle, 1)
        ),
        steps_lost=tally.steps_lost,
        goodput_percent=round(100.0 * tally.productive / wall, 1) if wall > 0 else None,
    )
