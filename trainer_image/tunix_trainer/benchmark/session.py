"""One benchmark of a TunixRun: the trainer's own model, state, step and batch placement, timed.

Builds exactly what ``tunix_trainer.loop.train`` builds (``init_train_state``, ``make_train_step``,
``put_batch``), but writes no checkpoints and no metrics; see ``runner`` for the timing method.
With ``checkpoint_saves`` > 0 the state is then saved that many times into a temporary directory
to time the checkpoint (``checkpoint_probe``); nothing goes to the run's checkpoint location.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import jax

from tunix_api.storage import fsspec_options
from tunix_api.training import BenchmarkSpec
from tunix_trainer.benchmark.checkpoint_probe import STEPS_DURING_SAVE, measure_checkpoint_cost
from tunix_trainer.benchmark.hardware import describe_devices, peak_flops, peak_memory_bytes
from tunix_trainer.benchmark.output import upload_directory
from tunix_trainer.benchmark.report import BenchmarkResult, Workload
from tunix_trainer.benchmark.runner import LoopPlan, run_loop
from tunix_trainer.checkpoint import is_remote, local_path
from tunix_trainer.config import LoadedRun
from tunix_trainer.data import SyntheticBatches
from tunix_trainer.devices import make_mesh, select_devices
from tunix_trainer.errors import ConfigError, PreemptedError
from tunix_trainer.loop import dataset_batches, dataset_tokenizer, model_config
from tunix_trainer.lora import state_sizes
from tunix_trainer.model import count_params, flops_per_token
from tunix_trainer.tokenizer import ByteTokenizer
from tunix_trainer.train_step import check_batch_layout, init_train_state, make_train_step, put_batch

PROFILE_DIR = "profile"
MAX_STAGED_BATCHES = 8  # distinct device batches cycled through the timed steps


def run_benchmark(
    run: LoadedRun,
    settings: BenchmarkSpec,
    *,
    artifacts_uri: str,
    stop_event: threading.Event | None = None,
    checkpoint_saves: int = 0,
) -> BenchmarkResult:
    """Time the training step of ``run`` as ``settings`` says; the profile (if any) goes to
    ``<artifacts_uri>/profile``. ``checkpoint_saves`` > 0 also times that many checkpoint saves
    at ``spec.checkpoint.saveIntervalSteps``. Raises PreemptedError when ``stop_event`` is set."""
    spec, training = run.spec, run.spec.training
    if checkpoint_saves < 0:
        raise ConfigError("--checkpoint-cost: expected a number of saves >= 0")
    if checkpoint_saves and jax.process_count() > 1:
        raise ConfigError("--checkpoint-cost: measured in a single process only")
    if not settings.synthetic_data and spec.dataset is None:
        raise ConfigError("spec.benchmark.syntheticData: false needs spec.dataset")
    devices = select_devices(spec.device.kind)
    mesh = make_mesh(devices)
    check_batch_layout(training, mesh)

    tokenizer = dataset_tokenizer(run, spec.dataset) if spec.dataset is not None else ByteTokenizer()
    model_cfg = model_config(run, tokenizer.vocab_size, devices[0].platform)
    batches: Iterator[Any]
    if settings.synthetic_data:
        batches = SyntheticBatches(  # ids the loss accepts: padded vocabulary rows are masked out
            model_cfg.valid_vocab_size or model_cfg.vocab_size,
            batch_size=training.batch_size,
            seq_len=training.seq_len,
            seed=training.seed,
        )
    else:
        assert spec.dataset is not None
        batches = dataset_batches(run, spec.dataset, tokenizer)

    train_state = init_train_state(model_cfg, training, mesh, training.seed)
    step_fn = make_train_step(train_state.graphdef, training, mesh)

    profile_steps = settings.profile_steps if settings.profile else 0
    loop_steps = 1 + settings.warmup_steps + 2 * settings.measure_steps + profile_steps
    total_steps = loop_steps + checkpoint_saves * STEPS_DURING_SAVE
    staged = [
        put_batch(next(batches), mesh, training.grad_accum_steps)
        for _ in range(min(MAX_STAGED_BATCHES, total_steps))
    ]

    def check_stop(done: int) -> None:
        if stop_event is not None and stop_event.is_set():
            raise PreemptedError(f"benchmark stopped by a signal after {done} steps", step=done)

    profile_target = artifacts_uri.rstrip("/") + "/" + PROFILE_DIR
    with tempfile.TemporaryDirectory(prefix="tunix-profile-") as scratch:
        profile_dir = None
        if profile_steps:
            profile_dir = scratch if is_remote(artifacts_uri) else local_path(profile_target)
            os.makedirs(profile_dir, exist_ok=True)
        plan = LoopPlan(settings.warmup_steps, settings.measure_steps, profile_steps, profile_dir)
        state, timings = run_loop(step_fn, train_state.state, staged, plan, check_stop=check_stop)
        if profile_dir is not None and is_remote(artifacts_uri) and jax.process_index() == 0:
            upload_directory(profile_dir, profile_target, fsspec_options(profile_target, spec.storage))

    checkpoint_cost = None
    if checkpoint_saves:
        _, checkpoint_cost = measure_checkpoint_cost(
            step_fn,
            state,
            staged,
            saves=checkpoint_saves,
            save_interval_steps=spec.checkpoint.save_interval_steps,
            step_seconds=timings.window_seconds / timings.window_steps,
            meta={"seed": training.seed, "config_hash": run.config_hash, "benchmark": True},
            check_stop=lambda done: check_stop(loop_steps + done),
        )

    compute_dtype = training.compute_dtype.value
    local = [d for d in devices if d.process_index == jax.process_index()]
    info = describe_devices(devices, local, jax.process_count())
    return BenchmarkResult(
        run_name=run.name,
        namespace=run.namespace,
        config_hash=run.config_hash,
        workload=Workload(
            model_name=spec.model.preset.value if spec.model.preset else "custom",
            param_count=count_params(model_cfg),
            flops_per_token=flops_per_token(model_cfg, training.seq_len),
            vocab_size=model_cfg.vocab_size,
            batch_size=training.batch_size,
            seq_len=training.seq_len,
            grad_accum_steps=training.grad_accum_steps,
            compute_dtype=compute_dtype,
            param_dtype=training.param_dtype.value,
            synthetic_data=settings.synthetic_data,
        ),
        timings=timings,
        devices=info,
        peak=peak_flops(devices[0].device_kind, compute_dtype, devices[0].platform),
        peak_memory_bytes=peak_memory_bytes(local),
        versions=versions(),
        profile_dir=profile_target if profile_steps else None,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        checkpoint=checkpoint_cost,
        state_sizes=state_sizes(state, training),  # under LoRA: the adapters and their optimizer state
    )


def versions() -> dict[str, str]:
    """Versions of the software stack that shapes the figures."""
    out = {"python": platform.python_version(), "jax": jax.__version__}
    for name in ("jaxlib", "flax", "optax", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out
