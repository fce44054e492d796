"""The container termination message: how the trainer hands its result to the operator.

The kubelet copies the file at ``terminationMessagePath`` into the pod status and keeps the
first 4 KiB; the operator reads it from there (see docs/DESIGN.md).
"""

from __future__ import annotations

import logging

from tunix_api.artifacts import TERMINATION_MESSAGE_LIMIT

log = logging.getLogger(__name__)


def write_termination_message(path: str | None, text: str) -> None:
    """Replace the termination log with ``text`` cut to the kubelet's limit; never raises."""
    if not path:
        return
    data = text.encode("utf-8")[: TERMINATION_MESSAGE_LIMIT - 1].decode("utf-8", "ignore")
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(data)
    except OSError as exc:
        log.warning("cannot write the termination message to %s: %s", path, exc)
