"""The network "allow" mode of the sandbox: an HTTP(S) proxy outside the jail that lets only `allow_hosts` through.

The jail has no network of its own. The proxy listens on a Unix socket that the
sandbox binds into the jail; inside, `BRIDGE` (a few lines of Python started
before the command) listens on 127.0.0.1:`BRIDGE_PORT` and carries each
connection to that socket, and `HTTP(S)_PROXY` name the bridge. The proxy
takes `CONNECT host:port` (HTTPS, anything tunnelled) and absolute-URI requests
(`GET http://host/...`, plain HTTP); a host not on the list gets
`403 Forbidden` and `on_refused(host, port)` is called (from the proxy's
thread) so the runtime can record what the agent tried to reach.

An `allow_hosts` entry is `host` (any port), `host:port`, or `*.domain`
(its subdomains); hosts compare case-insensitively, names are not resolved.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import urlsplit

BRIDGE_PORT = 3128
REFUSAL_MARK = "loopwright sandbox: not on allow_hosts"

# Runs inside the jail with the socket path as argv[1]: listen, then fork so the shell goes on once the port is open.
BRIDGE = r"""
import os, socket, sys, threading
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", %d))
srv.listen(64)
if os.fork():
    os._exit(0)
def pump(a, b):
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
while True:
    conn, _ = srv.accept()
    up = socket.socket(socket.AF_UNIX)
    try:
        up.connect(sys.argv[1])
    except OSError:
        conn.close()
        continue
    threading.Thread(target=pump, args=(conn, up), daemon=True).start()
    threading.Thread(target=pump, args=(up, conn), daemon=True).start()
""" % BRIDGE_PORT


def parse_allow_entry(entry: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]:port` or `*.domain` -> (host, port or None); ValueError with a hint if malformed."""
    text = entry.strip().lower()
    host, port = text, None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or any(c in host for c in "/ @") or (port is not None and not port.isdigit()):
        raise ValueError(f"allow_hosts entry {entry!r} is not host or host:port "
                         f"(like packages.example.org or files.example:443)")
    return host, int(port) if port is not None else None


def host_allowed(host: str, port: int, allow: Iterable[tuple[str, int | None]]) -> bool:
    host = host.lower().strip("[]")
    for a_host, a_port in allow:
        if a_port is not None and a_port != port:
            continue
        if host == a_host or (a_host.startswith("*.") and host.endswith(a_host[1:])):
            return True
    return False


class AllowProxy:
    """The filtering proxy, on its own thread and event loop, serving a Unix socket in a private temp folder."""

    def __init__(self, allow_hosts: Iterable[str], on_refused: Callable[[str, int], None] | None = None):
        self.allow = [parse_allow_entry(e) for e in allow_hosts]
        self.on_refused = on_refused
        self._dir = Path(tempfile.mkdtemp(prefix="lw-proxy-"))
        self.socket_path = self._dir / "proxy.sock"
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="lw-sandbox-proxy", daemon=True)
        self._thread.start()
        ready.wait()

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_unix_server(self._handle, str(self.socket_path)))
        ready.set()
        self._loop.run_forever()

    def close(self) -> None:
        if self._loop.is_closed():
            return

        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        method, target, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ") + ["", ""]
        if method == "CONNECT":
            host, port = _split_target(target, 443)
        else:
            url = urlsplit(target)
            host, port = url.hostname or "", url.port or 80
        if not host or not host_allowed(host, port, self.allow):
            if self.on_refused is not None:
                with contextlib.suppress(Exception):
                    self.on_refused(host or target, port)
            body = f"{REFUSAL_MARK}: {host or target}:{port}\n".encode()
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            await _close(writer)
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port), 30)
        except (TimeoutError, OSError) as e:
            writer.write(f"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n{e}\n".encode())
            await _close(writer)
            return
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:  # forward the request in origin form: GET /path HTTP/1.1
            url = urlsplit(target)
            path = (url.path or "/") + (f"?{url.query}" if url.query else "")
            up_writer.write(head.replace(target.encode("latin-1"), path.encode("latin-1"), 1))
        await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        await _close(up_writer)
        await _close(writer)


def _split_target(target: str, default_port: int) -> tuple[str, int]:
    host, _, port = target.rpartition(":") if not target.endswith("]") else (target, "", "")
    if not host or not port.isdigit():
        return target.strip("[]"), default_port
    return host.strip("[]"), int(port)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream (or a reset), then pass the end on (half close), so the other direction can
    finish."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


async def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        await writer.drain()
        writer.close()
