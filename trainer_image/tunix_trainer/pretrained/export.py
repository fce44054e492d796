"""Write a trained model as a Hugging Face directory: ``config.json``, ``model.safetensors`` and,
when the run used a Hugging Face tokenizer, its files (``tokenizer.json``, ``tokenizer_config.json``,
``generation_config.json``, ``special_tokens_map.json``).

The directory is assembled locally (``<dir>.tmp`` next to a local target, a temporary directory for
an object store) and then moved or uploaded, so a reader never sees a half-written model at a local
path; on an object store ``config.json`` is uploaded last, so its presence marks a complete export.
``transformers.AutoModelForCausalLM.from_pretrained(<dir>)`` loads it, as does the trainer
(``spec.model.pretrained.uri``).

A LoRA run (``spec.training.lora``) exports its adapters as PEFT does (``adapter_config.json`` +
``adapter_model.safetensors``, ``tunix_trainer.pretrained.peft``, plus the tokenizer files) to
``<artifacts>/adapter/``; with ``spec.export.mergeAdapters`` also the merged model to
``<artifacts>/model/``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import fsspec

from tunix_api import artifacts
from tunix_api.training import LoraSpec
from tunix_trainer.presets import ModelConfig
from tunix_trainer.pretrained.hf_config import hf_config_from_model
from tunix_trainer.pretrained.peft import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    adapter_config,
    merge_adapters,
    peft_tensors,
)
from tunix_trainer.pretrained.weights import hf_tensors

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "generation_config.json",
    "special_tokens_map.json",
)
MODEL_DIR = artifacts.MODEL_DIR
ADAPTER_DIR = artifacts.ADAPTER_DIR


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
    copy_tokenizer_files(tokenizer_files, local_dir)
    config = hf_config_from_model(cfg, vocab_size, base_config)
    with open(os.path.join(local_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")


def copy_tokenizer_files(tokenizer_files: Any, local_dir: str) -> None:
    """Copy the Hugging Face tokenizer files the model directory has (if any) into ``local_dir``."""
    if tokenizer_files is None:
        return
    for name in TOKENIZER_FILES:
        if tokenizer_files.exists(name):
            shutil.copyfile(tokenizer_files.local_path(name), os.path.join(local_dir, name))


def write_adapter_dir(
    local_dir: str,
    params: dict[str, Any],
    cfg: ModelConfig,
    spec: LoraSpec,
    *,
    base_model: str | None = None,
    revision: str | None = None,
    tokenizer_files: Any = None,
) -> None:
    """Fill ``local_dir`` (created) with the PEFT adapter of ``params`` and the tokenizer files."""
    from safetensors.numpy import save_file

    os.makedirs(local_dir, exist_ok=True)
    tensors = dict(peft_tensors(params, cfg, spec))
    save_file(tensors, os.path.join(local_dir, ADAPTER_WEIGHTS), metadata={"format": "pt"})
    copy_tokenizer_files(tokenizer_files, local_dir)
    with open(os.path.join(local_dir, ADAPTER_CONFIG), "w", encoding="utf-8") as f:
        json.dump(adapter_config(spec, base_model, revision), f, indent=2)
        f.write("\n")


def publish_dir(
    uri: str, fill: Callable[[str], None], *, last: str, storage_options: dict[str, Any] | None = None
) -> str:
    """Have ``fill(local_dir)`` write a directory's files, then put them at ``uri`` (a path or
    fsspec URI), replacing what was there: a local target is swapped in whole, an object store gets
    file ``last`` uploaded last (its presence marks a complete directory). Returns ``uri``."""
    local = uri.removeprefix("file://")
    if "://" not in local:
        tmp = local.rstrip("/") + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        fill(tmp)
        shutil.rmtree(local, ignore_errors=True)
        os.replace(tmp, local)
        return uri
    fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    with tempfile.TemporaryDirectory(prefix="tunix-export-") as tmp:
        fill(tmp)
        for name in sorted(os.listdir(tmp), key=lambda name: name == last):
            fs.put_file(os.path.join(tmp, name), f"{root.rstrip('/')}/{name}")
    return uri


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

    def fill(local_dir: str) -> None:
        write_model_dir(
            local_dir,
            params,
            cfg,
            vocab_size=vocab_size,
            base_config=base_config,
            tokenizer_files=tokenizer_files,
        )

    return publish_dir(uri, fill, last="config.json", storage_options=storage_options)


def export_adapter(
    uri: str,
    params: dict[str, Any],
    cfg: ModelConfig,
    spec: LoraSpec,
    *,
    base_model: str | None = None,
    revision: str | None = None,
    tokenizer_files: Any = None,
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Write the PEFT adapter of ``params`` to directory ``uri``, replacing an earlier export."""

    def fill(local_dir: str) -> None:
        write_adapter_dir(
            local_dir,
            params,
            cfg,
            spec,
            base_model=base_model,
            revision=revision,
            tokenizer_files=tokenizer_files,
        )

    return publish_dir(uri, fill, last=ADAPTER_CONFIG, storage_options=storage_options)


