"""A TCP proxy that holds every HTTP request for a fixed time before passing it on.

Put it between an S3 client and moto's server to give the store a real object store's round
trip (S3 answers a small GET in tens of milliseconds, moto on loopback in a few): each request
is delayed once, when its first bytes arrive, on its own connection, so requests on parallel
connections overlap as they would over a network, and requests on one connection pay the delay
one after another. It counts the requests it passed. HTTP/1.1 without pipelining (boto3).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

__all__ = ["DelayProxy"]

_METHODS = (b"GET ", b"PUT ", b"POST ", b"HEAD ", b"DELETE ", b"PATCH ", b"OPTIONS ")


class DelayProxy:
    def __init__(self, target_host: str, target_port: int, delay_seconds: float) -> None:
        self._target = (target_host, target_port)
        self.delay_seconds = delay_seconds
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._requests = 0
        self._sockets: list[socket.socket] = []
        self._stopped = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    def start(self) -> DelayProxy:
        threading.Thread(target=self._accept, name="delay-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped = True
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if upstream and data.startswith(_METHODS):
                    with self._lock:
                        self._requests += 1
                    time.sleep(self.delay_seconds)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
