"""Does a jitted call's launch hold the GIL while it blocks (a program with more kernels than the
driver's launch queue)? A Python thread counts while the main thread launches, then while it waits
in block_until_ready (which releases the GIL). Run on the H200 as
``python3 gil_probe.py`` (2026-11-26, run4 session)."""

import threading
import time

import jax
import jax.numpy as jnp

COUNT = {"spins": 0, "stop": False}


def make(n: int):
    def f(x, ws):
        for i in range(n):
            x = jnp.tanh(x @ ws[i % 8]) + x
        return x

    return jax.jit(f)


def spin() -> None:
    while not COUNT["stop"]:
        COUNT["spins"] += 1


def rate(spins: int, seconds: float) -> float:
    return spins / max(1e-9, 1e3 * seconds)


def main() -> None:
    x = jnp.ones((1024, 1024), jnp.bfloat16)
    ws = [jnp.ones((1024, 1024), jnp.bfloat16) * 0.0001 * (i + 1) for i in range(8)]
    threading.Thread(target=spin, daemon=True).start()
    print(jax.devices())
    for n in (50, 400, 1500):
        t = time.perf_counter()
        f = make(n)
        jax.block_until_ready(f(x, ws))
        print(n, f"compile+first s {time.perf_counter() - t:.1f}", flush=True)
        for _ in range(4):
            c0, t0 = COUNT["spins"], time.perf_counter()
            y = f(x, ws)
            c1, t1 = COUNT["spins"], time.perf_counter()
            jax.block_until_ready(y)
            c2, t2 = COUNT["spins"], time.perf_counter()
            print(
                f"n={n} launch {1e3 * (t1 - t0):.2f} ms, rest {1e3 * (t2 - t1):.2f} ms; spins/ms during "
                f"launch {rate(c1 - c0, t1 - t0):.0f}, while waiting {rate(c2 - c1, t2 - t1):.0f}",
                flush=True,
            )
        y = f(x, ws)  # back to back: the second launch while the first runs
        c0, t0 = COUNT["spins"], time.perf_counter()
        y2 = f(y, ws)
        c1, t1 = COUNT["spins"], time.perf_counter()
        jax.block_until_ready(y2)
        print(
            f"n={n} second launch while the first runs: {1e3 * (t1 - t0):.2f} ms, "
            f"spins/ms {rate(c1 - c0, t1 - t0):.0f}",
            flush=True,
        )
    COUNT["stop"] = True


if __name__ == "__main__":
    main()
