"""The train state and the single jitted, buffer-donating optimizer step.

The model and its ``nnx.Optimizer`` are split once into a static ``graphdef`` and a pure ``state``
pytree; the jitted step merges them, runs forward/backward over ``gradAccumSteps`` micro-batches
with ``lax.scan``, applies one optimizer update and returns the new state. This is the functional
NNX fast path: no re-splitting of Python objects per step. Parameters (and optimizer state) are
replicated over the mesh; the batch is sharded over the ``"data"`` axis, so the same step runs on
one device or many. The benchmark reuses these helpers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tunix_api.training import TrainingSpec
from tunix_trainer.devices import DATA_AXIS
from tunix_trainer.errors import ConfigError
from tunix_trainer.lora import add_adapters, trainable
from tunix_trainer.losses import softmax_cross_entropy
from tunix_trainer.model import ModelConfig, Transformer
from tunix_trainer.optim import make_optimizer, make_schedule

BATCH_FIELDS = ("inputs", "targets", "loss_mask")
Metrics = dict[str, jax.Array]
StepFn = Callable[[nnx.State, Mapping[str, jax.Array]], tuple[nnx.State, Metrics]]


@dataclass
class TrainState:
    """``graphdef`` is static; ``state`` holds the (model, optimizer) arrays, replicated over the mesh."""

    graphdef: nnx.GraphDef
    state: nnx.State


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """[accum, micro_batch, seq]: micro-batch rows split over the "data" axis."""
    return NamedSharding(mesh, PartitionSpec(None, DATA_AXIS, None))


def build_model_and_optimizer(
    model_cfg: ModelConfig, training: TrainingSpec, seed: int, params: dict[str, Any] | None = None
) -> tuple[Transformer, nnx.Optimizer]:
    """A freshly initialised model (its parameters replaced by the pure dict ``params`` when given),
    with LoRA adapters when ``training.lora`` asks for them, and its optimizer over what trains
    (call under ``jax.jit`` or ``nnx.eval_shape``)."""
    model = Transformer(model_cfg, rngs=nnx.Rngs(seed))
    if params is not None:
        state = nnx.state(model, nnx.Param)
        nnx.replace_by_pure_dict(state, params)
        nnx.update(model, state)
    if training.lora is not None:
        add_adapters(model, training.lora, seed)
    optimizer = nnx.Optimizer(model, make_optimizer(training), wrt=trainable(training))
    return model, optimizer


def init_train_state(model_cfg: ModelConfig, training: TrainingSpec, mesh: Mesh, seed: int) -> TrainState:
    """Initialise parameters and optimizer state directly into their replicated placement."""
    build = functools.partial(build_model_and_optimizer, model_cfg, training, seed)
    graphdef, _ = nnx.split(nnx.eval_shape(build))
    state = jax.jit(lambda: nnx.state(build()), out_shardings=replicated(mesh))()
    return TrainState(graphdef=graphdef, state=state)


def abstract_state(state: nnx.State) -> nnx.State:
    """Shapes, dtypes and shardings of ``state``: the restore target for checkpoints."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def token_loss_sums(
    logits: jax.Array, targets: jax.Array, loss_mask: jax.Array, valid_vocab: int | None = None
) -> tuple[jax.Array, jax.Array]:
    """(sum of masked token cross-entropy, sum of the mask), computed in float32 from ``logits`` in
    their own dtype (see ``tunix_trainer.losses``); ids ``>= valid_vocab`` get no probability."""
    ce = softmax_cross_entropy(logits, targets, valid_vocab)
    mask = loss_mask.astype(jnp.float32)
    return jnp.sum(ce * mask), jnp.sum(mask)


def train_step(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    batch: Mapping[str, jax.Array],
    *,
    schedule: optax.Schedule,
    dropout_seed: int | None = None,
) -> tuple[nnx.State, Metrics]:
    """One optimizer step over ``batch`` (arrays shaped [accum, micro_batch, seq]).

    The loss is ``sum(mask * ce) / max(sum(mask), 1)`` over the whole batch, so accumulating
    micro-batches gives the same update as one big batch. Gradients accumulate in float32, for the
    parameters the optimizer updates (``optimizer.wrt``: all, or the LoRA adapters). With
    ``dropout_seed`` (LoRA dropout) the dropout key of a step is a function of the seed and the
    optimizer step, so a resumed run drops the same units.
    """
    model, optimizer = nnx.merge(graphdef, state)
    learning_rate = schedule(optimizer.step.value)  # the rate this update uses
    key = None
    if dropout_seed is not None:
        key = jax.random.fold_in(jax.random.key(dropout_seed), optimizer.step.value)
    grad_sum, loss_sum, tokens = accumulate_gradients(model, batch, wrt=optimizer.wrt, dropout_key=key)
    params = nnx.state(model, optimizer.wrt)
    denom = jnp.maximum(tokens, 1.0)
    grads = jax.tree.map(lambda g, p: (g / denom).astype(p.dtype), grad_sum, params)
    grad_norm = optax.global_norm(grads)
    optimizer.update(model, grads)
    metrics = {
        "loss": loss_sum / denom,
        "grad_norm": grad_norm.astype(jnp.float32),
        "learning_rate": jnp.asarray(learning_rate, jnp.float32),
        "tokens": tokens,
    }
    return nnx.state((model, optimizer)), metrics


