"""A loopback TCP proxy that can simulate a storage outage, for tests.

``OutageProxy(upstream_port)`` listens on 127.0.0.1 and forwards each connection to the
upstream port. ``refuse()`` closes the listener and every open connection (new connections get
ECONNREFUSED); ``black_hole()`` keeps accepting but forwards nothing either way (requests hang
until the client's timeout); ``restore()`` goes back to forwarding. Threads only, loopback only,
at most ``max_connections`` at a time; ``close()`` stops everything.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading

UP, REFUSE, BLACK_HOLE = "up", "refuse", "black-hole"


class OutageProxy:
    def __init__(self, upstream_port: int, *, max_connections: int = 64) -> None:
        self.upstream_port = upstream_port
        self.max_connections = max_connections
        self.mode = UP
        self.accepted_in_outage = 0
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._closed = False
        self._listener = self._listen(0)
        self.port = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True, name="outage-proxy")
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- control ---------------------------------------------------------------------------------
    def refuse(self) -> None:
        with self._lock:
            self.mode = REFUSE
            listener, self._listener = self._listener, None
            self._drop_connections()
        _stop_listening(listener)

    def black_hole(self) -> None:
        with self._lock:
            self.mode = BLACK_HOLE

    def restore(self) -> None:
        with self._lock:
            if self._listener is None:
                self._listener = self._listen(self.port)
            if self.mode == BLACK_HOLE:
                self._drop_connections()  # their requests were swallowed; the clients retry
            self.mode = UP

    def close(self) -> None:
        with self._lock:
            self._closed = True
            listener, self._listener = self._listener, None
            self._drop_connections()
        _stop_listening(listener)
        self._acceptor.join(timeout=5)

    # -- internals -------------------------------------------------------------------------------
    @staticmethod
    def _listen(port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(16)
        sock.settimeout(0.1)
        return sock

    def _drop_connections(self) -> None:
        for conn in list(self._conns):
            with contextlib.suppress(OSError):
                conn.close()
        self._conns.clear()

    def _accept_loop(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                listener = self._listener
            if listener is None:
                threading.Event().wait(0.05)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                if len(self._conns) >= 2 * self.max_connections:
                    client.close()
                    continue
                if self.mode != UP:
                    self.accepted_in_outage += 1
                self._conns.add(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            self._conns.add(upstream)
        pair = {client: upstream, upstream: client}
        try:
            while True:
                readable, _, _ = select.select(list(pair), [], [], 0.1)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if self.mode == UP:
                        pair[sock].sendall(data)
                    # in a black hole the bytes are swallowed
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._conns.discard(client)
                self._conns.discard(upstream)
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.close()


def _stop_listening(listener: socket.socket | None) -> None:
    """Refuse new connections at once: a thread blocked in accept() keeps a merely closed listener
    accepting until that call returns; shutdown() wakes it and makes the kernel refuse."""
    if listener is None:
        return
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    listener.close()
