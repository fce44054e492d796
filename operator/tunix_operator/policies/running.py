"""The current attempt's pods are Pending or Running: conditions, one Warning per new problem, and
(Train mode) the trainer's progress.json merged into status.progress and status.checkpoint."""

from __future__ import annotations

from tunix_api.run import CheckpointStatus, Phase
from tunix_operator import conditions as cond
from tunix_operator.observe import AttemptState
from tunix_operator.policies.draft import Draft
from tunix_operator.trainer_output import parse_progress


def running(d: Draft, state: AttemptState) -> None:
    hosts = d.spec.accelerator.hosts
    if d.old.phase != Phase.RUNNING:
        d.event("Normal", "Running", f"attempt {d.attempt}: {state.running}/{hosts} pod(s) running")
    d.new.phase = Phase.RUNNING
    d.new.message = f"attempt {d.attempt} running"
    d.condition(cond.RUNNING, True, "PodsRunning", f"{state.running}/{hosts} pod(s) running")
    if not d.benchmark:  # tunix-bench writes no progress.json
        merge_progress(d)
        d.requeue_in(d.settings.progress_interval_seconds)


def merge_progress(d: Draft) -> None:
    """status.progress from progress.json (when newer than the run and changed)."""
    progress = parse_progress(d.observed.progress, not_before=d.view.created)
    if progress is not None and progress != d.old.progress:
        d.new.progress = progress
        if progress.restored_from is not None:  # the trainer resumed from this (intact) step
            current = d.new.checkpoint or CheckpointStatus()
            d.new.checkpoint = current.model_copy(update={"restored_from": progress.restored_from})


def pending(d: Draft, state: AttemptState) -> None:
    if d.old.phase not in (Phase.PENDING, Phase.RESTARTING):
        d.new.phase = Phase.PENDING
    previous = cond.get_condition(d.old.conditions, cond.RUNNING)
    problem = state.reason not in (None, "PodsPending")
    if problem and (previous is None or previous.reason != state.reason):
        d.event("Warning", state.reason or "Pending", state.message or "")
    d.condition(cond.RUNNING, False, state.reason or "PodsPending", state.message)
    d.new.message = d.text(state.message)