def accumulate_gradients(
    model: nnx.Module,
    batch: Mapping[str, jax.Array],
    *,
    wrt: Any = nnx.Param,
    dropout_key: jax.Array | None = None,
) -> tuple[nnx.State, jax.Array, jax.Array]:
    """(float32 sum of the micro-batches' gradients of the summed token loss, summed loss, token
    count) over ``batch`` (arrays shaped [accum, micro_batch, seq]), before any normalisation.
    Gradients are taken for the parameters ``wrt`` selects; ``dropout_key`` turns dropout on (one
    key per micro-batch folded from it)."""
    model_def, params, rest = nnx.split(model, wrt, ...)

    def micro_loss(p: nnx.State, micro: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        rngs = None
        if dropout_key is not None:
            rngs = nnx.Rngs(dropout=jax.random.fold_in(dropout_key, micro["index"]))
        logits = nnx.merge(model_def, p, rest)(micro["inputs"], rngs)
        return token_loss_sums(logits, micro["targets"], micro["loss_mask"], model.cfg.valid_vocab_size)

    grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

    def accumulate(carry: tuple[Any, jax.Array, jax.Array], micro: Mapping[str, jax.Array]):
        grad_sum, loss_sum, token_sum = carry
        (loss, tokens), grads = grad_fn(params, micro)
        grad_sum = jax.tree.map(lambda acc, g: acc + g.astype(jnp.float32), grad_sum, grads)
        return (grad_sum, loss_sum + loss, token_sum + tokens), None

    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    init = (zeros, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
    micro_batches = {name: batch[name] for name in BATCH_FIELDS}
    if dropout_key is not None:
        micro_batches["index"] = jnp.arange(batch[BATCH_FIELDS[0]].shape[0])
    (grad_sum, loss_sum, tokens), _ = jax.lax.scan(accumulate, init, micro_batches)
    return grad_sum, loss_sum, tokens


def make_train_step(
    graphdef: nnx.GraphDef, training: TrainingSpec, mesh: Mesh, *, donate: bool = True
) -> StepFn:
    """``step(state, batch) -> (state, metrics)``: jitted, with the state's buffers donated."""
    dropout_seed = training.seed if training.lora is not None and training.lora.dropout > 0 else None
    fn = functools.partial(train_step, graphdef, schedule=make_schedule(training), dropout_seed=dropout_seed)
    repl = replicated(mesh)
    return jax.jit(
        fn,
        in_shardings=(repl, batch_sharding(mesh)),
        out_shardings=(repl, repl),
        donate_argnums=(0,) if donate else (),
    )


def check_batch_layout(training: TrainingSpec, mesh: Mesh) -> None:
    """The micro-batch must split evenly over the data-parallel devices."""
    micro = training.batch_size // training.grad_accum_steps
    n = mesh.devices.size
    if micro % n:
        raise ConfigError(
            f"spec.training.batchSize: the micro-batch (batchSize / gradAccumSteps = {micro}) must be "
            f"divisible by the number of devices ({n})"
        )


def put_batch(
    batch: Any, mesh: Mesh, grad_accum_steps: int, *, host_rows: bool = False
) -> dict[str, jax.Array]:
    """Host batch ([B, T] numpy ``inputs``/``targets``/``loss_mask``) -> device arrays [A, B/A, T].

    Every process holds the same global batch; each device receives its rows of every micro-batch.
    With ``host_rows`` (several processes) a process holds only its own rows of every micro-batch,
    in order (``data_stream.host_lanes``), and they become its devices' shards.
    """
    sharding = batch_sharding(mesh)
    out = {}
    for name in BATCH_FIELDS:
        host = np.asarray(getattr(batch, name))
        b, t = host.shape
        host = host.reshape(grad_accum_steps, b // grad_accum_steps, t)
        if jax.process_count() == 1:
            out[name] = jax.device_put(host, sharding)
        elif host_rows:
            shape = (grad_accum_steps, host.shape[1] * jax.process_count(), t)
            out[name] = jax.make_array_from_process_local_data(sharding, host, shape)
        else:
            out[name] = jax.make_array_from_callback(host.shape, sharding, lambda idx, h=host: h[idx])
    return out
