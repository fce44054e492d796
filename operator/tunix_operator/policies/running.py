"""The current attempt's pods are Pending or Running: conditions, one Warning per new problem, and
(Train mode) the trainer's progress.json merged into status.progress, the attempt's record and the
live status.checkpoint (also on the pods, as the annotation tunix.dev/last-checkpoint-time)."""

from __future__ import annotations

from tunix_api.run import CheckpointStatus, Phase, Progress
from tunix_operator import conditions as cond
from tunix_operator.observe import CHECKPOINT_TIME_ANNOTATION, AttemptState
from tunix_operator.policies import history, stall
from tunix_operator.policies.draft import AnnotatePods, Draft
from tunix_operator.trainer_output import parse_progress


def running(d: Draft, state: AttemptState) -> None:
    hosts = d.spec.accelerator.hosts
    if d.old.phase != Phase.RUNNING:
        d.event("Normal", "Running", f"attempt {d.attempt}: {state.running}/{hosts} pod(s) running")
    d.new.phase = Phase.RUNNING
    d.new.message = f"attempt {d.attempt} running"
    d.condition(cond.RUNNING, True, "PodsRunning", f"{state.running}/{hosts} pod(s) running")
    history.seen_running(d)
    if d.benchmark:  # tunix-bench writes no progress.json
        return
    merge_progress(d)
    stall.progressing(d)
    if stall.stalled(d):
        return
    annotate_pods(d)
    d.poll_in(d.settings.progress_interval_seconds)


def merge_progress(d: Draft) -> None:
    """status.progress from progress.json (when newer than the run and changed); the attempt's
    record and the checkpoint from the current attempt's progress."""
    progress = parse_progress(d.observed.progress, not_before=d.view.created)
    if progress is None:
        return
    if progress != d.old.progress:
        d.new.progress = progress
    record = history.current(d)
    if record is not None and not history.written_by(record, progress):
        return  # an earlier attempt's file, until this one writes its own
    history.seen_progress(d, progress)
    merge_checkpoint(d, progress)


def merge_late_progress(d: Draft) -> None:
    """The final report of an attempt that ended before its trainer did (a preemption, a suspend):
    the steps up to its final checkpoint, into its record and status.checkpoint."""
    progress = parse_progress(d.observed.progress, not_before=d.view.created)
    if progress is None or not history.seen_late_progress(d, progress):
        return
    if progress != d.old.progress:
        d.new.progress = progress
    merge_checkpoint(d, progress)


def merge_checkpoint(d: Draft, progress: Progress) -> None:
    """status.checkpoint: the step the attempt resumed from, the newest durable step and its time."""
    if progress.restored_from is None and progress.checkpoint_step is None:
        return
    current = d.new.checkpoint or CheckpointStatus()
    update: dict[str, object] = {}
    if progress.restored_from is not None:  # the trainer resumed from this (intact) step
        update["restored_from"] = progress.restored_from
    if progress.checkpoint_step is not None and progress.checkpoint_step != current.latest_step:
        update |= {"latest_step": progress.checkpoint_step, "latest_time": progress.checkpoint_time}
    elif progress.checkpoint_step is not None and current.latest_time is None and progress.checkpoint_time:
        update["latest_time"] = progress.checkpoint_time
    if update:
        d.new.checkpoint = current.model_copy(update=update)


def annotate_pods(d: Draft) -> None:
    """Put status.checkpoint.latestTime on the current attempt's live pods that lack it."""
    when = d.new.checkpoint.latest_time if d.new.checkpoint else None
    if when is None:
        return
    stale = tuple(
        p.name
        for p in d.pods
        if p.attempt == d.attempt and not p.terminal and not p.deleting and p.checkpoint_time != when
    )
    if stale:
        d.actions.append(AnnotatePods(stale, ((CHECKPOINT_TIME_ANNOTATION, when),)))


def pending(d: Draft, state: AttemptState) -> None:
    if d.old.phase not in (Phase.PENDING, Phase.RESTARTING):
        d.new.phase = Phase.PENDING
    previous = cond.get_condition(d.old.conditions, cond.RUNNING)
    problem = state.reason not in (None, "PodsPending")
    if problem and (previous is None or previous.reason != state.reason):
        d.event("Warning", state.reason or "Pending", state.message or "")
    d.condition(cond.RUNNING, False, state.reason or "PodsPending", state.message)
    d.new.message = d.text(state.message)
