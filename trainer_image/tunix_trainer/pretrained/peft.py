"""LoRA adapters <-> PEFT's on-disk format, and merging them into the base weights.

PEFT (``peft.PeftModel.save_pretrained``) writes ``adapter_config.json`` and
``adapter_model.safetensors`` whose tensors are named after the module they adapt, with the
adapter name removed::

    base_model.model.model.layers.<i>.self_attn.q_proj.lora_A.weight   [r, in]   (torch Linear)
    base_model.model.model.layers.<i>.self_attn.q_proj.lora_B.weight   [out, r]

``nnx.LoRA`` holds ``lora_a`` as ``[in, r]`` and ``lora_b`` as ``[r, out]``: PEFT's are their
transposes. The feature order is Hugging Face's on both sides (q/k/v outputs and the o_proj input
are head-major, as ``tunix_trainer.pretrained.weights`` lays out the fused weights), and PEFT's
forward is ``base(x) + lora_B(lora_A(dropout(x))) * lora_alpha / r``, ours too. Merging adds
``(alpha / r) * lora_a @ lora_b`` to the slice of the fused weight the projection occupies.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from tunix_api.training import LoraSpec
from tunix_trainer.lora import ATTENTION_TARGETS, targets
from tunix_trainer.presets import ModelConfig
from tunix_trainer.pretrained.weights import layer_prefix

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."


def _host(x: Any) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(x.addressable_data(0))
    return np.asarray(jax.device_get(x))


def module_name(i: int, target: str) -> str:
    """The Hugging Face module adapted: ``model.layers.<i>.self_attn.q_proj`` etc."""
    group = "self_attn" if target in ATTENTION_TARGETS else "mlp"
    return f"{layer_prefix(i)}{group}.{target}"


def _adapter(params: dict[str, Any], i: int, target: str) -> dict[str, Any]:
    block = params["blocks"][i]
    module = block["attn"] if target in ATTENTION_TARGETS else block["mlp"]
    return module["lora"]["layers"][target]


def peft_tensors(
    params: dict[str, Any], cfg: ModelConfig, spec: LoraSpec
) -> Iterator[tuple[str, np.ndarray]]:
    """(PEFT name, float32 array) of every adapter matrix in a pure-dict ``params``."""
    for i in range(cfg.n_layers):
        for target in targets(spec):
            adapter = _adapter(params, i, target)
            name = PEFT_PREFIX + module_name(i, target)
            yield f"{name}.lora_A.weight", np.ascontiguousarray(_host(adapter["lora_a"]).T, np.float32)
            yield f"{name}.lora_B.weight", np.ascontiguousarray(_host(adapter["lora_b"]).T, np.float32)


def load_peft_tensors(tensors: dict[str, np.ndarray], cfg: ModelConfig, spec: LoraSpec) -> dict[str, Any]:
    """The adapters of PEFT ``tensors`` as a pure dict of ``params``' form (its ``lora`` subtrees)."""
    out: dict[str, Any] = {"blocks": {}}
    for i in range(cfg.n_layers):
        block: dict[str, Any] = {}
        for target in targets(spec):
            name = PEFT_PREFIX + module_name(i, target)
            group = block.setdefault(
                "attn" if target in ATTENTION_TARGETS else "mlp", {"lora": {"layers": {}}}
            )
            group["lora"]["layers"][target] = {
                "lora_a": tensors[f"{name}.lora_A.weight"].T,
                "lora_b": tensors[f"{name}.lora_B.weight"].T,
            }
        out["blocks"][i] = block
    return out


def adapter_config(spec: LoraSpec, base_model: str | None, revision: str | None = None) -> dict[str, Any]:
    """``adapter_config.json`` as PEFT's ``LoraConfig`` writes it for this adapter."""
    return {
        "alpha_pattern": {},
        "base_model_name_or_path": base_model,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "layers_pattern": None,
        "layers_to_transform": None,
        "lora_alpha": float(spec.alpha),
        "lora_dropout": float(spec.dropout),
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": int(spec.rank),
        "rank_pattern": {},
        "revision": revision,
        "target_modules": sorted(targets(spec)),
        "task_type": "CAUSAL_LM",
        "use_dora": False,
        "use_rslora": False,
    }


def merge_adapters(params: dict[str, Any], cfg: ModelConfig, spec: LoraSpec) -> dict[str, Any]:
    """A pure dict of the base layout (no ``lora``) whose weights are the base weights plus
    ``(alpha / r) * lora_a @ lora_b`` of every adapter, summed in float32 and stored in the base
    weights' dtype: the model computes what base + adapters computed."""
    scale = float(spec.alpha) / spec.rank
    h, nh, nk = cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
    merged = {key: value for key, value in params.items() if key != "blocks"}
    merged["blocks"] = {}
    for i in range(cfg.n_layers):
        block = params["blocks"][i]
        attn = {key: _host(value) for key, value in block["attn"].items() if key != "lora"}
        mlp = {key: _host(value) for key, value in block["mlp"].items() if key != "lora"}
        qkv = attn["qkv"].astype(np.float32)
        out = attn["out"].astype(np.float32)
        gate_up = mlp["gate_up"].astype(np.float32)
        down = mlp["down"].astype(np.float32)
        heads = {"q_proj": slice(0, nh), "k_proj": slice(nh, nh + nk), "v_proj": slice(nh + nk, nh + 2 * nk)}
        for target in targets(spec):
            adapter = _adapter(params, i, target)
            delta = scale * (
                _host(adapter["lora_a"]).astype(np.float32) @ _host(adapter["lora_b"]).astype(np.float32)
            )
            if target in heads:
                part = heads[target]
                qkv[:, part, :] += delta.reshape(cfg.d_model, -1, h)
            elif target == "o_proj":
                out += delta.reshape(nh, h, cfg.d_model)
            elif target in ("gate_proj", "up_proj"):
                gate_up[:, 0 if target == "gate_proj" else 1, :] += delta
            else:
                down += delta
        dtype = attn["qkv"].dtype
        merged["blocks"][i] = {
            "attn_norm": block["attn_norm"],
            "attn": {"qkv": qkv.astype(dtype), "out": out.astype(dtype)},
            "mlp_norm": block["mlp_norm"],
            "mlp": {"gate_up": gate_up.astype(dtype), "down": down.astype(dtype)},
        }
    return merged