class ModelExporter:
    """Exports the model of a train state to ``uri`` (``<artifacts>/model``); only process 0
    writes (the parameters are replicated, so its local copy is the whole model). ``vocab_size``:
    the embedding rows to write (default: the tokenizer's size, the model's valid ids).

    With ``lora``: the PEFT adapter goes to ``adapter_uri`` (``base_model`` and ``revision`` name
    the base in adapter_config.json), and with ``merge`` the merged model to ``uri``. The call
    returns the URI for ``status.model.uri``: the model's, or the adapter's when nothing is merged.
    """

    def __init__(
        self,
        uri: str,
        graphdef: Any,
        *,
        vocab_size: int | None = None,
        base_config: dict[str, Any] | None = None,
        tokenizer_files: Any = None,
        storage_options: dict[str, Any] | None = None,
        lora: LoraSpec | None = None,
        adapter_uri: str | None = None,
        merge: bool = False,
        base_model: str | None = None,
        revision: str | None = None,
    ) -> None:
        self.uri = uri
        self.graphdef = graphdef
        self.vocab_size = vocab_size
        self.base_config = base_config
        self.tokenizer_files = tokenizer_files
        self.storage_options = storage_options
        self.lora = lora
        self.adapter_uri = adapter_uri
        self.merge = merge
        self.base_model = base_model
        self.revision = revision
        if lora is not None and adapter_uri is None:
            raise ValueError("a LoRA export needs adapter_uri")

    def __call__(self, state: Any) -> str:
        import jax

        from tunix_trainer.pretrained.loader import model_params

        uri = self.adapter_uri if self.lora is not None and not self.merge else self.uri
        if jax.process_index() != 0:
            return uri
        cfg, params = model_params(self.graphdef, state)
        if self.lora is not None:
            export_adapter(
                self.adapter_uri,
                params,
                cfg,
                self.lora,
                base_model=self.base_model,
                revision=self.revision,
                tokenizer_files=self.tokenizer_files,
                storage_options=self.storage_options,
            )
            if not self.merge:
                return uri
            params = merge_adapters(params, cfg, self.lora)
        export_model(
            self.uri,
            params,
            cfg,
            vocab_size=self.vocab_size or cfg.valid_vocab_size or cfg.vocab_size,
            base_config=self.base_config,
            tokenizer_files=self.tokenizer_files,
            storage_options=self.storage_options,
        )
        return uri


def adapter_options(spec: Any, artifacts_uri: str, pretrained: Any) -> dict[str, Any]:
    """The LoRA keywords of :class:`ModelExporter` for a run's ``spec`` (a ``TunixRunSpec``): the
    adapter to ``<artifacts>/adapter``, merged with ``spec.export.mergeAdapters``, its base named
    after the pretrained model (``pretrained``, a ``PretrainedModel`` or None). Empty without LoRA."""
    from tunix_trainer.pretrained.source import HF_SCHEME, parse_hf_uri

    if spec.training.lora is None:
        return {}
    base_model, revision = None, None
    if pretrained is not None:
        base_model = pretrained.files.uri
        if base_model.startswith(HF_SCHEME):
            base_model, revision = parse_hf_uri(base_model)
    return {
        "lora": spec.training.lora,
        "adapter_uri": artifacts.join_uri(artifacts_uri, ADAPTER_DIR),
        "merge": spec.export.merge_adapters,
        "base_model": base_model,
        "revision": revision,
    }
