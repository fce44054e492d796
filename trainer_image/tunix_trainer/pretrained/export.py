"""Write a trained model as a Hugging Face directory: ``config.json``, ``model.safetensors`` and,
when the run used a Hugging Face tokenizer, its files (``tokenizer.json``, ``tokenizer_config.json``,
``generation_config.json``, ``special_tokens_map.json``).

The directory is assembled locally (``<dir>.tmp`` next to a local target, a temporary directory for
an object store) and then moved or uploaded, so a reader never sees a half-written model at a local
path; on an object store ``config.json`` is uploaded last, so its presence marks a complete export.
``transformers.AutoModelForCausalLM.from_pretrained(<dir>)`` loads it, as does the trainer
(``spec.model.pretrained.uri``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

import fsspec

from tunix_api import artifacts
from tunix_trainer.presets import ModelConfig
from tunix_trainer.pretrained.hf_config import hf_config_from_model
from tunix_trainer.pretrained.weights import hf_tensors

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "generation_config.json",
    "special_tokens_map.json",
)
MODEL_DIR = artifacts.MODEL_DIR


def write_model_dir(
    local_dir: str,
    params: dict[str, Any],
    cfg: ModelConfig,
    *,
    vocab_size: int,
    base_config: dict[str, Any] | None = None,
    tokenizer_files: Any = None,
) -> None:
    """Fill ``local_dir`` (created) with the model's files; ``vocab_size`` rows of the embedding
    are written (config.json's ``vocab_size``)."""
    from safetensors.numpy import save_file

    os.makedirs(local_dir, exist_ok=True)
    tensors = dict(hf_tensors(params, cfg, vocab_size))
    save_file(tensors, os.path.join(local_dir, "model.safetensors"), metadata={"format": "pt"})
    del tensors
    if tokenizer_files is not None:
        for name in TOKENIZER_FILES:
            if tokenizer_files.exists(name):
                shutil.copyfile(tokenizer_files.local_path(name), os.path.join(local_dir, name))
    config = hf_config_from_model(cfg, vocab_size, base_config)
    with open(os.path.join(local_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")


def export_model(
    uri: str,
    params: dict[str, Any],
    cfg: ModelConfig,
    *,
    vocab_size: int,
    base_config: dict[str, Any] | None = None,
    tokenizer_files: Any = None,
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Write the model to directory ``uri`` (a path or fsspec URI), replacing an earlier export;
    returns ``uri``."""
    kwargs = dict(vocab_size=vocab_size, base_config=base_config, tokenizer_files=tokenizer_files)
    local = uri.removeprefix("file://")
    if "://" not in local:
        tmp = local.rstrip("/") + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        write_model_dir(tmp, params, cfg, **kwargs)
        shutil.rmtree(local, ignore_errors=True)
        os.replace(tmp, local)
        return uri
    fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    with tempfile.TemporaryDirectory(prefix="tunix-export-") as tmp:
        write_model_dir(tmp, params, cfg, **kwargs)
        names = sorted(os.listdir(tmp), key=lambda name: name == "config.json")  # config.json last
        for name in names:
            fs.put_file(os.path.join(tmp, name), f"{root.rstrip('/')}/{name}")
    return uri


class ModelExporter:
    """Exports the model of a train state to ``uri`` (``<artifacts>/model``); only process 0
    writes (the parameters are replicated, so its local copy is the whole model). ``vocab_size``:
    the embedding rows to write (default: the tokenizer's size, the model's valid ids)."""

    def __init__(
        self,
        uri: str,
        graphdef: Any,
        *,
        vocab_size: int | None = None,
        base_config: dict[str, Any] | None = None,
        tokenizer_files: Any = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.uri = uri
        self.graphdef = graphdef
        self.vocab_size = vocab_size
        self.base_config = base_config
        self.tokenizer_files = tokenizer_files
        self.storage_options = storage_options

    def __call__(self, state: Any) -> str:
        import jax

        from tunix_trainer.pretrained.loader import model_params

        if jax.process_index() == 0:
            cfg, params = model_params(self.graphdef, state)
            export_model(
                self.uri,
                params,
                cfg,
                vocab_size=self.vocab_size or cfg.valid_vocab_size or cfg.vocab_size,
                base_config=self.base_config,
                tokenizer_files=self.tokenizer_files,
                storage_options=self.storage_options,
            )
        return self.uri
