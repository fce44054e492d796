"""The training loop: data -> jitted step -> metrics one step late -> checkpoints -> summary.

Steps are 1-based: the record of step k is written after the k-th optimizer update, and a
checkpoint at step k holds k updates plus the data position after k batches. The host puts batch
k+1 on its way to the device, dispatches step k+1, then fetches and checks the metrics of step k
while step k+1 runs: the device never waits for the host between steps. Every step, the last one
included, is timed between two completions on the device, noted by a thread that only waits for
them (``step_timing``), whatever the dispatch does (a large step's launch can block until the
device has nearly run it). It waits for a step's metrics before a checkpoint, so a state is saved
only after its own loss and gradient norm were seen to be finite.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from tunix_api.artifacts import join_uri
from tunix_api.run import Mode
from tunix_api.storage import fsspec_options
from tunix_api.training import DatasetSpec
from tunix_trainer.artifacts import RunArtifacts, summarize
from tunix_trainer.checkpoint import Checkpointer
from tunix_trainer.config import LoadedRun
from tunix_trainer.data import BatchIterator
from tunix_trainer.devices import StopAgreement, make_mesh, select_devices
from tunix_trainer.errors import ConfigError, DivergedError, PreemptedError, TrainerError
from tunix_trainer.evaluation import BEST_DIR, EvalTracker, build_evaluator
from tunix_trainer.lora import check_lora, checkpointed, count_adapter_params, with_checkpointed
from tunix_trainer.metric_record import MetricRecord
from tunix_trainer.model import (
    ModelConfig,
    choose_attention_impl,
    count_params,
    flops_per_token,
    resolve_model_config,
)
from tunix_trainer.pretrained.export import MODEL_DIR, ModelExporter, adapter_options
from tunix_trainer.pretrained.loader import PretrainedModel
from tunix_trainer.progress import MfuMeter, mfu_meter
from tunix_trainer.step_timing import Completion, CompletionWatch
from tunix_trainer.tokenizer import Tokenizer, load_tokenizer
from tunix_trainer.train_step import (
    abstract_state,
    check_batch_layout,
    init_train_state,
    make_train_step,
    put_batch,
)

ProgressCallback = Callable[[dict[str, Any]], None]
_EMA = 0.9  # smoothing of the step time used for the ETA


def train(
    run: LoadedRun,
    *,
    artifacts_uri: str,
    checkpoint_uri: str,
    termination_log: str | None = None,
    on_progress: ProgressCallback | None = None,
    stop_event: threading.Event | None = None,
    resume: str | None = None,
) -> dict[str, Any]:
    """Train ``run`` to ``spec.training.steps`` and return the summary (also written to summary.json).

    ``resume`` overrides ``spec.checkpoint.resume``. Raises PreemptedError after saving a checkpoint
    when ``stop_event`` is set (SIGTERM), DivergedError on a non-finite loss, ConfigError,
    DeviceUnavailableError or DataError before training starts.
    """
    setup = setup_train_loop(
        run, artifacts_uri=artifacts_uri, checkpoint_uri=checkpoint_uri, termination_log=termination_log,
        on_progress=on_progress, stop_event=stop_event, resume=resume,
    )  # fmt: skip
    try:
        summary = setup.loop.run(setup.state, setup.provenance)
    except BaseException:
        _close_quietly(setup.checkpointer)
        raise
    finally:
        setup.loop.data.close()  # the data worker processes
    setup.checkpointer.close()
    return summary


@dataclass
class TrainSetup:
    """Everything the loop needs, built: the loop, the (restored) state, its checkpointer, provenance."""

    loop: _Loop
    state: Any
    checkpointer: Checkpointer
    provenance: dict[str, Any]


def setup_train_loop(
    run: LoadedRun,
    *,
    artifacts_uri: str,
    checkpoint_uri: str,
    termination_log: str | None = None,
    on_progress: ProgressCallback | None = None,
    stop_event: threading.Event | None = None,
    resume: str | None = None,
) -> TrainSetup:
    """Devices and mesh, tokenizer and data, model and train state (pretrained or fresh), the jitted
    step, the exporter, checkpoints (restored when there is one to resume) and the artifacts writer."""
    spec = run.spec
    if spec.mode != Mode.TRAIN:
        raise ConfigError(f"spec.mode: tunix-train runs Train mode, got {spec.mode.value} (use tunix-bench)")
    assert spec.dataset is not None  # guaranteed by TunixRunSpec for Train mode
    training = spec.training
    devices = select_devices(spec.device.kind)
    mesh = make_mesh(devices)
    check_batch_layout(training, mesh)

    pretrained = open_pretrained(run)  # config.json only: an unsupported model fails here
    tokenizer = dataset_tokenizer(run, spec.dataset)
    evaluation = spec.evaluation
    with contextlib.ExitStack() as opened:  # what it opened is closed again if the setup fails
        data = dataset_batches(
            run,
            spec.dataset,
            tokenizer,
            hold_out_fraction=(evaluation and evaluation.hold_out_fraction) or 0.0,
        )
        opened.callback(_close_quietly, data)
        model_cfg = model_config(run, tokenizer.vocab_size, devices[0].platform, pretrained)
        if training.lora is not None:
            check_lora(training.lora, model_cfg)  # before any weight is read
        if pretrained is None:
            train_state = init_train_state(model_cfg, training, mesh, training.seed)
        else:
            train_state = pretrained.init_train_state(model_cfg, training, mesh)
        step_fn = make_train_step(train_state.graphdef, training, mesh)
        exporter = ModelExporter(
            join_uri(artifacts_uri, MODEL_DIR),
            train_state.graphdef,
            vocab_size=pretrained.vocab_size if pretrained else None,
            base_config=pretrained.config if pretrained else None,
            tokenizer_files=getattr(tokenizer, "files", None),
            storage_options=fsspec_options(artifacts_uri, spec.storage),
            **adapter_options(spec, artifacts_uri, pretrained),
        )

        checkpointer = Checkpointer(
            checkpoint_uri,
            save_interval_steps=spec.checkpoint.save_interval_steps,
            max_to_keep=spec.checkpoint.max_to_keep,
            storage_options=fsspec_options(checkpoint_uri, spec.storage),
        )
        opened.callback(_close_quietly, checkpointer)
        restored = checkpointer.restore(
            resume or spec.checkpoint.resume,
            abstract_state(checkpointed(train_state.state, training)),
            accept=lambda meta: data.restore(meta["data"]) if "data" in meta else None,
        )
        artifacts: RunArtifacts | _NoArtifacts = (
            RunArtifacts(
                artifacts_uri,
                storage_options=fsspec_options(artifacts_uri, spec.storage),
                flush_every_steps=spec.metrics.flush_every_steps,
                progress_interval_seconds=spec.metrics.progress_interval_seconds,
                termination_log=termination_log,
                log_every_steps=spec.metrics.log_every_steps,
            )
            if jax.process_index() == 0
            else _NoArtifacts()
        )
        loop = _Loop(
            run=run,
            data=data,
            step_fn=step_fn,
            mesh=mesh,
            checkpointer=checkpointer,
            artifacts=artifacts,
            on_progress=on_progress if jax.process_index() == 0 else None,
            stop_event=stop_event or threading.Event(),
            exporter=exporter,
            mfu=mfu_meter(
                flops_per_token(model_cfg, training.seq_len),
                devices[0].device_kind,
                devices[0].platform,
                training.compute_dtype.value,
                len(devices),
            ),
        )
        state = train_state.state
        if restored is not None:
            state = with_checkpointed(state, restored.state, training)
            loop.resume_from(restored.step, restored.meta)
        if evaluation is not None:
            loop.evaluation = eval_tracker(
                run, checkpoint_uri, tokenizer, train_state.graphdef, mesh, checkpointer
            )
            opened.callback(_close_quietly, loop.evaluation)
            loop.evaluation.resume(loop.start_step, restored.meta.get("evaluation") if restored else None)
        provenance = make_provenance(run, devices, model_cfg, data.checksum)
        if training.lora is not None:
            provenance["lora_parameters"] = count_adapter_params(model_cfg, training.lora)
        opened.pop_all()  # set up: from here on train() closes them
    return TrainSetup(loop, state, checkpointer, provenance)


@dataclass
class _Pending:
    step: int
    metrics: dict[str, jax.Array]
    completion: Completion  # when it finished on the device


class _Loop:
    """The per-step work of ``train``; holds the loop's position and clocks."""

    def __init__(
        self,
        *,
        run: LoadedRun,
        data: BatchIterator,
        step_fn: Callable[..., Any],
        mesh: jax.sharding.Mesh,
        checkpointer: Checkpointer,
        artifacts: RunArtifacts | _NoArtifacts,
        on_progress: ProgressCallback | None,
        stop_event: threading.Event,
        exporter: Callable[[Any], str] | None = None,
        mfu: MfuMeter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.run_config = run
        self.training = run.spec.training
        self.log_every = run.spec.metrics.log_every_steps
        self.data = data
        self.step_fn = step_fn
        self.mesh = mesh
        self.checkpointer = checkpointer
        self.artifacts = artifacts
        self.on_progress = on_progress
        self.stop_event = stop_event
        self.exporter = exporter  # writes the model in HF format at the end (and every N saves)
        self.export_every_saves = run.spec.checkpoint.export_every_saves
        self.mfu = mfu  # live MFU of a step (None where the device's peak is unknown)
        self._last_report: dict[str, Any] | None = None
        self._saves = 0
        self.model_uri: str | None = None
        self._exported_step: int | None = None
        self._stop_agreement = StopAgreement()
        self.start_step = 0
        self.restored_from: int | None = None  # the checkpoint step this attempt resumed from
        self.tokens_seen = 0
        self.prior_wall = 0.0  # wall time of earlier attempts
        self._clock = clock
        self._t0 = clock()
        self._last_fetch = self._t0  # when the previous step finished (less evaluation time)
        self._ema_step_time: float | None = None
        self.evaluation: EvalTracker | None = None  # spec.evaluation (set by setup_train_loop)

    def resume_from(self, step: int, meta: dict[str, Any]) -> None:
        """Continue after checkpoint ``step`` (data position, token count and clock from its meta)."""
        self.start_step = step
        self.restored_from = step
        self.tokens_seen = int(meta.get("tokens_seen", 0))
        self.prior_wall = float(meta.get("wall_time_seconds", 0.0))
        if "data" in meta:
            self.data.restore(meta["data"])
        if meta.get("config_hash") not in (None, self.run_config.config_hash):
            print(
                f"tunix-train: resuming from step {step}, saved with a different config "
                f"({meta.get('config_hash')}); continuing with the current one",
                file=sys.stderr,
            )

    def run(self, state: Any, provenance: dict[str, Any]) -> dict[str, Any]:
        total = self.training.steps
        step, pending = self.start_step, None
        with contextlib.ExitStack() as cleanup:  # closed in reverse, also when the start fails
            if self.evaluation is not None:
                cleanup.callback(self.evaluation.close)
            self.artifacts.start(resume_step=self.start_step, restored_from=self.restored_from)
            cleanup.callback(self.artifacts.close)
            completions = CompletionWatch(self._clock)
            cleanup.callback(completions.close)
            if self.evaluation is not None and self.evaluation.due(step):  # before training, or again
                self._evaluate(step, state)  # after a resume (its record was dropped with later ones)
            while step < total and not self._stop_requested(step):
                device_batch = put_batch(
                    next(self.data), self.mesh, self.training.grad_accum_steps, host_rows=True
                )
                state, metrics = self.step_fn(state, device_batch)
                step += 1
                if pending is not None:
                    self._finish(pending)  # fetch step-1 while step runs
                pending = _Pending(step, metrics, completions.watch(metrics))
                if self.evaluation is not None and self.evaluation.due(step):  # before a save at step
                    self._finish(pending)
                    pending = None
                    self._evaluate(step, state)
                if step < total and self.checkpointer.should_save(step):
                    if pending is not None:
                        self._finish(pending)
                    pending = None
                    self._save(step, state)
            if pending is not None:
                self._finish(pending)
            if step < total:  # stopped by SIGTERM
                self._preempt(step, state)
            if self.checkpointer.latest_saved != step:
                self._save(step, state)
            self.checkpointer.wait()
            if self._last_report is not None:  # the final progress names the final checkpoint
                self._report(self._last_report, force=True, notify=False)
            best = self.evaluation.best_state(state, self._join) if self._keep_best() else None
            if best is not None:
                self._export(best[0], best[1])
            elif self.exporter is not None and self._exported_step != step:
                self._export(step, state)
            if self.evaluation is not None and self._keep_best():
                self.evaluation.say_exported(self.model_uri, self._exported_step)
        if self.artifacts.missing_steps:  # a run never succeeds with a hole in its metrics
            first, last = self.artifacts.missing_steps
            raise TrainerError(
                f"the metrics of steps {first}..{last} were lost before this attempt's checkpoint; "
                f"resume from an earlier checkpoint (spec.checkpoint.resume) to re-create them"
            )
        summary = summarize(
            self.artifacts.read_metrics(), wall_time_seconds=self._wall(), provenance=provenance
        )
        if self.model_uri is not None:
            summary["model_uri"] = self.model_uri
            summary["model_step"] = self._exported_step  # the step of the exported state
        self.artifacts.write_summary(summary)
        return summary

    # -- steps ---------------------------------------------------------------------------------
    def _finish(self, pending: _Pending) -> None:
        """Wait for a step's completion, fetch its metrics, check them, log them."""
        done = pending.completion.wait()
        values = {name: float(value) for name, value in jax.device_get(pending.metrics).items()}
        step_time, self._last_fetch = done - self._last_fetch, done
        tokens = round(values["tokens"])
        self.tokens_seen += tokens
        includes_compile = pending.step == self.start_step + 1  # the attempt's first step
        if not includes_compile:
            self._ema_step_time = (
                step_time
                if self._ema_step_time is None
                else _EMA * self._ema_step_time + (1 - _EMA) * step_time
            )
        record = MetricRecord.measure(
            step=pending.step,
            values=values,
            tokens=tokens,
            step_time=step_time,
            wall_time=self._wall(),
            now=dt.datetime.now(dt.UTC),
            includes_compile=includes_compile,
            restored_from=self.restored_from if includes_compile else None,
        ).to_json()
        diverged = [name for name in ("loss", "grad_norm") if not math.isfinite(values[name])]
        last = pending.step == self.training.steps
        if diverged or last or pending.step % self.log_every == 0:
            self.artifacts.log_step(record)
        if diverged:
            name = diverged[0].replace("_", " ")
            raise DivergedError(f"{name} is {values[diverged[0]]} at step {pending.step}")
        if last or pending.step % self.log_every == 0:
            self._report(record)

    def _report(self, record: dict[str, Any], force: bool = False, notify: bool = True) -> None:
        total = self.training.steps
        eta = None if self._ema_step_time is None else (total - record["step"]) * self._ema_step_time
        smoothed = self._ema_step_time  # the MFU of one step's time swings (the last one is short)
        self._last_report = record
        self.artifacts.progress(
            step=record["step"],
            total_steps=total,
            loss=record["loss"],
            tokens_per_second=record["tokens_per_second"],
            eta_seconds=eta,
            force=force or record["step"] == total,
            mfu=self.mfu(record["tokens"], smoothed) if self.mfu and smoothed else None,
            checkpoint_step=self.checkpointer.durable_step(),
            **(self.evaluation.progress_fields() if self.evaluation is not None else {}),
        )
        if notify and self.on_progress is not None:
            evaluated = self.evaluation.progress_fields() if self.evaluation is not None else {}
            self.on_progress({**record, "total_steps": total, "eta_seconds": eta, **evaluated})

    def _save(self, step: int, state: Any) -> None:
        meta = {
            "step": step,
            "tokens_seen": self.tokens_seen,
            "seed": self.training.seed,
            "data": self.data.state(),
            "config_hash": self.run_config.config_hash,
            "wall_time_seconds": self._wall(),
        }
        if self.evaluation is not None:
            meta["evaluation"] = self.evaluation.meta(step)
        # The metrics up to ``step`` become durable before the checkpoint exists: a checkpoint is
        # never the resume point of records that were lost (a failed flush saves nothing).
        self.artifacts.flush()
        self.checkpointer.save(step, checkpointed(state, self.training), meta)
        self._saves += 1
        every = self.export_every_saves
        if self.exporter is not None and every and self._saves % every == 0:
            self._export(step, state)

    def _evaluate(self, step: int, state: Any) -> None:
        """Evaluate the state after ``step`` (its record logged before any checkpoint of ``step``);
        its time is left out of the next step's."""
        assert self.evaluation is not None
        record = self.evaluation.evaluate(step, state, dt.datetime.now(dt.UTC))
        self._last_fetch += record["seconds"]
        self.artifacts.log_step(record)
        if self._last_report is not None:
            self._report(self._last_report, force=True)

    def _keep_best(self) -> bool:
        return self.evaluation is not None and self.run_config.spec.checkpoint.keep_best

    def _join(self, state: Any, saved: Any) -> Any:
        return with_checkpointed(state, saved, self.training)

    def _export(self, step: int, state: Any) -> None:
        assert self.exporter is not None
        self.model_uri = self.exporter(state)
        self._exported_step = step

    def _preempt(self, step: int, state: Any) -> None:
        if step > self.start_step and self.checkpointer.latest_saved != step:
            self._save(step, state)
        self.checkpointer.wait()
        if self._last_report is not None:  # the checkpoint just saved, for the operator's status
            self._report(self._last_report, force=True, notify=False)
        self.artifacts.close()
        if step == 0:  # nothing trained: no checkpoint, and none is claimed
            raise PreemptedError("stopped by SIGTERM before the first step; no checkpoint to save", step=0)
        raise PreemptedError(f"stopped by SIGTERM at step {step}; checkpoint saved", step=step)

    def _stop_requested(self, step: int) -> bool:
        return self._stop_agreement(step, self.stop_event.is_set())  # the same step on every process

    def _wall(self) -> float:
        return self.prior_wall + (self._clock() - self._t0)


# -- pure helpers ------------------------------------------------------------------------------
def make_provenance(
    run: LoadedRun, devices: list[jax.Device], model_cfg: ModelConfig, dataset_checksum: str
) -> dict[str, Any]:
    """Where and with what this run was trained."""
    return {
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "platform": devices[0].platform,
        "process_count": jax.process_count(),
        "jax_version": jax.__version__,
        "flax_version": _version("flax"),
        "optax_version": _version("optax"),
        "orbax_version": _version("orbax-checkpoint"),
        "config_hash": run.config_hash,
        "dataset_checksum": dataset_checksum,
        "parameters": count_params(model_cfg),
        "attention": model_cfg.attention_impl or "xla",
    }


def open_pretrained(run: LoadedRun) -> PretrainedModel | None:
    """The run's pretrained model (its config.json read and checked), or None without one."""
    pretrained = run.spec.model.pretrained
    if pretrained is None:
        return None
    return PretrainedModel(
        pretrained.uri,
        storage_options=fsspec_options(pretrained.uri, run.spec.storage),
        base_dir=run.base_dir,
    )


def model_config(
    run: LoadedRun, tokenizer_vocab_size: int, platform: str, pretrained: PretrainedModel | None = None
) -> ModelConfig:
    """The model's shape from the spec (or the pretrained model's config.json), with the attention
    kernel chosen for ``platform``."""
    training = run.spec.training
    if pretrained is None and run.spec.model.pretrained is not None:
        pretrained = open_pretrained(run)
    if pretrained is not None:
        cfg = pretrained.model_config(
            tokenizer_vocab_size, training.compute_dtype.value, training.param_dtype.value
        )
        return choose_attention_impl(cfg, platform)
    try:
        cfg = resolve_model_config(
            run.spec.model,
            tokenizer_vocab_size=tokenizer_vocab_size,
            compute_dtype=training.compute_dtype.value,
            param_dtype=training.param_dtype.value,
        )
    except ValueError as exc:
        raise ConfigError(f"spec.model: {exc}") from exc
    return choose_attention_impl(cfg, platform)


def dataset_tokenizer(run: LoadedRun, dataset: DatasetSpec) -> Tokenizer:
    """The dataset's tokenizer, its model file read through the run's storage settings."""
    model_uri = run.spec.model.pretrained.uri if run.spec.model.pretrained else None
    return load_tokenizer(
        dataset.tokenizer,
        storage_options=fsspec_options(dataset.tokenizer.uri or model_uri, run.spec.storage),
        base_dir=run.base_dir,
        model_uri=model_uri,
    )


def eval_tracker(
    run: LoadedRun,
    checkpoint_uri: str,
    tokenizer: Tokenizer,
    graphdef: Any,
    mesh: jax.sharding.Mesh,
    checkpointer: Checkpointer,
) -> EvalTracker:
    """The run's evaluation (``spec.evaluation``): its batches read once, the jitted forward pass,
    and with ``checkpoint.keepBest`` the best checkpoints in ``<checkpoint uri>/best`` (those the
    run's checkpoints name, see ``EvalTracker``)."""
    spec = run.spec
    assert spec.evaluation is not None and spec.dataset is not None
    training = spec.training
    evaluator = build_evaluator(
        spec.evaluation,
        spec.dataset,
        tokenizer,
        graphdef,
        mesh,
        batch_size=training.batch_size // training.grad_accum_steps,
        seq_len=training.seq_len,
        storage_options=fsspec_options(spec.evaluation.dataset_uri or spec.dataset.uri, spec.storage),
        base_dir=run.base_dir,
        gather=_gather_from_processes if jax.process_count() > 1 else None,
    )
    best = None
    if spec.checkpoint.keep_best:
        uri = join_uri(checkpoint_uri, BEST_DIR)
        best = Checkpointer(  # the tracker deletes those no checkpoint names; never more than this
            uri,
            save_interval_steps=1,
            max_to_keep=spec.checkpoint.max_to_keep + 2,
            storage_options=fsspec_options(uri, spec.storage),
        )
    return EvalTracker(
        evaluator,
        total_steps=training.steps,
        every_steps=spec.evaluation.every_steps,
        saved_part=lambda state: checkpointed(state, training),
        best_checkpointer=best,
        resume_points=checkpointer.all_steps,
    )


def dataset_batches(
    run: LoadedRun, dataset: DatasetSpec, tokenizer: Tokenizer, hold_out_fraction: float = 0.0
) -> BatchIterator:
    """The run's training batches (``spec.training`` sizes and seed) from ``dataset``, less the
    held-out records: this process's rows of every global batch (``data_stream.host_lanes``),
    the data position gathered from every process for checkpoints."""
    training = run.spec.training
    multi = jax.process_count() > 1
    return BatchIterator(
        dataset,
        tokenizer,
        batch_size=training.batch_size,
        seq_len=training.seq_len,
        seed=training.seed,
        storage_options=fsspec_options(dataset.uri, run.spec.storage),
        base_dir=run.base_dir,
        hold_out_fraction=hold_out_fraction,
        grad_accum_steps=training.grad_accum_steps,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        gather=_gather_from_processes if multi else None,
        workers=dataset.workers,
    )


def _gather_from_processes(rows: Any) -> Any:
    """Every process's ``rows`` concatenated in process order (a collective)."""
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(rows, tiled=True))


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _close_quietly(resource: Checkpointer | BatchIterator | EvalTracker) -> None:
    """Close ``resource`` (a checkpointer waits for pending saves) on an error path without
    masking the error."""
    try:
        resource.close()
    except Exception as exc:
        print(f"tunix-train: while stopping: {exc}", file=sys.stderr)


class _NoArtifacts:
    """Stands in for RunArtifacts on processes other than 0 (one process owns the artifacts)."""

    missing_steps: tuple[int, int] | None = None

    def start(self, resume_step: int, restored_from: int | None = None) -> None: ...
    def log_step(self, record: dict) -> None: ...
    def progress(self, **kwargs: Any) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def write_summary(self, summary: dict) -> None: ...

    def read_metrics(self) -> list[dict]:
        return []
