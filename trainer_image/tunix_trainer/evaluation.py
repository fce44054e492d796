"""Held-out evaluation (``spec.evaluation``): the mean loss over target tokens of data the model does
not train on, during and after training.

The evaluation set is ``data_eval.EvalBatches`` over ``datasetUri`` (read like the training data:
its format, tokenizer, packing and seqLen) or over the records ``holdOutFraction`` holds out of the
training data (the training iterator leaves them out). Its batches have ``batchSize /
gradAccumSteps`` rows, the training step's micro-batch, and are read once and kept on the host (at
most ``maxBatches`` of them), so every evaluation sees the same tokens.

The forward pass is one jitted function of (train state, batch) -> (summed token loss, token
count): the same shapes every batch, so it compiles once; it reads the state without donating it,
so the training step's buffers and the data position are untouched. Loss is masked like training's
(``train_step.token_loss_sums``: padding, prompt tokens and padded vocabulary ids excluded) and
summed in float64 on the host: ``loss = sum(ce) / tokens``, ``perplexity = exp(loss)``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tunix_api.training import DatasetSpec, EvaluationSpec
from tunix_trainer.data_records import DataError
from tunix_trainer.devices import DATA_AXIS
from tunix_trainer.train_step import BATCH_FIELDS, replicated, token_loss_sums


@dataclass(frozen=True)
class EvalResult:
    """One evaluation: mean loss over ``tokens`` target tokens of ``batches`` batches."""

    loss: float
    tokens: int
    batches: int
    seconds: float

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.loss < 700 else math.inf


def eval_sums(
    graphdef: nnx.GraphDef, state: nnx.State, batch: Mapping[str, jax.Array]
) -> tuple[jax.Array, jax.Array]:
    """(summed masked token cross-entropy, summed mask) of ``batch`` ([B, T] arrays) under the model
    of a train state (no dropout)."""
    model, _ = nnx.merge(graphdef, state)
    logits = model(batch["inputs"])
    return token_loss_sums(logits, batch["targets"], batch["loss_mask"], model.cfg.valid_vocab_size)


def host_batches(
    batches: Iterable[Any],
    max_batches: int | None,
    source: str,
    seq_len: int,
    gather: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[dict[str, np.ndarray]]:
    """The first ``max_batches`` batches (all without a limit) as numpy dicts; DataError naming
    ``source`` when they hold no target token or fewer than one sequence's worth.

    With several processes each holds its rows of every batch: ``gather`` (a collective, every
    process's array concatenated) sums the target tokens of all of them, so every process takes
    the same decision (one raising while another waits in a collective would hang the run)."""
    out: list[dict[str, np.ndarray]] = []
    for batch in batches:
        if max_batches is not None and len(out) >= max_batches:
            break
        out.append({name: np.asarray(getattr(batch, name)) for name in BATCH_FIELDS})
    local = np.asarray([sum(int(b["loss_mask"].sum()) for b in out)], np.int64)
    tokens = int(np.sum(gather(local))) if gather is not None else int(local[0])
    if tokens < seq_len:
        raise DataError(
            f"{source}: the evaluation data holds {tokens} target tokens, fewer than one sequence "
            f"(seqLen {seq_len}); add data or lower training.seqLen"
        )
    return out


class Evaluator:
    """Evaluates train states on fixed host batches (see the module docstring)."""

    def __init__(self, graphdef: nnx.GraphDef, batches: list[dict[str, np.ndarray]], mesh: Mesh) -> None:
        self.batches = batches
        self.mesh = mesh
        self._sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS, None))
        self._fn = jax.jit(
            lambda state, batch: eval_sums(graphdef, state, batch),
            in_shardings=(replicated(mesh), self._sharding),
            out_shardings=replicated(mesh),
        )  # no donation: the training step owns the state's buffers

    @property
    def compilations(self) -> int:
        """How many programs the forward pass compiled (1 after any number of evaluations)."""
        return self._fn._cache_size()

    def _put(self, host: np.ndarray) -> jax.Array:
        if jax.process_count() == 1:
            return jax.device_put(host, self._sharding)
        shape = (host.shape[0] * jax.process_count(), *host.shape[1:])  # this process's rows
        return jax.make_array_from_process_local_data(self._sharding, host, shape)

    def __call__(self, state: nnx.State) -> EvalResult:
        """Evaluate ``state``; returns once the results are on the host (the state is free to be
        donated afterwards)."""
        start = time.monotonic()
        sums = [self._fn(state, {name: self._put(b[name]) for name in BATCH_FIELDS}) for b in self.batches]
        loss_sum = tokens = 0.0
        for loss, count in jax.device_get(sums):
            loss_sum += float(loss)
            tokens += float(count)
        return EvalResult(
            loss=loss_sum / max(tokens, 1.0),
            tokens=round(tokens),
            batches=len(self.batches),
            seconds=time.monotonic() - start,
        )


def eval_dataset(evaluation: EvaluationSpec, dataset: DatasetSpec) -> tuple[DatasetSpec, float | None]:
    """(the dataset to read, the fraction held out of it or None) for ``spec.evaluation``."""
    if evaluation.dataset_uri is not None:
        return dataset.model_copy(update={"uri": evaluation.dataset_uri}), None
    return dataset, evaluation.hold_out_fraction


def build_evaluator(
    evaluation: EvaluationSpec,
    dataset: DatasetSpec,
    tokenizer: Any,
    graphdef: nnx.GraphDef,
    mesh: Mesh,
    *,
    batch_size: int,
    seq_len: int,
    storage_options: dict[str, Any] | None = None,
    base_dir: str | None = None,
    gather: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Evaluator:
    """The run's evaluator: batches of ``batch_size`` rows (this process's share of them) read once;
    ``gather`` (several processes) as for :func:`host_batches`."""
    from tunix_trainer.data_eval import EvalBatches

    spec, fraction = eval_dataset(evaluation, dataset)
    batches = EvalBatches(
        spec,
        tokenizer,
        batch_size=batch_size,
        seq_len=seq_len,
        hold_out_fraction=fraction,
        storage_options=storage_options,
        base_dir=base_dir,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    source = batches.uri if fraction is None else f"{batches.uri} (holdOutFraction {fraction})"
    return Evaluator(graphdef, host_batches(batches, evaluation.max_batches, source, seq_len, gather), mesh)


def is_due(step: int, total_steps: int, every_steps: int | None) -> bool:
    """Whether evaluation runs after ``step``: before training (step 0), every ``every_steps``
    steps, and after the last."""
    return step in (0, total_steps) or (every_steps is not None and step % every_steps == 0)


BEST_DIR = "best"  # the keepBest checkpoints, inside the checkpoint directory


class EvalTracker:
    """The loop's evaluation: when it is due, its records, the latest and best results (kept in
    checkpoint meta, so a resume continues them exactly), and with ``keepBest`` the checkpoint of the
    best result in ``<checkpoint uri>/best``, the model exported at the end.

    keepBest keeps what Hugging Face's ``load_best_model_at_end`` promises: the exported model is the
    state of the lowest eval loss the run's records show (``summary.bestEvalStep``). So a best
    checkpoint stays while a checkpoint the run may resume from names it as its best (a resume
    continues with that best): ``<ckpt>/best`` holds the newest best and the bests of the run's
    checkpoints (``resume_points``, and saves still in flight), usually one step, at most
    ``maxToKeep + 2``. A resume from step S deletes the best checkpoints after S, as their
    evaluation records are (both are made again, the same, when the resumed run gets there). Where
    the best's checkpoint is missing all the same (a resume from an older checkpoint than the
    newest whose best was replaced since), the final state is exported and a line says so; the
    summary's ``model_step`` names the step exported either way.
    """

    def __init__(
        self,
        evaluator: Evaluator,
        *,
        total_steps: int,
        every_steps: int | None,
        saved_part: Any = None,
        best_checkpointer: Any = None,
        resume_points: Callable[[], list[int]] | None = None,
    ) -> None:
        self.evaluator = evaluator
        self.total_steps = total_steps
        self.every_steps = every_steps
        self.saved_part = saved_part or (lambda state: state)  # what a checkpoint holds of a state
        self.best_checkpointer = best_checkpointer
        self.resume_points = resume_points or list  # the steps of the run's durable checkpoints
        self.last: tuple[int, float] | None = None  # (step, loss)
        self.best: tuple[int, float] | None = None
        self._best_of: dict[int, int] = {}  # a checkpoint's step -> the best step its meta names

    def due(self, step: int) -> bool:
        return is_due(step, self.total_steps, self.every_steps)

    def evaluate(self, step: int, state: Any, now: Any) -> dict[str, Any]:
        """Evaluate the state after ``step``: the metrics.jsonl record; saves the best checkpoint."""
        from tunix_trainer.metric_record import EvalRecord

        result = self.evaluator(state)
        self.last = (step, result.loss)
        if math.isfinite(result.loss) and (self.best is None or result.loss < self.best[1]):
            self.best = (step, result.loss)
            if self.best_checkpointer is not None:
                self.best_checkpointer.retain({step, *self._named_bests()})
                self.best_checkpointer.save(
                    step, self.saved_part(state), {"step": step, "eval_loss": result.loss}
                )
        return EvalRecord.measure(step=step, result=result, now=now).to_json()

    def _named_bests(self) -> set[int]:
        """The best steps that the run's checkpoints (durable, or newer: in flight) name."""
        kept = set(self.resume_points())
        newest = max(kept, default=-1)
        self._best_of = {s: b for s, b in self._best_of.items() if s in kept or s > newest}
        return set(self._best_of.values())

    def progress_fields(self) -> dict[str, Any]:
        """The latest evaluation for progress.json (``status.progress.evalLoss``)."""
        if self.last is None:
            return {}
        return {"eval_step": self.last[0], "eval_loss": self.last[1]}

    def meta(self, step: int) -> dict[str, Any]:
        """The part of checkpoint ``step``'s meta that lets a resume continue the evaluation state."""
        if self.best is not None:
            self._best_of[step] = self.best[0]
        return {
            "last": list(self.last) if self.last else None,
            "best": list(self.best) if self.best else None,
        }

    def resume(self, step: int, meta: dict[str, Any] | None) -> None:
        """Continue after checkpoint ``step`` (``meta`` None: a fresh start): results from its meta,
        the best checkpoints after ``step`` deleted (all of them on a fresh start)."""
        self.last = tuple(meta["last"]) if meta and meta.get("last") else None  # type: ignore[assignment]
        self.best = tuple(meta["best"]) if meta and meta.get("best") else None  # type: ignore[assignment]
        self._best_of = {step: self.best[0]} if self.best is not None else {}
        if self.best_checkpointer is not None:
            self.best_checkpointer.discard_after(step if meta is not None else -1)

    def best_state(self, state: Any, join: Any) -> tuple[int, Any] | None:
        """(step, train state) of the best evaluation (``join(state, saved)`` puts a checkpoint's
        part into ``state``), or None without a best checkpoint of that step."""
        if self.best_checkpointer is None or self.best is None:
            return None
        from tunix_trainer.train_step import abstract_state

        self.best_checkpointer.wait()
        if self.best[0] not in self.best_checkpointer.all_steps():
            return None
        restored = self.best_checkpointer.restore(str(self.best[0]), abstract_state(self.saved_part(state)))
        return (self.best[0], join(state, restored.state)) if restored is not None else None

    def say_exported(self, model_uri: str | None, step: int | None) -> None:
        """One line on stderr: which state keepBest exported, and why when it is not the best."""
        if model_uri is None or self.best is None:
            return
        where = self.best_checkpointer.uri if self.best_checkpointer is not None else BEST_DIR
        if step == self.best[0]:
            line = f"exported the best checkpoint (step {step}, eval loss {self.best[1]:.6g}) to {model_uri}"
        else:
            line = (
                f"keepBest: the best evaluation (step {self.best[0]}, eval loss {self.best[1]:.6g}) "
                f"has no checkpoint in {where} (resumed from a checkpoint older than the newest); "
                f"exported the final state (step {step}) to {model_uri} instead"
            )
        print(f"tunix-train: {line}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.best_checkpointer is not None:
            self.best_checkpointer.close()
