"""The operator's garbage-collector setting (``tunix_operator.__main__.tune_gc``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from tunix_operator.__main__ import GC_YOUNG_THRESHOLD, tune_gc


@pytest.fixture
def saved_thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    yield before
    gc.set_threshold(*before)


def test_tune_gc_raises_the_young_threshold_only(saved_thresholds: tuple[int, int, int]) -> None:
    gc.set_threshold(700, 10, 10)  # CPython's defaults
    tune_gc()
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, 10, 10)
    assert GC_YOUNG_THRESHOLD > 700
