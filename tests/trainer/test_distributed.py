"""Multi-process start-up and stopping, the parts that need no second process (those: test_multiprocess)."""

from __future__ import annotations

from tunix_trainer.devices import DistributedConfig, StopAgreement, coordinator_bind_address


def test_process_0_serves_the_coordinator_on_the_address_its_name_resolves_to() -> None:
    assert coordinator_bind_address(DistributedConfig("127.0.0.1:8476", 2, 0)) == "127.0.0.1:8476"
    assert coordinator_bind_address(DistributedConfig("localhost:9000", 2, 0)) == "127.0.0.1:9000"


def test_no_bind_address_for_other_processes_or_an_unresolvable_name() -> None:
    assert coordinator_bind_address(DistributedConfig("127.0.0.1:8476", 2, 1)) is None
    assert coordinator_bind_address(DistributedConfig("no-such-host.invalid:8476", 2, 0)) is None


def test_one_process_stops_when_asked() -> None:
    agree = StopAgreement()
    assert agree(3, False) is False
    assert agree(4, True) is True
