"""Device selection, multi-process start-up and the data-parallel mesh.

Multi-process (multi-host) JAX is configured from the environment, read by
``distributed_config``:

- ``TUNIX_COORDINATOR_ADDRESS`` (``host:port`` of process 0), else ``JAX_COORDINATOR_ADDRESS``;
- ``TUNIX_NUM_PROCESSES``, else ``JAX_NUM_PROCESSES``;
- ``TUNIX_PROCESS_ID``, else ``JOB_COMPLETION_INDEX`` (a Kubernetes Indexed Job), else ``JAX_PROCESS_ID``.

The operator sets the ``TUNIX_*`` variables. Without a coordinator address, or with one process,
the trainer runs single-process. On the CPU the processes' collectives go over TCP with gloo (JAX's
default ``jax_cpu_collectives_implementation``, set explicitly here).

Stopping: every process of a multi-process run must stop, and save, after the same step. JAX's
preemption service (on by default) owns SIGTERM once ``jax.distributed.initialize`` ran: a SIGTERM to
any process is propagated to all, and ``reached_preemption_sync_point`` names one step at which all
of them stop (``StopAgreement``).
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from tunix_api.training import DeviceKind
from tunix_trainer.errors import ConfigError, DeviceUnavailableError

DATA_AXIS = "data"
# Preference order for kind "auto".
_AUTO_ORDER = (DeviceKind.TPU, DeviceKind.GPU, DeviceKind.CPU)


@dataclass(frozen=True)
class DistributedConfig:
    coordinator_address: str
    num_processes: int
    process_id: int


def available_platforms() -> list[str]:
    """Device kinds JAX can use here, best first (e.g. ``["gpu", "cpu"]``)."""
    return [kind.value for kind in _AUTO_ORDER if _devices_of(kind.value)]


def select_devices(kind: DeviceKind | str) -> list[jax.Device]:
    """All (global) devices of ``kind``; ``auto`` picks the best of tpu > gpu > cpu.

    Raises DeviceUnavailableError, naming what is available, when ``kind`` is absent.
    """
    kind = DeviceKind(kind)
    candidates = _AUTO_ORDER if kind == DeviceKind.AUTO else (kind,)
    for candidate in candidates:
        devices = _devices_of(candidate.value)
        if devices:
            return devices
    available = ", ".join(available_platforms()) or "none"
    raise DeviceUnavailableError(
        f"spec.device.kind is {kind.value} but no {kind.value} device is present (available: {available})"
    )


def make_mesh(devices: Sequence[jax.Device]) -> Mesh:
    """A 1-D mesh over ``devices`` with the single axis ``"data"`` (pure data parallelism)."""
    return Mesh(np.asarray(list(devices)), axis_names=(DATA_AXIS,))


def distributed_config(env: Mapping[str, str]) -> DistributedConfig | None:
    """The multi-process settings in ``env``, or None for a single-process run."""
    address = env.get("TUNIX_COORDINATOR_ADDRESS") or env.get("JAX_COORDINATOR_ADDRESS")
    if not address:
        return None
    num_processes = _int_env(env, "TUNIX_NUM_PROCESSES", "JAX_NUM_PROCESSES")
    if num_processes is None or num_processes <= 1:
        return None
    process_id = _int_env(env, "TUNIX_PROCESS_ID", "JOB_COMPLETION_INDEX", "JAX_PROCESS_ID")
    if process_id is None:
        raise ConfigError(
            "TUNIX_PROCESS_ID (or JOB_COMPLETION_INDEX) is required with TUNIX_NUM_PROCESSES > 1"
        )
    if not 0 <= process_id < num_processes:
        raise ConfigError(f"process id {process_id} is outside 0..{num_processes - 1}")
    return DistributedConfig(address, num_processes, process_id)


def maybe_initialize_distributed(env: Mapping[str, str] | None = None) -> DistributedConfig | None:
    """Call ``jax.distributed.initialize`` when the environment describes a multi-process run.

    Must run before anything touches a JAX backend.
    """
    config = distributed_config(os.environ if env is None else env)
    if config is not None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # a CPU device's collectives
        jax.distributed.initialize(
            coordinator_address=config.coordinator_address,
            num_processes=config.num_processes,
            process_id=config.process_id,
            coordinator_bind_address=coordinator_bind_address(config),
        )
    return config


def coordinator_bind_address(config: DistributedConfig) -> str | None:
    """Where process 0 serves the coordinator: the address its name resolves to (the pod's IP, from
    the pod's hosts file), not every interface, so that a process of an earlier attempt still dialing
    its own coordinator can never reach this one where pods share a network namespace (hostNetwork,
    the test cluster's process kubelet). None for other processes, or when the name does not resolve
    (yet): JAX then binds every interface."""
    if config.process_id != 0:
        return None
    host, _, port = config.coordinator_address.rpartition(":")
    try:
        return f"{socket.gethostbyname(host)}:{port}"
    except OSError:
        return None


class StopAgreement:
    """Decides, once per step and on every process, whether to stop after the steps done so far.

    One process: when a stop was requested (SIGTERM or SIGINT set the loop's event). Several: at the
    step JAX's preemption service agrees on after a SIGTERM to any of them; a local request (SIGINT)
    becomes such a notice through a SIGTERM this process sends itself, which JAX's notifier catches.
    Without the preemption service the processes gather their requests at every step instead (a
    collective: the host then waits for each step to finish).
    """

    def __init__(self) -> None:
        self._notice_sent = False

    def __call__(self, step: int, requested: bool) -> bool:
        if jax.process_count() == 1:
            return requested
        if jax.distributed.is_initialized() and jax.config.jax_enable_preemption_service:
            if requested and not self._notice_sent:
                self._notice_sent = True
                os.kill(os.getpid(), signal.SIGTERM)
            return multihost_utils.reached_preemption_sync_point(step)
        flags = multihost_utils.process_allgather(np.asarray(requested, np.int32))
        return bool(np.any(flags))


def _devices_of(platform: str) -> list[jax.Device]:
    try:
        return list(jax.devices(platform))
    except RuntimeError:  # backend absent or failed to initialise
        return []


def _int_env(env: Mapping[str, str], *names: str) -> int | None:
    for name in names:
        value = env.get(name)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError as exc:
                raise ConfigError(f"{name} must be an integer, got {value!r}") from exc
    return None
