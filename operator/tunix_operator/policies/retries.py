"""Failed and preempted attempts: which budget they spend (maxRestarts, maxPreemptions), the
doubling backoff, and the next attempt once it is due."""

from __future__ import annotations

from datetime import timedelta

from tunix_api.exit_codes import ExitClass
from tunix_api.run import Phase, RetryPolicy
from tunix_operator import conditions as cond
from tunix_operator.observe import AttemptState
from tunix_operator.policies import attempts, history, terminal
from tunix_operator.policies.draft import Draft

PREEMPTED = "Preempted"  # the Restarting reason of a preemption: the next attempt starts at once


def backoff_seconds(policy: RetryPolicy, restarts: int) -> float:
    """Delay before restart number ``restarts`` (1-based): doubling, capped."""
    if restarts <= 0:
        return 0.0
    return float(min(policy.backoff_seconds * 2 ** (restarts - 1), policy.max_backoff_seconds))


def failed_attempt(d: Draft, state: AttemptState) -> None:
    """The current attempt failed: fail the run (Fatal, or a budget spent) or schedule the next."""
    code = f" (exit code {state.exit_code})" if state.exit_code is not None else ""
    detail = f": {state.message.strip()}" if state.message and state.message.strip() else ""
    what = f"attempt {d.attempt} failed with {state.reason}{code}{detail}"
    history.ended(d, history.outcome_of(state.exit_class), state)
    if state.exit_class == ExitClass.FATAL:
        terminal.fail(d, state.reason or "Failed", what)
    elif state.exit_class == ExitClass.PREEMPTED:
        preempted(d, what)
    else:
        restart(d, state.reason or "Failed", what)


def preempted(d: Draft, what: str) -> None:
    """A preemption spends maxPreemptions; the next attempt resumes at once."""
    policy = d.spec.retry_policy
    used = d.old.preemptions or 0
    if used >= policy.max_preemptions:
        terminal.fail(d, "PreemptionLimitExceeded", f"{what}; maxPreemptions={policy.max_preemptions} spent")
        return
    d.new.preemptions = used + 1
    then = "rerunning the benchmark" if d.benchmark else "resuming from the latest checkpoint"
    d.event("Warning", PREEMPTED, f"{what}; {then}")
    schedule_restart(d, PREEMPTED, what)


def restart(d: Draft, reason: str, what: str) -> bool:
    """A failure spends maxRestarts; the next attempt waits for the backoff. False when spent."""
    policy = d.spec.retry_policy
    used = d.old.restarts or 0
    if used >= policy.max_restarts:
        terminal.fail(d, "BackoffLimitExceeded", f"{what}; maxRestarts={policy.max_restarts} spent")
        return False
    d.new.restarts = used + 1
    delay = backoff_seconds(policy, used + 1)
    d.event("Warning", "Restarting", f"{what}; restart {used + 1}/{policy.max_restarts} in {delay:.0f}s")
    schedule_restart(d, reason, what)
    return True


def schedule_restart(d: Draft, reason: str, message: str) -> None:
    d.new.attempt = d.attempt + 1
    d.new.phase = Phase.RESTARTING
    d.condition(cond.RESTARTING, True, reason, message)
    d.condition(cond.RUNNING, False, reason, message)
    restart_when_due(d)


def restart_due(d: Draft) -> tuple[float, float]:
    """(seconds still to wait, the whole delay) of the pending restart."""
    restarting = cond.get_condition(d.new.conditions, cond.RESTARTING)
    since = cond.parse_time(restarting.last_transition_time if restarting else None) or d.now
    preemption = restarting is not None and restarting.reason == PREEMPTED
    delay = 0.0 if preemption else backoff_seconds(d.spec.retry_policy, d.new.restarts or 0)
    due = since + timedelta(seconds=delay)
    return max(0.0, (due - d.now).total_seconds()), delay


def restart_when_due(d: Draft) -> None:
    """Create the next attempt once its backoff has passed."""
    wait, delay = restart_due(d)
    if wait <= 0:
        attempts.create(d, d.attempt, Phase.RESTARTING, "Restarted", waited_seconds=delay)
    else:
        d.new.message = f"attempt {d.attempt} starts in {wait:.0f}s (backoff)"
        d.requeue_in(wait)
