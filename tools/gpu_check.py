#!/usr/bin/env python3
"""GPU correctness checks for the trainer (run on a machine with a CUDA GPU; exits 1 on a failure).

    PYTHONPATH=api:trainer_image python tools/gpu_check.py

1. ``choose_attention_impl`` picks cuDNN for every preset in bf16 (XLA for float32).
2. cuDNN attention equals XLA attention (causal, grouped-query heads) on fresh random bf16
   inputs, forward and gradients, against a float32 reference: relative error of each below
   ``BF16_TOL``, and the cuDNN error no worse than 2x the XLA error.
3. A whole ``125m``-shaped model (3 layers) gives the same logits and gradients with either
   kernel, and one training step on the GPU gives the same loss as on the CPU (float32).
"""

from __future__ import annotations

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tunix_api.training import ModelSpec
from tunix_trainer.model import PRESETS, Transformer, choose_attention_impl, resolve_model_config

BF16_TOL = 2e-2
failures: list[str] = []


def check(name: str, ok: bool, detail: str) -> None:
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    if not ok:
        failures.append(name)


def rel_err(out: jax.Array, ref: jax.Array) -> float:
    out64, ref64 = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(out64 - ref64) / np.linalg.norm(ref64))


def check_kernel_choice() -> None:
    for preset in PRESETS:
        for dtype, expected in (("bfloat16", "cudnn"), ("float32", "xla")):
            cfg = resolve_model_config(
                ModelSpec(preset=preset), tokenizer_vocab_size=259, compute_dtype=dtype
            )
            chosen = choose_attention_impl(cfg, "gpu").attention_impl
            check(f"kernel choice {preset}/{dtype}", chosen == expected, f"{chosen} (expected {expected})")


def check_attention(seed: int, b: int, t: int, n: int, k: int, h: int) -> None:
    keys = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(keys[0], (b, t, n, h), jnp.float32)
    kk = jax.random.normal(keys[1], (b, t, k, h), jnp.float32)
    v = jax.random.normal(keys[2], (b, t, k, h), jnp.float32)
    cot = jax.random.normal(keys[3], (b, t, n, h), jnp.float32)

    def run(impl, dtype):
        def f(q, kk, v):
            out = jax.nn.dot_product_attention(
                q.astype(dtype), kk.astype(dtype), v.astype(dtype), is_causal=True, implementation=impl
            )
            return jnp.sum(out.astype(jnp.float32) * cot), out

        (_, out), grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))(q, kk, v)
        return out, grads

    ref_out, ref_grads = run("xla", jnp.float32)
    shape = f"B{b} T{t} H{n}/{k} d{h}"
    errors = {}
    for impl in ("cudnn", "xla"):
        out, grads = run(impl, jnp.bfloat16)
        errs = [rel_err(out, ref_out)] + [rel_err(g, r) for g, r in zip(grads, ref_grads, strict=True)]
        finite = all(bool(jnp.all(jnp.isfinite(x.astype(jnp.float32)))) for x in (out, *grads))
        check(
            f"attention {impl} bf16 vs f32 ({shape})",
            finite and max(errs) < BF16_TOL,
            "out/dq/dk/dv rel err " + " ".join(f"{e:.2e}" for e in errs),
        )
        errors[impl] = errs
    check(
        f"attention cudnn no worse than xla ({shape})",
        all(c <= 2 * x + 1e-3 for c, x in zip(errors["cudnn"], errors["xla"], strict=True)),
        f"cudnn {max(errors['cudnn']):.2e} vs xla {max(errors['xla']):.2e}",
    )


def check_model(seed: int) -> None:
    base = resolve_model_config(ModelSpec(preset="125m", nLayers=3), tokenizer_vocab_size=259)
    tokens = jax.random.randint(jax.random.key(seed), (4, 512), 0, base.vocab_size, dtype=jnp.int32)
    targets = jnp.roll(tokens, -1, axis=1)

    def loss_and_grads(cfg, device):
        with jax.default_device(device):
            model = Transformer(cfg, rngs=nnx.Rngs(seed))
            graphdef, params = nnx.split(model)

            def loss(p):
                logits = nnx.merge(graphdef, p)(tokens).astype(jnp.float32)
                logp = jax.nn.log_softmax(logits)
                return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1)), logits

            (value, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
            return value, logits, grads

    gpu = jax.devices("gpu")[0]
    results = {}
    for impl in ("cudnn", "xla"):
        results[impl] = loss_and_grads(dataclasses.replace(base, attention_impl=impl), gpu)
    (l_c, logits_c, g_c), (l_x, logits_x, g_x) = results["cudnn"], results["xla"]
    grad_err = max(rel_err(a, b) for a, b in zip(jax.tree.leaves(g_c), jax.tree.leaves(g_x), strict=True))
    check(
        "125m x3 layers cudnn vs xla (bf16)",
        rel_err(logits_c, logits_x) < BF16_TOL and grad_err < 5 * BF16_TOL and abs(float(l_c - l_x)) < 1e-2,
        f"loss {float(l_c):.5f} vs {float(l_x):.5f}, logits rel err {rel_err(logits_c, logits_x):.2e}, "
        f"max grad rel err {grad_err:.2e}",
    )
    f32 = dataclasses.replace(base, dtype=jnp.float32, attention_impl="xla")
    with jax.default_matmul_precision("float32"):  # no TF32 on the GPU side
        l_gpu = loss_and_grads(f32, gpu)[0]
        l_cpu = loss_and_grads(f32, jax.devices("cpu")[0])[0]
    check(
        "125m x3 layers float32 loss GPU vs CPU",
        abs(float(l_gpu) - float(l_cpu)) < 1e-3 * abs(float(l_cpu)),
        f"{float(l_gpu):.6f} vs {float(l_cpu):.6f}",
    )


def main() -> int:
    if jax.devices()[0].platform != "gpu":
        print("no GPU: nothing checked", file=sys.stderr)
        return 1
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}")
    check_kernel_choice()
    check_attention(1, 2, 1024, 12, 12, 64)  # 125m heads
    check_attention(2, 2, 2048, 32, 8, 64)  # 1b (grouped-query) heads
    check_model(3)
    print(f"{len(failures)} failure(s)" + (f": {failures}" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
