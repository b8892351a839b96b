"""The listening socket and the uvicorn server that `frugal serve` runs the app on.

Design choices:
- The socket is bound before the model loads and before uvicorn starts, so a taken port or
  an unresolvable host is a one-line error at once, and port 0 picks a free port that the
  caller can read back (tests and benchmarks use that).
- uvicorn gets every per-client limit of `http_limits.HttpLimits` that it enforces itself
  (header size, open connections, keep-alive) plus the request-head timeout protocol.
"""

from __future__ import annotations

import errno
import socket

from frugal_lm.errors import FrugalError
from frugal_lm.infer.http_limits import HttpLimits, head_timeout_protocol


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket, bound before uvicorn starts so a taken port is a one-line FrugalError
    (and port 0 picks a free one; the chosen port is `sock.getsockname()[1]`)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise FrugalError(f"--host {host}: cannot resolve ({error.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        reason = "address already in use" if error.errno == errno.EADDRINUSE else error.strerror
        raise FrugalError(f"cannot listen on {host}:{port}: {reason}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_server(app, sock: socket.socket, log_level: str = "info", limits: HttpLimits = HttpLimits()):
    """A uvicorn server for `app` on `sock`; `.run(sockets=[sock])` blocks until shut down.
    On Ctrl-C/SIGTERM it stops accepting, lets running requests finish (up to 30 s), then the
    app's lifespan stops the engine thread. `limits` bounds connections, headers and slow clients."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=30,
        access_log=log_level == "debug",
        http=head_timeout_protocol(limits.request_timeout_s),
        h11_max_incomplete_event_size=limits.max_header_bytes,
        limit_concurrency=limits.max_connections,
        timeout_keep_alive=limits.keep_alive_s,
    )
    return uvicorn.Server(config)
