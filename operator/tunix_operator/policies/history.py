"""status.attempts (the attempt history, bounded) and status.goodput computed from it."""

from __future__ import annotations

from collections.abc import Sequence

from tunix_api.exit_codes import ExitClass
from tunix_api.run import AttemptOutcome, AttemptRecord, Progress, TunixRunStatus
from tunix_operator import conditions as cond
from tunix_operator.observe import AttemptState, PodView
from tunix_operator.policies import goodput
from tunix_operator.policies.draft import Draft

MAX_ATTEMPTS = 20  # kept in status.attempts; older ones are folded into status.earlierAttempts
OUTCOME_OF_CLASS = {
    ExitClass.FATAL: AttemptOutcome.FATAL,
    ExitClass.PREEMPTED: AttemptOutcome.PREEMPTED,
    ExitClass.RETRYABLE: AttemptOutcome.RETRYABLE,
}


def current(d: Draft) -> AttemptRecord | None:
    """The record of the current attempt, while it has not ended."""
    records = d.new.attempts or []
    if records and records[-1].index == d.attempt and records[-1].outcome is None:
        return records[-1]
    return None


def begin(d: Draft, attempt: int, waited_seconds: float = 0.0) -> None:
    """Record that attempt ``attempt`` was created now (a recreated Job keeps its record)."""
    records = list(d.new.attempts or [])
    if records and records[-1].index == attempt:
        return
    if not records and d.new.earlier_attempts is None and d.new.goodput is None and not d.benchmark:
        d.new.goodput = goodput.account(d.now, d.now, [])  # the accounting starts here (Train mode)
    records.append(
        AttemptRecord(
            index=attempt,
            start_time=cond.format_time(d.now),
            waited_seconds=round(waited_seconds, 1) if waited_seconds else None,
        )
    )
    while len(records) > MAX_ATTEMPTS:
        d.new.earlier_attempts = goodput.fold(d.new.earlier_attempts, records.pop(0), d.now)
    d.new.attempts = records


def seen_running(d: Draft) -> None:
    """Note the nodes of the current attempt's pods."""
    record = current(d)
    nodes = sorted({p.node for p in d.pods if p.attempt == d.attempt and p.node})
    if record is not None and nodes and record.nodes != nodes:
        _replace(d, record.model_copy(update={"nodes": nodes}))


def seen_progress(d: Draft, progress: Progress) -> None:
    """Note a progress report of the current attempt: where it resumed from, its first and last step."""
    record = current(d)
    if record is None or progress.step is None or not written_by(record, progress):
        return
    when = _clamped(d, progress.updated_at)
    update: dict[str, object] = {}
    if record.first_step is None:
        update |= {
            "first_step": progress.step,
            "first_step_time": when,
            "restored_from": progress.restored_from,
        }
    if record.last_step is None or progress.step > record.last_step:
        update |= {"last_step": progress.step, "last_step_time": when}
    if update:
        _replace(d, record.model_copy(update=update))


def ended(
    d: Draft, outcome: AttemptOutcome, state: AttemptState | None = None, reason: str | None = None
) -> None:
    """The current attempt ended with ``outcome``."""
    record = current(d)
    if record is None:
        return
    update: dict[str, object] = {"outcome": outcome, "end_time": cond.format_time(d.now)}
    if state is not None:
        code = 0 if outcome == AttemptOutcome.SUCCEEDED and state.exit_code is None else state.exit_code
        update |= {"exit_code": code, "reason": reason or state.reason}
    elif reason is not None:
        update["reason"] = reason
    final = d.new.progress.step if d.new.progress is not None else None
    if (
        outcome == AttemptOutcome.SUCCEEDED
        and final
        and (record.last_step is None or final > record.last_step)
    ):
        now = cond.format_time(d.now)  # the final step, reported by the summary
        update |= {"last_step": final, "last_step_time": now}
        if record.first_step is None:
            update |= {"first_step": final, "first_step_time": now}
    _replace(d, record.model_copy(update=update))


def ended_attempt_lingers(status: TunixRunStatus, pods: Sequence[PodView]) -> bool:
    """Whether the newest attempt has ended while pods of it remain (stopping, or stopped and kept)."""
    records = status.attempts or []
    last = records[-1] if records else None
    return last is not None and last.outcome is not None and any(p.attempt == last.index for p in pods)


def seen_late_progress(d: Draft, progress: Progress) -> bool:
    """Note a report that the newest, ended attempt wrote after the operator saw it end (the steps up to
    its final checkpoint); True when ``progress`` is that attempt's."""
    records = d.new.attempts or []
    record = records[-1] if records else None
    if record is None or record.outcome is None or progress.attempt != record.index or progress.step is None:
        return False
    if record.last_step is None or progress.step > record.last_step:
        when = _clamped(d, progress.updated_at)
        update: dict[str, object] = {"last_step": progress.step, "last_step_time": when}
        if record.first_step is None:
            update |= {"first_step": progress.step, "first_step_time": when}
            update["restored_from"] = progress.restored_from
        _replace(d, record.model_copy(update=update))
    return True


def late_exit_code(d: Draft) -> None:
    """The exit code of an attempt that ended before its trainer did (a preemption is seen on the
    DisruptionTarget condition; the trainer then saves and exits), once one of its pods has one."""
    records = d.new.attempts or []
    record = records[-1] if records else None
    if record is None or record.outcome is None or record.exit_code is not None:
        return
    codes = [p.exit_code for p in d.pods if p.attempt == record.index and p.exit_code is not None]
    if codes:
        code = next((c for c in codes if c != 0), 0)
        records = [*records[:-1], record.model_copy(update={"exit_code": code})]
        d.new.attempts = records


def outcome_of(exit_class: ExitClass | None) -> AttemptOutcome:
    return OUTCOME_OF_CLASS.get(exit_class or ExitClass.RETRYABLE, AttemptOutcome.RETRYABLE)


def update_goodput(d: Draft) -> None:
    """status.goodput from the history, up to the run's end or now."""
    if not d.new.attempts or d.new.goodput is None:
        return
    since = cond.parse_time(d.new.goodput.since)
    if since is None:
        return
    until = cond.parse_time(d.new.completion_time) or d.now
    d.new.goodput = goodput.account(since, until, d.new.attempts, d.new.earlier_attempts)


def written_by(record: AttemptRecord, progress: Progress) -> bool:
    """Whether ``progress`` comes from the attempt of ``record``: its attempt field, else its time."""
    if progress.attempt is not None:
        return progress.attempt == record.index
    written, started = cond.parse_time(progress.updated_at), cond.parse_time(record.start_time)
    return written is not None and started is not None and written >= started


def _clamped(d: Draft, when: str | None) -> str:
    """A trainer timestamp, no later than now (node clocks may run ahead of the operator's)."""
    moment = cond.parse_time(when)
    return cond.format_time(d.now if moment is None or moment > d.now else moment)


def _replace(d: Draft, record: AttemptRecord) -> None:
    records = list(d.new.attempts or [])
    records[-1] = record
    d.new.attempts = records
