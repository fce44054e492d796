"""Goodput on a scripted timeline (pure): every figure below is worked out by hand in the comments.

A 200-step run, about one step per second, checkpoints every 50 steps:

  t=0    attempt 0 created              t=20  first step 1    t=99  step 80   t=100 preempted (saves 80)
  t=100  attempt 1 created, from 80     t=130 first step 81   t=169 step 120  t=170 preempted (saves 120)
  t=170  attempt 2 created, from 120    t=190 first step 121  t=229 step 160, then hangs (saved 150)
  t=289  stalled (stallTimeoutSeconds 60); 10 s backoff
  t=299  attempt 3 created, from 150    t=320 first step 151  t=369 step 200  t=375 succeeded
"""

from __future__ import annotations

import pytest

from tests.operator.factories import T0, at
from tunix_api.run import AttemptOutcome, AttemptRecord, EarlierAttempts
from tunix_operator.conditions import format_time
from tunix_operator.policies.goodput import account, fold


def record(
    index: int,
    start: float,
    first: tuple[int, float] | None,
    last: tuple[int, float] | None,
    end: float | None = None,
    outcome: AttemptOutcome | None = None,
    restored_from: int | None = None,
    waited: float | None = None,
) -> AttemptRecord:
    return AttemptRecord(
        index=index,
        start_time=format_time(at(start)),
        end_time=format_time(at(end)) if end is not None else None,
        outcome=outcome,
        restored_from=restored_from,
        first_step=first[0] if first else None,
        first_step_time=format_time(at(first[1])) if first else None,
        last_step=last[0] if last else None,
        last_step_time=format_time(at(last[1])) if last else None,
        waited_seconds=waited,
    )


TIMELINE = [
    record(0, 0, (1, 20), (80, 99), 100, AttemptOutcome.PREEMPTED),
    record(1, 100, (81, 130), (120, 169), 170, AttemptOutcome.PREEMPTED, restored_from=80),
    record(2, 170, (121, 190), (160, 229), 289, AttemptOutcome.STALLED, restored_from=120),
    record(3, 299, (151, 320), (200, 369), 375, AttemptOutcome.SUCCEEDED, restored_from=150, waited=10),
]


def test_the_scripted_timeline_adds_up_by_hand() -> None:
    g = account(T0, at(375), TIMELINE)
    # Windows: 0: 20..99 = 79 s, 79 new steps; 1: 130..169 = 39 s, 39 new; 2: 190..229 = 39 s (a stalled
    # attempt's window ends at its last step), 39 new; 3: 320..375 = 55 s (a succeeded one's at its
    # end) for steps 152..200 = 49 steps, of which 161..200 = 40 are new and 152..160 = 9 are rework.
    productive = 79 + 39 + 39 + 55 * 40 / 49
    rework = 55 * 9 / 49
    assert g.wall_seconds == 375
    assert g.productive_seconds == pytest.approx(productive, abs=0.05)  # rounded to 0.1 s
    assert g.lost_seconds is not None
    assert g.lost_seconds.rework == pytest.approx(rework, abs=0.05)
    assert g.lost_seconds.idle == 10  # the backoff after the stall
    # restart: 0..20 + 99..130 + 169..190 + (229..299 less the 10 s backoff) + 299..320
    assert g.lost_seconds.restart == pytest.approx(20 + 31 + 21 + 60 + 21, abs=0.05)
    assert g.steps_lost == 10  # attempt 3 resumed from 150 after step 160 had been reached
    assert g.goodput_percent == pytest.approx(100 * productive / 375, abs=0.05)
    parts = g.productive_seconds + g.lost_seconds.rework + g.lost_seconds.restart + g.lost_seconds.idle
    assert parts == pytest.approx(g.wall_seconds, abs=0.15)  # three values rounded to 0.1 s


def test_folding_the_oldest_attempts_keeps_the_totals() -> None:
    earlier: EarlierAttempts | None = None
    for oldest in TIMELINE[:2]:
        earlier = fold(earlier, oldest, at(375))
    assert earlier is not None and earlier.count == 2 and earlier.last_step == 120
    assert account(T0, at(375), TIMELINE[2:], earlier) == account(T0, at(375), TIMELINE)


def test_a_running_attempt_counts_as_training_up_to_now() -> None:
    running = record(0, 0, (1, 20), (30, 49))
    g = account(T0, at(60), [running])
    assert (g.productive_seconds, g.lost_seconds.restart) == (40, 20)  # window 20..60, startup 0..20


def test_an_attempt_that_never_reported_a_step_is_all_restart() -> None:
    g = account(T0, at(50), [record(0, 0, None, None, 50, AttemptOutcome.RETRYABLE)])
    assert (g.productive_seconds, g.lost_seconds.restart, g.steps_lost, g.goodput_percent) == (0, 50, 0, 0)


def test_a_resume_from_scratch_after_progress_loses_every_step() -> None:
    """A checkpoint volume that did not survive (emptyDir): attempt 1 starts over from step 0."""
    attempts = [
        record(0, 0, (1, 10), (40, 49), 50, AttemptOutcome.PREEMPTED),
        record(1, 50, (1, 60), (60, 119)),
    ]
    g = account(T0, at(119), attempts)
    # attempt 1: window 60..119 = 59 s for steps 2..60, of which 41..60 (20) are new, 2..40 (39) rework
    assert g.steps_lost == 40
    assert g.productive_seconds == pytest.approx(39 + 59 * 20 / 59, abs=0.05)
    assert g.lost_seconds.rework == pytest.approx(59 * 39 / 59, abs=0.05)


def test_no_wall_time_no_percentage() -> None:
    assert account(T0, T0, []).goodput_percent is None
