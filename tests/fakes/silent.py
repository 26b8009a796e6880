"""A silent endpoint for tests: a socket on 127.0.0.1 that accepts every connection and never answers.

It is what a hung server, a stuck proxy or a firewall that black-holes traffic looks like to a client: the TCP
connection opens at once, then nothing comes back. A client without a read timeout waits forever.

    with SilentEndpoint() as silent:
        os.environ["HF_ENDPOINT"] = silent.endpoint   # http://127.0.0.1:<port>
"""

from __future__ import annotations

import socket
import threading
from typing import Any, Self


class SilentEndpoint:
    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.05)  # so that the accept loop sees the end of the test
        self._held: list[socket.socket] = []  # accepted and never answered; closed on exit
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="silent-endpoint", daemon=True)
        self.connections = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:  # the listener was closed
                return
            self.connections += 1
            self._held.append(connection)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        self._listener.close()
        for connection in self._held:
            connection.close()
