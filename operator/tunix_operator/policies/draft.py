"""What one decision is made of: the run parsed once, the observation, and the draft being written
(the new status, actions, events, requeue delay). Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError

from tunix_api.names import name_errors
from tunix_api.run import Mode, ObjectMeta, TunixRun, TunixRunSpec, TunixRunStatus
from tunix_operator import conditions as cond
from tunix_operator.observe import PodView, pod_view
from tunix_operator.settings import OperatorSettings
from tunix_operator.trainer_output import truncate


@dataclass(frozen=True)
class CreateAttempt:
    """Create (or complete) the children of attempt ``attempt``; 409 means done already."""

    attempt: int


@dataclass(frozen=True)
class DeleteJob:
    """Delete a Job with propagation Background (its pods get SIGTERM and the grace period)."""

    name: str
    reason: str


@dataclass(frozen=True)
class AnnotatePods:
    """Set ``annotations`` on the named pods (a pod already gone is skipped)."""

    pods: tuple[str, ...]
    annotations: tuple[tuple[str, str], ...]


Action = CreateAttempt | DeleteJob | AnnotatePods


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Observed:
    """What the handler read before deciding."""

    job: Mapping[str, Any] | None = None  # the Job of status.attempt
    pods: Sequence[Mapping[str, Any]] = ()  # every pod labelled with the run
    progress: Mapping[str, Any] | None = None  # <artifacts>/progress.json
    summary: Mapping[str, Any] | None = None  # <artifacts>/summary.json (only when needed)
    benchmark: Mapping[str, Any] | None = None  # <artifacts>/benchmark.json (Benchmark mode, when needed)


@dataclass
class Decision:
    status: dict[str, Any]  # the whole new status (wire form)
    status_patch: dict[str, Any]  # JSON merge patch of .status; empty when nothing changed
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None  # the next reconcile: a time-based check or a storage poll
    run: TunixRun | None = None  # the parsed run, for building children; None when invalid
    # The next time-based check alone (deadline, stall, backoff, TTL, settling): until then, the same
    # run, children and files give the same decision (None: no such check).
    due_after: float | None = None

    @property
    def quiet(self) -> bool:
        """Nothing to write, do or tell."""
        return not (self.status_patch or self.actions or self.events)


def parse_status(raw: Mapping[str, Any] | None) -> TunixRunStatus:
    """The stored status; an unreadable one counts as empty."""
    try:
        return TunixRunStatus.model_validate(dict(raw or {}))
    except ValidationError:
        return TunixRunStatus()


def parse_run(body: Mapping[str, Any]) -> tuple[TunixRun | None, str | None]:
    """(run, None) or (None, why the object is invalid)."""
    meta = body.get("metadata") or {}
    name = meta.get("name") or ""
    try:
        spec = TunixRunSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        return None, _validation_message(exc)
    if problems := name_errors(name, hosts=spec.accelerator.hosts):  # the CRD's rules (tunix_api.names)
        return None, "; ".join(problems)
    metadata = ObjectMeta(
        name=name,
        namespace=meta.get("namespace"),
        labels=meta.get("labels"),
        annotations=meta.get("annotations"),
    )
    return TunixRun(metadata=metadata, spec=spec), None


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"spec.{where}: {err.get('msg')}" if where else f"spec: {err.get('msg')}")
    return "; ".join(parts)


@dataclass(frozen=True)
class RunView:
    """A TunixRun body parsed once per reconcile: its name, times, status and (valid) spec."""

    name: str
    created: datetime | None
    generation: int | None
    status: TunixRunStatus
    run: TunixRun | None
    error: str | None  # why the spec is invalid, when run is None

    @property
    def benchmark(self) -> bool:
        return self.run is not None and self.run.spec.mode == Mode.BENCHMARK


def view_run(body: Mapping[str, Any] | RunView) -> RunView:
    """Parse ``body`` (a RunView is returned as it is)."""
    if isinstance(body, RunView):
        return body
    meta = body.get("metadata") or {}
    run, error = parse_run(body)
    return RunView(
        name=meta.get("name") or "",
        created=cond.parse_time(meta.get("creationTimestamp")),
        generation=meta.get("generation"),
        status=parse_status(body.get("status")),
        run=run,
        error=error,
    )


def status_wire(status: TunixRunStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level JSON merge patch turning ``old`` into ``new`` (removed keys become null)."""
    patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch


class Draft:
    """One decision being made: a copy of the status changed policy by policy, plus actions, events
    and the requeue delay. Policies are functions of a Draft."""

    def __init__(self, view: RunView, observed: Observed, now: datetime, settings: OperatorSettings) -> None:
        self.view = view
        self.name = view.name
        self.generation = view.generation
        self.run = view.run
        self.observed = observed
        self.pods: list[PodView] = [pod_view(p) for p in observed.pods]
        self.now = now
        self.settings = settings
        self.old = view.status
        self.new = TunixRunStatus.model_validate(view.status.model_dump())  # a copy (faster than deep)
        self.actions: list[Action] = []
        self.events: list[Event] = []
        self.requeue: float | None = None
        self.due: float | None = None

    # ---- reading -----------------------------------------------------------------------------
    @property
    def spec(self) -> TunixRunSpec:
        assert self.run is not None
        return self.run.spec

    @property
    def attempt(self) -> int:
        return self.new.attempt or 0

    @property
    def benchmark(self) -> bool:
        return self.view.benchmark

    def job_deleting(self) -> bool:
        job = self.observed.job
        return job is not None and bool((job.get("metadata") or {}).get("deletionTimestamp"))

    # ---- writing -----------------------------------------------------------------------------
    def text(self, text: str | None) -> str | None:
        return truncate(text, self.settings.max_message_chars)

    def event(self, kind: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(Event(kind, reason, self.text(message) or reason))

    def condition(self, kind: str, status: bool, reason: str, message: str | None = None) -> None:
        self.new.conditions = cond.set_condition(
            self.new.conditions, kind, status, reason, self.text(message), self.now, self.generation
        )

    def clear(self, kind: str, reason: str) -> None:
        """Set ``kind`` False only if the run already has it (keeps the list small)."""
        if cond.get_condition(self.new.conditions, kind) is not None:
            self.condition(kind, False, reason)

    def requeue_in(self, seconds: float) -> None:
        """Decide again in ``seconds``: a time-based check (deadline, stall, backoff...) comes due."""
        seconds = max(0.0, seconds)
        self.due = seconds if self.due is None else min(self.due, seconds)
        self.poll_in(seconds)

    def poll_in(self, seconds: float) -> None:
        """Read the trainer's files again in ``seconds`` (the decision changes only if they did)."""
        seconds = max(0.0, seconds)
        self.requeue = seconds if self.requeue is None else min(self.requeue, seconds)

    def decision(self) -> Decision:
        """What was decided so far, with the status patch from old to new."""
        new_wire = status_wire(self.new)
        return Decision(
            status=new_wire,
            status_patch=merge_patch(status_wire(self.old), new_wire),
            actions=self.actions,
            events=self.events,
            requeue_after=self.requeue,
            run=self.run,
            due_after=self.due,
        )
