"""Benchmark helpers for ``tunix-bench``: statistics, peak FLOPs, MFU, reports, the timing loop.

The pure parts (``stats``, ``hardware``, ``mfu``, ``report``) import no JAX; ``runner`` does.
"""
