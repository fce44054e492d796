"""A Train-mode attempt exited 0: status.summary (termination message, else summary.json), the
exported model, the final progress and checkpoint."""

from __future__ import annotations

from tunix_api import artifacts
from tunix_api.run import AttemptOutcome, ModelStatus, Progress
from tunix_operator.manifests import artifacts_uri
from tunix_operator.observe import AttemptState
from tunix_operator.policies import history, terminal
from tunix_operator.policies.draft import Draft
from tunix_operator.trainer_output import for_people, parse_summary, parse_termination_message


def succeeded(d: Draft, state: AttemptState) -> None:
    summary, provenance = parse_termination_message(state.termination_message)
    if summary is None:
        summary, provenance = parse_summary(d.observed.summary)
    d.new.summary = summary
    assert d.run is not None
    model_uri = artifacts.join_uri(artifacts_uri(d.run, d.settings), artifacts.MODEL_DIR)
    d.new.model = ModelStatus(uri=model_uri)  # the trainer exports it before exiting 0
    if provenance:
        d.new.provenance = provenance
    if summary is not None and summary.total_steps is not None:
        old = d.new.progress or Progress()
        d.new.progress = old.model_copy(
            update={
                "step": summary.total_steps,
                "total_steps": summary.total_steps,
                "step_of_total": f"{summary.total_steps}/{summary.total_steps}",
                "loss": summary.final_loss if summary.final_loss is not None else old.loss,
                # the run's mean: the last step's own time is short (its metrics are fetched last)
                "tokens_per_second": summary.avg_tokens_per_second or old.tokens_per_second,
                "eta_seconds": 0.0,
            }
        )
        d.new.progress = for_people(d.new.progress)
        if d.new.checkpoint is not None:
            d.new.checkpoint = d.new.checkpoint.model_copy(update={"latest_step": summary.total_steps})
    detail = (
        f": final loss {summary.final_loss:.4g} after {summary.total_steps} steps"
        if summary and summary.final_loss is not None
        else ""
    )
    history.ended(d, AttemptOutcome.SUCCEEDED, state)
    terminal.complete(d, f"attempt {d.attempt} completed{detail}")
