"""What the loopback test doubles share: a threaded HTTP server on 127.0.0.1, and a guard against real hosts.

`LoopbackHTTPDouble` runs a stdlib ``ThreadingHTTPServer`` (one daemon thread per request) on an ephemeral
port of 127.0.0.1 and hands every request whose verb is in `methods` to the subclass's ``_handle(handler)``;
use it as a context manager or call `start`/`stop`. Subclasses build their own `endpoint` from `port`.

The loopback guard wraps ``socket.socket.connect``/``connect_ex`` (`guarded_connect`) and
``socket.getaddrinfo`` (`guarded_getaddrinfo`) so that any host but a loopback one fails loudly with an
AssertionError ("... which is not loopback"), and records it in `refused_hosts`; `install_loopback_guard`
installs both for a whole process. This module imports nothing beyond the standard library, so client
subprocesses can install the guard cheaply.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self


class _Handler(BaseHTTPRequestHandler):
    """Dispatches to its double; `LoopbackHTTPDouble.start` makes a subclass per server with `do_<VERB>` set."""

    protocol_version = "HTTP/1.1"
    double: ClassVar[LoopbackHTTPDouble]

    def _dispatch(self) -> None:
        self.double._handle(self)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


class LoopbackHTTPDouble:
    """A server on 127.0.0.1 (ephemeral port) whose requests go to `_handle`; a context manager."""

    methods: ClassVar[tuple[str, ...]] = ("GET",)  # the HTTP verbs routed to `_handle` (others answer 501)
    thread_name: ClassVar[str] = "loopback-double"

    def __init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    def _before_stop(self) -> None:
        """Called first thing in `stop` (e.g. to release requests the double holds back)."""

    def start(self) -> Self:
        routes = {f"do_{method}": _Handler._dispatch for method in self.methods}
        handler = type(f"{type(self).__name__}Handler", (_Handler,), {"double": self, **routes})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._before_stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start the double first"
        return self._server.server_address[1]


# ---------------------------------------------------------------------------------------- loopback guard

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
# Every host the guards refused, in order: some clients swallow the guard's AssertionError (datasets does,
# for its dataset-viewer lookups), so tests read this list to see what was attempted.
refused_hosts: list[str] = []


def _is_loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def guarded_connect(connect: Any) -> Any:
    """Wrap socket.connect (or connect_ex) so that any host other than loopback fails loudly."""

    def guarded(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            refused_hosts.append(str(address[0]))
            raise AssertionError(f"a test tried to connect to {address!r}, which is not loopback")
        return connect(sock, address)

    return guarded


def guarded_getaddrinfo(getaddrinfo: Any) -> Any:
    """Wrap socket.getaddrinfo so that resolving any name but a loopback one fails loudly (no DNS leaks)."""

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_loopback(host):
            refused_hosts.append(str(host))
            raise AssertionError(f"a test tried to resolve {host!r}, which is not loopback")
        return getaddrinfo(host, *args, **kwargs)

    return guarded


def install_loopback_guard() -> None:
    """Make this whole process refuse non-loopback connections and name lookups (for client subprocesses)."""
    socket.socket.connect = guarded_connect(socket.socket.connect)  # type: ignore[method-assign]
    socket.socket.connect_ex = guarded_connect(socket.socket.connect_ex)  # type: ignore[method-assign]
    socket.getaddrinfo = guarded_getaddrinfo(socket.getaddrinfo)


@contextlib.contextmanager
def loopback_guard() -> Iterator[None]:
    """While the block runs, this process refuses non-loopback connections and name lookups (for test fixtures)."""
    saved = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo
    install_loopback_guard()
    try:
        yield
    finally:
        socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = saved  # type: ignore[method-assign]
