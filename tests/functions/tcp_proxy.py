"""A tiny TCP proxy on 127.0.0.1 that injects network faults between a client and a server.

Put it between boto3 and moto's server (or any HTTP/1.1 pair that does not pipeline) and tell it
what to break: `reset_requests(times, match)` resets the connection when a matching request
arrives (it never reaches the server); `lose_responses(times, match)` lets a matching request
through, then resets the connection instead of passing the server's answer on (the write
happened, the client never hears of it); `stall(match)` holds matching requests until released
or the client gives up. `times=None` means every matching request. `match` is compared with the
start of the request (`b"PUT /bucket/root/output/inference/"`).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field


@dataclass
class _Fault:
    kind: str  # "reset", "lose", "stall"
    match: bytes
    times: int | None

    def take(self, data: bytes) -> bool:
        """Whether this fault applies to a request starting with `data` (and count it)."""
        if not data.startswith(self.match) or self.times == 0:
            return False
        if self.times is not None:
            self.times -= 1
        return True


@dataclass
class _Connection:
    client: socket.socket
    server: socket.socket
    lose_next_response: bool = False
    closed: threading.Event = field(default_factory=threading.Event)


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the peer sees 'connection reset', not a clean close."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._stopping = False
        self.requests_seen: list[bytes] = []  # the first line of every request
        self.resets = 0
        self.lost_responses = 0

    @property
    def url(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self) -> TcpProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self._release.set()
        with contextlib.suppress(OSError):
            self._listener.close()

    # -- faults --------------------------------------------------------------------------------

    def heal(self) -> None:
        with self._lock:
            self._faults.clear()
        self._release.set()

    def reset_requests(self, times: int | None = 1, match: bytes = b"") -> None:
        self._add(_Fault("reset", match, times))

    def lose_responses(self, times: int | None = 1, match: bytes = b"") -> None:
        self._add(_Fault("lose", match, times))

    def stall(self, match: bytes = b"", times: int | None = None) -> None:
        self._release.clear()
        self._add(_Fault("stall", match, times))

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _fault_for(self, data: bytes) -> str | None:
        with self._lock:
            for fault in self._faults:
                if fault.take(data):
                    return fault.kind
        return None

    # -- plumbing ------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._target, timeout=5)
            except OSError:
                _reset(client)
                continue
            server.settimeout(None)
            connection = _Connection(client, server)
            threading.Thread(target=self._upstream, args=(connection,), daemon=True).start()
            threading.Thread(target=self._downstream, args=(connection,), daemon=True).start()

    def _close(self, connection: _Connection, *, reset_client: bool = False) -> None:
        connection.closed.set()
        if reset_client:
            _reset(connection.client)
        else:
            with contextlib.suppress(OSError):
                connection.client.close()
        with contextlib.suppress(OSError):
            connection.server.close()

    def _upstream(self, connection: _Connection) -> None:
        """Client to server: each read that starts a request is checked against the faults."""
        try:
            while True:
                data = connection.client.recv(65536)
                if not data:
                    break
                if data[:8].split(b" ", 1)[0] in (b"GET", b"PUT", b"POST", b"HEAD", b"DELETE"):
                    with self._lock:
                        self.requests_seen.append(data.split(b"\r\n", 1)[0])
                    kind = self._fault_for(data)
                    if kind == "reset":
                        with self._lock:
                            self.resets += 1
                        self._close(connection, reset_client=True)
                        return
                    if kind == "stall":
                        # Hold the request; if the client gives up meanwhile, it never arrives.
                        held = self._hold(connection)
                        if held is None:
                            self._close(connection)
                            return
                        data += held
                    if kind == "lose":
                        connection.lose_next_response = True
                connection.server.sendall(data)
        except OSError:
            pass
        self._close(connection)

    def _hold(self, connection: _Connection) -> bytes | None:
        """Read and keep what the client sends until released; None if the client left."""
        held = b""
        connection.client.settimeout(0.05)
        try:
            while not self._release.is_set() and not self._stopping:
                try:
                    more = connection.client.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return None
                if not more:
                    return None
                held += more
        finally:
            with contextlib.suppress(OSError):
                connection.client.settimeout(None)
        return None if self._stopping else held

    def _downstream(self, connection: _Connection) -> None:
        """Server to client: a response the client must not get is turned into a reset."""
        try:
            while True:
                data = connection.server.recv(65536)
                if not data:
                    break
                if connection.lose_next_response and not data.startswith(b"HTTP/1.1 100 "):
                    connection.lose_next_response = False
                    with self._lock:
                        self.lost_responses += 1
                    self._close(connection, reset_client=True)
                    return
                connection.client.sendall(data)
        except OSError:
            pass
        self._close(connection)
