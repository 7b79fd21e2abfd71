"""Run a gateway under uvicorn: bind first (a clear error if the address is taken), print where
it listens, drain on Ctrl-C/SIGTERM, and stop every process the upstream started."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from greenllm.errors import ConfigError, WorkerError, missing_extra
from greenllm.serve.app import create_app
from greenllm.serve.controller import Controller
from greenllm.serve.gateway import Gateway

__all__ = ["bind_socket", "run_server"]

logger = logging.getLogger(__name__)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port)."""
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ConfigError(f"port {port!r}: must be an integer in [0, 65535]")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as err:
        raise ConfigError(f"host {host!r}: cannot resolve it ({err})") from None
    family, _, _, _, address = infos[0]
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that name it, and
    # without it Nagle holds each streamed token behind the client's delayed ACK (~40 ms)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise WorkerError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.set_inheritable(True)
    return sock


def run_server(
    gateway: Gateway,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    log_level: str = "warning",
    on_listening: Callable[[str], None] | None = None,
    controller: Controller | None = None,
) -> None:
    """Serve ``gateway`` until Ctrl-C or SIGTERM, then drain (``drain_timeout_s``) and stop.

    ``on_listening(url)`` is called once the engines are up and the socket accepts requests.
    A failure to start the upstream raises its error here (after everything is stopped).
    """
    try:
        import uvicorn
    except ImportError as err:
        raise missing_extra("uvicorn", "serve") from err
    sock = bind_socket(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    url = f"http://{shown}:{bound_port}"
    app = create_app(gateway, controller)
    failure: list[BaseException] = []

    async def lifespan_guard(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def receive_checked() -> dict:
            return await receive()

        async def send_checked(message: dict) -> None:
            if message["type"] == "lifespan.startup.complete" and on_listening is not None:
                on_listening(url)
            await send(message)

        try:
            await app(scope, receive_checked, send_checked)
        except BaseException as err:  # the upstream did not start: report it after uvicorn
            failure.append(err)
            raise

    config = uvicorn.Config(
        lifespan_guard, log_level=log_level, access_log=False, lifespan="on", log_config=None,
        timeout_graceful_shutdown=max(1, int(gateway.settings.drain_timeout_s)),
    )  # fmt: skip
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if failure:
        raise failure[0]
    if not server.started and gateway.upstream is not None and not gateway.ready:
        raise WorkerError("the gateway did not start; see the log above")
