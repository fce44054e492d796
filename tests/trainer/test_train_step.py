"""The optimizer, the jitted step (loss, accumulation, masking, sharding) and device selection."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.trainer.conftest import SMALL_MODEL
from tunix_api.training import DeviceKind, ModelSpec, TrainingSpec
from tunix_trainer.data import Batch, SyntheticBatches
from tunix_trainer.devices import (
    DATA_AXIS,
    DistributedConfig,
    distributed_config,
    make_mesh,
    select_devices,
)
from tunix_trainer.errors import ConfigError, DeviceUnavailableError
from tunix_trainer.model import resolve_model_config
from tunix_trainer.optim import decay_mask, make_schedule
from tunix_trainer.train_step import (
    accumulate_gradients,
    check_batch_layout,
    init_train_state,
    make_train_step,
    put_batch,
    token_loss_sums,
)

VOCAB = 259  # the byte tokenizer's


def small_setup(**training):
    spec = TrainingSpec(
        **{
            "steps": 50,
            "batch_size": 8,
            "seq_len": 16,
            "learning_rate": 1e-2,
            "compute_dtype": "float32",
            **training,
        }
    )
    cfg = resolve_model_config(
        ModelSpec.model_validate(SMALL_MODEL),
        tokenizer_vocab_size=VOCAB,
        compute_dtype=spec.compute_dtype.value,
        param_dtype=spec.param_dtype.value,
    )
    mesh = make_mesh(select_devices("cpu"))
    return spec, cfg, mesh


def fixed_batch(batch_size=8, seq_len=16, seed=3) -> Batch:
    return next(SyntheticBatches(VOCAB, batch_size=batch_size, seq_len=seq_len, seed=seed))


# -- optimizer ---------------------------------------------------------------------------------
def test_schedule_warms_up_then_decays_to_the_floor():
    spec = TrainingSpec(steps=100, learning_rate=1.0, warmup_steps=10, min_lr_ratio=0.1, decay="cosine")
    lr = make_schedule(spec)
    assert float(lr(0)) == pytest.approx(0.1)  # the first step already learns
    assert float(lr(9)) == pytest.approx(1.0)
    assert float(lr(10)) == pytest.approx(1.0)
    assert float(lr(55)) == pytest.approx(0.55, abs=1e-6)  # cosine midpoint between 1.0 and 0.1
    assert float(lr(100)) == pytest.approx(0.1)
    assert float(lr(10_000)) == pytest.approx(0.1)
    values = [float(lr(i)) for i in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(values))


@pytest.mark.parametrize(("decay", "midpoint"), [("linear", 0.55), ("constant", 1.0)])
def test_linear_and_constant_decay(decay, midpoint):
    lr = make_schedule(
        TrainingSpec(steps=100, learning_rate=1.0, warmup_steps=10, min_lr_ratio=0.1, decay=decay)
    )
    assert float(lr(55)) == pytest.approx(midpoint, abs=1e-6)


def test_weight_decay_skips_vectors():
    mask = decay_mask({"w": jnp.ones((2, 3)), "scale": jnp.ones(3), "bias": jnp.ones(1)})
    assert mask == {"w": True, "scale": False, "bias": False}


# -- loss --------------------------------------------------------------------------------------
def test_token_loss_sums_matches_numpy_and_honours_the_mask():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 5)).astype(np.float32)
    targets = rng.integers(0, 5, size=(2, 3)).astype(np.int32)
    mask = np.array([[1, 1, 0], [0, 1, 1]], np.float32)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    loss_sum, tokens = token_loss_sums(jnp.asarray(logits, jnp.bfloat16).astype(jnp.float32), targets, mask)
    assert float(tokens) == 4.0
    assert float(loss_sum) == pytest.approx(float((ce * mask).sum()), rel=1e-2)
    zero_sum, zero_tokens = token_loss_sums(logits, targets, np.zeros_like(mask))
    assert float(zero_sum) == 0.0 and float(zero_tokens) == 0.0


# -- the jitted step ---------------------------------------------------------------------------
def test_step_reduces_loss_on_a_fixed_batch_and_donates_the_state():
    spec, cfg, mesh = small_setup()
    ts = init_train_state(cfg, spec, mesh, seed=0)
    step = make_train_step(ts.graphdef, spec, mesh)
    batch = put_batch(fixed_batch(), mesh, 1)
    first_leaf = jax.tree.leaves(ts.state)[0]
    state, losses = ts.state, []
    for _ in range(15):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert first_leaf.is_deleted()  # buffers were donated to the step
    assert losses[0] == pytest.approx(np.log(cfg.vocab_size), rel=0.1)  # starts near uniform
    assert losses[-1] < 0.5 * losses[0]
    assert float(metrics["tokens"]) == 8 * 16
    assert float(metrics["grad_norm"]) > 0
    assert float(metrics["learning_rate"]) == pytest.approx(float(make_schedule(spec)(14)))


def test_grad_accumulation_matches_one_big_batch():
    """The accumulated gradient of 2 micro-batches equals the one-batch gradient within the float32
    summation bound: both sum the same n per-token terms c_t in different orders, so each is within
    n * eps * sum|c_t| of the exact sum (Higham: gamma_n <= n * eps) and they differ by at most
    twice that. The terms c_t come from the same gradient function with a one-token mask. Compared
    before the optimizer: Adam divides by |g| + eps, which turns a rounding difference in a
    near-zero gradient into an arbitrarily large relative one (as seen on an AMD EPYC)."""
    batch = fixed_batch()
    spec, cfg, mesh = small_setup()
    ts = init_train_state(cfg, spec, mesh, seed=0)
    model, _ = nnx.merge(ts.graphdef, ts.state)
    grads = jax.jit(accumulate_gradients)
    (g1, loss1, tokens1), (g2, loss2, tokens2) = (
        jax.device_get(grads(model, put_batch(batch, mesh, accum))) for accum in (1, 2)
    )
    mask = np.asarray(batch.loss_mask)
    n, eps = mask.size, float(np.finfo(np.float32).eps)
    assert tokens1 == tokens2 == mask.sum()  # small integers: exact in float32
    assert abs(loss1 - loss2) <= 2 * n * eps * loss1  # cross-entropies are >= 0: sum|c_t| = sum

    def token_grads(one_token_mask: jax.Array) -> Any:
        micro = {
            "inputs": batch.inputs[None],
            "targets": batch.targets[None],
            "loss_mask": one_token_mask[None],
        }
        return accumulate_gradients(model, micro)[0]

    one_token_masks = np.eye(n, dtype=np.float32).reshape(n, *mask.shape) * mask
    terms = jax.jit(jax.vmap(token_grads))(one_token_masks)
    abs_sums = jax.device_get(jax.tree.map(lambda t: jnp.sum(jnp.abs(t), axis=0), terms))
    for a, b, abs_sum in zip(
        jax.tree.leaves(g1), jax.tree.leaves(g2), jax.tree.leaves(abs_sums), strict=True
    ):
        bound = 2 * n * eps * abs_sum
        assert np.all(np.abs(a - b) <= bound), f"{np.max(np.abs(a - b) - bound)} over the bound"


def test_masked_tokens_do_not_move_the_loss():
    """Changing targets where the mask is 0 changes neither loss nor gradients."""
    spec, cfg, mesh = small_setup()
    base = fixed_batch()
    mask = np.ones_like(base.loss_mask)
    mask[:, ::2] = 0.0
    other_targets = base.targets.copy()
    other_targets[:, ::2] = (other_targets[:, ::2] + 1) % VOCAB
    ts = init_train_state(cfg, spec, mesh, seed=0)
    step = make_train_step(ts.graphdef, spec, mesh, donate=False)
    outs = [
        jax.device_get(step(ts.state, put_batch(Batch(base.inputs, targets, mask), mesh, 1))[1])
        for targets in (base.targets, other_targets)
    ]
    assert outs[0]["tokens"] == mask.sum()
    np.testing.assert_allclose(outs[0]["loss"], outs[1]["loss"], rtol=1e-6)
    np.testing.assert_allclose(outs[0]["grad_norm"], outs[1]["grad_norm"], rtol=1e-6)


def test_bf16_compute_keeps_fp32_params():
    spec, cfg, mesh = small_setup(compute_dtype="bfloat16")
    assert cfg.dtype == jnp.bfloat16
    ts = init_train_state(cfg, spec, mesh, seed=0)
    state, metrics = make_train_step(ts.graphdef, spec, mesh)(ts.state, put_batch(fixed_batch(), mesh, 1))
    floats = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and all(x.dtype == jnp.float32 for x in floats)
    assert metrics["loss"].dtype == jnp.float32 and np.isfinite(float(metrics["loss"]))


def test_put_batch_layout():
    _, _, mesh = small_setup()
    out = put_batch(fixed_batch(), mesh, 4)
    assert set(out) == {"inputs", "targets", "loss_mask"}
    assert out["inputs"].shape == (4, 2, 16) and out["inputs"].dtype == jnp.int32
    assert out["loss_mask"].dtype == jnp.float32
    assert out["inputs"].sharding.spec == jax.sharding.PartitionSpec(None, DATA_AXIS, None)
    np.testing.assert_array_equal(np.asarray(out["inputs"]).reshape(8, 16), fixed_batch().inputs)


def test_micro_batch_must_split_over_devices():
    mesh = make_mesh(select_devices("cpu") * 3)  # a fake 3-device mesh is enough for the check
    with pytest.raises(
        ConfigError, match=r"spec\.training\.batchSize: .* divisible by the number of devices \(3\)"
    ):
        check_batch_layout(TrainingSpec(steps=1, batch_size=8, grad_accum_steps=2), mesh)
    check_batch_layout(TrainingSpec(steps=1, batch_size=12, grad_accum_steps=2), mesh)


_TWO_DEVICES = textwrap.dedent(
    """
    import jax, numpy as np
    from tests.trainer.test_train_step import small_setup, fixed_batch
    from tunix_trainer.devices import make_mesh, select_devices
    from tunix_trainer.train_step import init_train_state, make_train_step, put_batch
    assert len(jax.devices()) == 2
    spec, cfg, _ = small_setup(grad_accum_steps=2)
    losses = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = make_mesh(devices)
        ts = init_train_state(cfg, spec, mesh, seed=0)
        step = make_train_step(ts.graphdef, spec, mesh)
        batch = put_batch(fixed_batch(), mesh, 2)
        assert len(batch["inputs"].sharding.device_set) == len(devices)
        state = ts.state
        for _ in range(3):
            state, metrics = step(state, batch)
        leaf = jax.tree.leaves(state)[0]
        assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == len(devices)
        losses.append(float(metrics["loss"]))
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)
    print("OK", losses)
    """
)


def test_step_runs_data_parallel_on_two_cpu_devices():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run(
        [sys.executable, "-c", _TWO_DEVICES], cwd=root, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK" in proc.stdout


# -- devices -----------------------------------------------------------------------------------
def test_select_devices_auto_and_cpu():
    assert select_devices(DeviceKind.AUTO) == jax.devices()
    assert [d.platform for d in select_devices("cpu")] == ["cpu"] * len(jax.devices("cpu"))


@pytest.mark.parametrize("kind", ["gpu", "tpu"])
def test_absent_device_kind_is_unavailable(kind):
    if jax.default_backend() != "cpu":
        pytest.skip("needs a CPU-only machine")
    with pytest.raises(DeviceUnavailableError, match=rf"spec\.device\.kind is {kind} .*\(available: cpu\)"):
        select_devices(kind)


def test_distributed_config_from_env():
    assert distributed_config({}) is None
    assert distributed_config({"TUNIX_COORDINATOR_ADDRESS": "h:1234", "TUNIX_NUM_PROCESSES": "1"}) is None
    tunix = {
        "TUNIX_COORDINATOR_ADDRESS": "run-0.svc:8476",
        "TUNIX_NUM_PROCESSES": "4",
        "JOB_COMPLETION_INDEX": "2",
    }
    assert distributed_config(tunix) == DistributedConfig("run-0.svc:8476", 4, 2)
    assert distributed_config({**tunix, "TUNIX_PROCESS_ID": "3"}).process_id == 3
    jax_env = {"JAX_COORDINATOR_ADDRESS": "c:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
    assert distributed_config(jax_env) == DistributedConfig("c:1", 2, 1)
    with pytest.raises(ConfigError, match=r"outside 0\.\.3"):
        distributed_config({**tunix, "TUNIX_PROCESS_ID": "4"})
    with pytest.raises(ConfigError, match="required"):
        distributed_config({k: v for k, v in tunix.items() if k != "JOB_COMPLETION_INDEX"})
    with pytest.raises(ConfigError, match="must be an integer"):
        distributed_config({**tunix, "TUNIX_NUM_PROCESSES": "four"})
