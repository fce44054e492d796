"""Hugging Face Llama tensors <-> the parameters of ``tunix_trainer.model.Transformer``.

The two compute the same function; the layouts differ only by transposes and reshapes (no q/k
permutation: both rotate halves). Per layer ``i`` (``W.T`` is HF's ``[out, in]`` transposed)::

    qkv     [d, H + 2K, h]  = concat(q_proj.T, k_proj.T, v_proj.T) reshaped by head
    out     [H, h, d]       = o_proj.T reshaped
    gate_up [d, 2, f]       = stack(gate_proj.T, up_proj.T)
    down    [f, d]          = down_proj.T
    attn_norm / mlp_norm    = input_layernorm / post_attention_layernorm

plus ``embed`` = ``model.embed_tokens`` (and ``head`` = ``lm_head`` when untied), their rows padded
with zeros up to the model's padded vocabulary, and ``final_norm`` = ``model.norm``.

Loading reads one tensor at a time with the ``safetensors`` library (memory-mapped), checks its
shape against ``config.json``, and places it on the mesh at once, so the host never holds more than
one layer's tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from tunix_trainer.data import DataError
from tunix_trainer.presets import ModelConfig

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

Place = Callable[[np.ndarray], jax.Array]


def layer_prefix(i: int) -> str:
    return f"model.layers.{i}."


def hf_shapes(cfg: ModelConfig, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """Every HF tensor name of ``cfg`` with its shape (``vocab_size``: config.json's)."""
    d, h, f = cfg.d_model, cfg.head_dim, cfg.d_ff
    shapes = {"model.embed_tokens.weight": (vocab_size, d), "model.norm.weight": (d,)}
    if not cfg.tie_embeddings:
        shapes["lm_head.weight"] = (vocab_size, d)
    for i in range(cfg.n_layers):
        p = layer_prefix(i)
        shapes |= {
            p + "input_layernorm.weight": (d,),
            p + "post_attention_layernorm.weight": (d,),
            p + "self_attn.q_proj.weight": (cfg.n_heads * h, d),
            p + "self_attn.k_proj.weight": (cfg.n_kv_heads * h, d),
            p + "self_attn.v_proj.weight": (cfg.n_kv_heads * h, d),
            p + "self_attn.o_proj.weight": (d, cfg.n_heads * h),
            p + "mlp.gate_proj.weight": (f, d),
            p + "mlp.up_proj.weight": (f, d),
            p + "mlp.down_proj.weight": (d, f),
        }
    return shapes


class TensorReader:
    """Reads named tensors from a model's safetensors file(s), each checked against its expected
    shape; a sharded model's index maps names to shard files (fetched as first needed)."""

    def __init__(self, files: Any, shapes: dict[str, tuple[int, ...]]) -> None:
        self.files = files
        self.shapes = shapes
        if files.exists(INDEX_FILE):
            index = files.read_json(INDEX_FILE)
            weight_map = index.get("weight_map")
            if not isinstance(weight_map, dict):
                raise DataError(f"{files.describe(INDEX_FILE)}: no weight_map object")
            self.weight_map: dict[str, str] = weight_map
            self.index = INDEX_FILE
        else:
            self.index = None
            self.weight_map = {}
        self._open: dict[str, Any] = {}

    def _handle(self, shard: str) -> Any:
        from safetensors import safe_open

        if shard not in self._open:
            if self.index is not None and not self.files.exists(shard):
                raise DataError(f"{self.files.describe(shard)}: shard listed in {self.index} is missing")
            path = self.files.local_path(shard)
            try:
                self._open[shard] = safe_open(path, framework="numpy")
            except Exception as exc:  # safetensors raises SafetensorError for corrupt headers
                raise DataError(f"{self.files.describe(shard)}: not a safetensors file ({exc})") from exc
        return self._open[shard]

    def read(self, name: str, dtype: Any) -> np.ndarray:
        """Tensor ``name`` as ``dtype``; DataError naming the file and tensor when it is missing or
        has the wrong shape."""
        if self.index is not None:
            shard = self.weight_map.get(name)
            if shard is None:
                raise DataError(f"{self.files.describe(self.index)}: no shard for tensor {name!r}")
        else:
            shard = SINGLE_FILE
        handle = self._handle(shard)
        if name not in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
            raise DataError(f"{self.files.describe(shard)}: tensor {name!r} is missing")
        array = handle.get_tensor(name)
        if tuple(array.shape) != self.shapes[name]:
            raise DataError(
                f"{self.files.describe(shard)}: tensor {name!r} has shape {tuple(array.shape)}, "
                f"config.json implies {self.shapes[name]}"
            )
        return array.astype(dtype, copy=False)


def _pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    if array.shape[0] == rows:
        return array
    out = np.zeros((rows, *array.shape[1:]), array.dtype)
    out[: array.shape[0]] = array
    return out


def load_params(files: Any, cfg: ModelConfig, vocab_size: int, place: Place) -> dict[str, Any]:
    """The model's parameters as a pure nested dict (``nnx.replace_by_pure_dict`` form), each array
    already placed by ``place`` (numpy -> device array)."""
    reader = TensorReader(files, hf_shapes(cfg, vocab_size))
    dtype = np.dtype(cfg.param_dtype)

    def get(name: str) -> np.ndarray:
        return reader.read(name, dtype)

    h = cfg.head_dim
    params: dict[str, Any] = {
        "embed": place(_pad_rows(get("model.embed_tokens.weight"), cfg.vocab_size)),
        "final_norm": {"scale": place(get("model.norm.weight"))},
        "blocks": {},
    }
    if not cfg.tie_embeddings:
        params["head"] = place(_pad_rows(get("lm_head.weight"), cfg.vocab_size))
    for i in range(cfg.n_layers):
        p = layer_prefix(i)
        q, k, v = (get(p + f"self_attn.{n}_proj.weight").T for n in "qkv")
        qkv = np.concatenate([q, k, v], axis=1).reshape(cfg.d_model, cfg.n_heads + 2 * cfg.n_kv_heads, h)
        gate_up = np.stack([get(p + "mlp.gate_proj.weight").T, get(p + "mlp.up_proj.weight").T], axis=1)
        params["blocks"][i] = {
            "attn_norm": {"scale": place(get(p + "input_layernorm.weight"))},
            "attn": {
                "qkv": place(qkv),
                "out": place(get(p + "self_attn.o_proj.weight").T.reshape(cfg.n_heads, h, cfg.d_model)),
            },
            "mlp_norm": {"scale": place(get(p + "post_attention_layernorm.weight"))},
            "mlp": {
                "gate_up": place(gate_up),
                "down": place(np.ascontiguousarray(get(p + "mlp.down_proj.weight").T)),
            },
        }
    return params


def hf_tensors(params: dict[str, Any], cfg: ModelConfig, vocab_size: int) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, array) for a pure-dict ``params`` of ``cfg`` (arrays fetched one at a time), the
    vocabulary cut to ``vocab_size`` rows: the inverse of ``load_params``."""

    def host(x: Any) -> np.ndarray:  # a replicated array's local copy (multi-process too)
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(jax.device_get(x))

    def hf(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x)

    d, h, nh, nk = cfg.d_model, cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
    yield "model.embed_tokens.weight", hf(host(params["embed"])[:vocab_size])
    for i in range(cfg.n_layers):
        p, block = layer_prefix(i), params["blocks"][i]
        qkv = host(block["attn"]["qkv"]).reshape(d, (nh + 2 * nk) * h)
        q, k, v = np.split(qkv, [nh * h, (nh + nk) * h], axis=1)
        gate_up = host(block["mlp"]["gate_up"])
        yield p + "input_layernorm.weight", hf(host(block["attn_norm"]["scale"]))
        yield p + "self_attn.q_proj.weight", hf(q.T)
        yield p + "self_attn.k_proj.weight", hf(k.T)
        yield p + "self_attn.v_proj.weight", hf(v.T)
        yield p + "self_attn.o_proj.weight", hf(host(block["attn"]["out"]).reshape(nh * h, d).T)
        yield p + "post_attention_layernorm.weight", hf(host(block["mlp_norm"]["scale"]))
        yield p + "mlp.gate_proj.weight", hf(gate_up[:, 0].T)
        yield p + "mlp.up_proj.weight", hf(gate_up[:, 1].T)
        yield p + "mlp.down_proj.weight", hf(host(block["mlp"]["down"]).T)
    yield "model.norm.weight", hf(host(params["final_norm"]["scale"]))
    if not cfg.tie_embeddings:
        yield "lm_head.weight", hf(host(params["head"])[:vocab_size])
