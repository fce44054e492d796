"""Does a jitted call's launch hold the GIL while it blocks (a program with more kernels than the driver's
launch queue)? A Python thread counts while the main thread launches, then while it waits in
block_until_ready (which releases the GIL)."""
import threading, time
import jax, jax.numpy as jnp

def make(n):
    def f(x, ws):
        for i in range(n):
            x = jnp.tanh(x @ ws[i % 8]) + x
        return x
    return jax.jit(f)

x = jnp.ones((1024, 1024), jnp.bfloat16)
ws = [jnp.ones((1024, 1024), jnp.bfloat16) * 0.0001 * (i + 1) for i in range(8)]
count, stop = 0, False
def spin():
    global count
    while not stop:
        count += 1
threading.Thread(target=spin, daemon=True).start()
print(jax.devices())
for n in (50, 600, 2500):
    t = time.perf_counter(); f = make(n); jax.block_until_ready(f(x, ws)); print(n, "compile+first s %.1f" % (time.perf_counter() - t), flush=True)
    for rep in range(4):
        c0 = count; t0 = time.perf_counter(); y = f(x, ws); t1 = time.perf_counter(); c1 = count
        jax.block_until_ready(y); t2 = time.perf_counter(); c2 = count
        print(f"n={n} launch {1e3*(t1-t0):.2f} ms, rest {1e3*(t2-t1):.2f} ms; spins/ms during launch "
              f"{(c1-c0)/max(1e-9,1e3*(t1-t0)):.0f}, while waiting {(c2-c1)/max(1e-9,1e3*(t2-t1)):.0f}", flush=True)
    # back to back: two launches, the second while the first runs
    y = f(x, ws); c0 = count; t0 = time.perf_counter(); y2 = f(y, ws); t1 = time.perf_counter(); c1 = count; jax.block_until_ready(y2)
    print(f"n={n} second launch while the first runs: {1e3*(t1-t0):.2f} ms, spins/ms {(c1-c0)/max(1e-9,1e3*(t1-t0)):.0f}", flush=True)
stop = True
