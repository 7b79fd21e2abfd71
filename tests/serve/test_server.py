"""The listening socket: errors as one typed line, and TCP_NODELAY on every connection (without
it Nagle holds each streamed token behind the client's delayed ACK: found by
benchmarks/bench_serve_overhead.py as +40 ms on the first token)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from greenllm.errors import ConfigError, WorkerError
from greenllm.serve import bind_socket


def test_accepted_connections_have_tcp_nodelay() -> None:
    async def main() -> int:
        sock = bind_socket("127.0.0.1", 0)
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                conn = transport.get_extra_info("socket")
                seen.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        async with server:
            port = sock.getsockname()[1]
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            value = await asyncio.wait_for(seen, 10)
            writer.close()
        return value

    assert asyncio.run(main()) != 0


def test_bind_errors_are_typed_one_liners() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(WorkerError, match=f"cannot listen on 127.0.0.1:{port}"):
            bind_socket("127.0.0.1", port)
    for bad in (-1, 65536, True, "80"):
        with pytest.raises(ConfigError, match="port"):
            bind_socket("127.0.0.1", bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="host"):
        bind_socket("no-such-host.invalid", 0)
