"""tunix_operator.poller: quiet runs' files checked on a schedule, off the event loop."""

from __future__ import annotations

import threading
import time

from tunix_operator.poller import Poller

TICK = 0.02
TIMEOUT = 30.0  # generous: the machine is shared


class Checks:
    """A check that answers from ``answers`` (then "nothing new"), recording every call."""

    def __init__(self, *answers: bool | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[str] = []
        self.changed: list[str] = []
        self.done = threading.Event()

    def check(self, key: str) -> bool:
        self.calls.append(key)
        answer = self.answers.pop(0) if self.answers else False
        if isinstance(answer, Exception):
            raise answer
        return answer

    def on_changed(self, key: str) -> None:
        self.changed.append(key)
        self.done.set()


def wait_for(condition, timeout: float = TIMEOUT) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(TICK / 2)


def test_checks_repeat_until_something_is_new_then_stop() -> None:
    checks = Checks(False, False, True)
    poller = Poller(checks.check, checks.on_changed, workers=2)
    poller.schedule("a", TICK)
    assert checks.done.wait(TIMEOUT)
    assert checks.calls == ["a", "a", "a"] and checks.changed == ["a"]
    time.sleep(5 * TICK)
    assert checks.calls == ["a", "a", "a"] and len(poller) == 0  # left the schedule
    poller.stop()


def test_a_cancelled_key_is_not_checked() -> None:
    checks = Checks()
    poller = Poller(checks.check, checks.on_changed, workers=2)
    poller.schedule("a", TICK)
    poller.schedule("b", TICK)
    poller.cancel("a")
    wait_for(lambda: checks.calls.count("b") >= 3)
    assert "a" not in checks.calls and len(poller) == 1
    poller.stop()


def test_scheduling_again_replaces_the_interval() -> None:
    checks = Checks()
    poller = Poller(checks.check, checks.on_changed, workers=1)
    poller.schedule("a", 3600)
    poller.schedule("a", TICK)
    wait_for(lambda: len(checks.calls) >= 2)
    poller.stop()


def test_a_check_that_raises_counts_as_new() -> None:
    checks = Checks(RuntimeError("storage exploded"))
    poller = Poller(checks.check, checks.on_changed, workers=1)
    poller.schedule("a", TICK)
    assert checks.done.wait(TIMEOUT) and checks.changed == ["a"]
    poller.stop()


def test_nothing_is_checked_after_stop() -> None:
    checks = Checks()
    poller = Poller(checks.check, checks.on_changed, workers=1)
    poller.schedule("a", TICK)
    wait_for(lambda: len(checks.calls) >= 1)
    poller.stop()
    time.sleep(3 * TICK)
    calls = len(checks.calls)
    poller.schedule("b", TICK)
    time.sleep(5 * TICK)
    assert len(checks.calls) <= calls + 1  # at most one check already running at the stop
    assert "b" not in checks.calls


def test_no_check_at_or_after_the_callers_own_decision() -> None:
    checks = Checks()
    poller = Poller(checks.check, checks.on_changed, workers=2)
    poller.schedule("now", TICK, until=TICK)  # the daemon decides (and reads) when the check is due
    assert len(poller) == 0
    poller.schedule("a", TICK, until=2.5 * TICK)
    wait_for(lambda: len(poller) == 0)  # the check due after until was not scheduled
    calls = list(checks.calls)
    time.sleep(5 * TICK)
    assert checks.calls == calls and 1 <= calls.count("a") <= 2 and "now" not in calls
    poller.stop()
