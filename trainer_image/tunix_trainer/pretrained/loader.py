"""A pretrained Hugging Face model as the start of a training run.

``PretrainedModel(uri)`` reads ``config.json`` only and refuses unsupported models at once;
``model_config`` turns it into the model's shape (checking the tokenizer fits the vocabulary);
``init_train_state`` reads the weights tensor by tensor straight into their mesh placement and
builds the optimizer around them inside one jitted function (no random initialisation survives:
XLA drops what the loaded values replace).
"""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from tunix_api.training import TrainingSpec
from tunix_trainer.data import DataError
from tunix_trainer.model import Transformer
from tunix_trainer.presets import ModelConfig
from tunix_trainer.pretrained.hf_config import check_supported, model_config_from_hf
from tunix_trainer.pretrained.source import ModelFiles
from tunix_trainer.pretrained.weights import load_params
from tunix_trainer.train_step import TrainState, build_model_and_optimizer, replicated

CONFIG_FILE = "config.json"


def placer(sharding: NamedSharding) -> Any:
    """numpy -> a global array with ``sharding``, each process supplying its own shards."""

    def place(host: np.ndarray) -> jax.Array:
        if jax.process_count() == 1:
            return jax.device_put(host, sharding)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return place


class PretrainedModel:
    """A Hugging Face-format model directory (see ``tunix_trainer.pretrained.source``)."""

    def __init__(
        self, uri: str, *, storage_options: dict[str, Any] | None = None, base_dir: str | None = None
    ) -> None:
        self.files = ModelFiles(uri, storage_options=storage_options, base_dir=base_dir)
        self.config: dict[str, Any] = self.files.read_json(CONFIG_FILE)  # type: ignore[assignment]
        check_supported(self.config, self.files.describe(CONFIG_FILE))
        self.vocab_size = int(self.config["vocab_size"])  # rows of the HF embedding
        self.load_seconds: float | None = None

    def model_config(self, tokenizer_vocab_size: int, compute_dtype: str, param_dtype: str) -> ModelConfig:
        if tokenizer_vocab_size > self.vocab_size:
            raise DataError(
                f"the tokenizer has {tokenizer_vocab_size} tokens, more than vocab_size {self.vocab_size} "
                f"of {self.files.describe(CONFIG_FILE)}"
            )
        return model_config_from_hf(
            self.config,
            source=self.files.describe(CONFIG_FILE),
            valid_vocab_size=tokenizer_vocab_size,
            compute_dtype=compute_dtype,
            param_dtype=param_dtype,
        )

    def load_params(self, cfg: ModelConfig, mesh: Mesh) -> dict[str, Any]:
        """The weights as a pure dict of arrays replicated over ``mesh``."""
        start = time.monotonic()
        try:
            params = load_params(self.files, cfg, self.vocab_size, placer(replicated(mesh)))
            jax.block_until_ready(params)
        finally:
            self.files.cleanup()  # downloaded shards are on the device now
        self.load_seconds = time.monotonic() - start
        return params

    def model(self, cfg: ModelConfig, mesh: Mesh) -> Transformer:
        """The model with the loaded weights (for evaluation and generation)."""
        model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
        state = nnx.state(model, nnx.Param)
        nnx.replace_by_pure_dict(state, self.load_params(cfg, mesh))
        nnx.update(model, state)
        return model

    def init_train_state(self, cfg: ModelConfig, training: TrainingSpec, mesh: Mesh) -> TrainState:
        return init_train_state_from(self.load_params(cfg, mesh), cfg, training, mesh)


def init_train_state_from(
    params: dict[str, Any], cfg: ModelConfig, training: TrainingSpec, mesh: Mesh
) -> TrainState:
    """The train state (model + optimizer, replicated) whose model parameters are ``params``
    (a pure dict, donated); with ``training.lora``, adapters added and only they trained."""
    seed = training.seed
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: build_model_and_optimizer(cfg, training, seed)))

    def build(loaded: dict[str, Any]) -> nnx.State:
        return nnx.state(build_model_and_optimizer(cfg, training, seed, loaded))

    state = jax.jit(build, out_shardings=replicated(mesh), donate_argnums=0)(params)
    return TrainState(graphdef=graphdef, state=state)


def model_params(graphdef: nnx.GraphDef, state: nnx.State) -> tuple[ModelConfig, dict[str, Any]]:
    """(config, pure-dict parameters) of the model in a train state."""
    model, _ = nnx.merge(graphdef, state)
    return model.cfg, nnx.to_pure_dict(nnx.state(model, nnx.Param))
