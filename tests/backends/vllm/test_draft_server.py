"""The DSD draft server as a real process, on a tiny random Llama (no vLLM needed)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.extras import require

torch = require("torch")
require("transformers")

from greenllm.backends.vllm.draft_server import (
    BAD_REQUEST,
    BUSY,
    MAX_DRAFT_TOKENS,
    MAX_LINE_BYTES,
    main,
    parse_cpus,
    serve,
)
from greenllm.backends.vllm.proposer import DraftClient
from greenllm.backends.vllm.protocol import decode, encode
from greenllm.engine import tiny_llama
from greenllm.errors import ConfigError


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-draft")
    tiny_llama(vocab_size=256, hidden_size=32, n_layers=2, n_heads=4, n_kv_heads=2, seed=3) \
        .save_pretrained(folder)  # fmt: skip
    return folder


def greedy(model: object, context: list[int], k: int) -> list[int]:
    ids = list(context)
    with torch.inference_mode():
        for _ in range(k):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))  # type: ignore[operator]
    return ids[len(context) :]


def test_draft_ahead_answers_the_expected_context_from_what_it_drafted(tiny_dir: Path) -> None:
    """With ``ahead`` the server drafts each row's next proposal for "all accepted, bonus = its
    own next token" while the connection is quiet: that context is a hit, any other a miss,
    and both get exactly the greedy drafts (the cache stays consistent across hits)."""
    from greenllm.backends.vllm.draft_server import DraftModel

    model = DraftModel(str(tiny_dir), ahead=True)
    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(srv, model), kwargs={"stop": stop},
                              daemon=True)  # fmt: skip
    thread.start()
    try:
        client = DraftClient(srv.getsockname()[:2], timeout_s=30.0, retry_s=0.0)
        a = [5, 17, 99, 3, 42]
        first = client.propose([a], 4)[0]
        assert first == greedy(model.model, a, 4)
        hit = [*a, *first, greedy(model.model, [*a, *first], 1)[0]]  # all 4 accepted + bonus
        time.sleep(0.5)  # the connection is quiet: the server drafts ahead
        assert model.ahead_busy_s > 0
        second = client.propose([hit], 4)[0]
        assert second == greedy(model.model, hit, 4)
        assert (model.ahead_hits, model.ahead_misses) == (1, 0)
        miss = [*hit, *second[:1], 7]  # one accepted, then a correction
        time.sleep(0.5)
        assert client.propose([miss], 3)[0] == greedy(model.model, miss, 3)
        assert (model.ahead_hits, model.ahead_misses) == (1, 1)
        again = [*miss, *greedy(model.model, miss, 3)]  # all accepted, a bonus unlike its guess
        guess = greedy(model.model, again, 1)[0]
        other = [*again, (guess + 1) % 256]
        time.sleep(0.5)
        assert client.propose([other], 2)[0] == greedy(model.model, other, 2)
        assert (model.ahead_hits, model.ahead_misses) == (1, 2)
        with _connect(srv.getsockname()[:2]) as sock:
            sock.sendall(encode({"type": "stats"}))
            stats = decode(sock.makefile("rb").readline())
        assert (stats["ahead_hits"], stats["ahead_misses"]) == (1, 2)
    finally:
        stop.set()
        thread.join(timeout=5)
        srv.close()


@pytest.mark.slow
def test_the_server_proposes_greedy_drafts_and_dying_means_no_proposals(tiny_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    proc = subprocess.Popen(
        [sys.executable, "-m", "greenllm.backends.vllm.draft_server", "--model", str(tiny_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["type"] == "ready" and ready["port"] > 0
        model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
        client = DraftClient(("127.0.0.1", ready["port"]), timeout_s=30.0, retry_s=0.0)
        a, b = [5, 17, 99, 3, 42], [7, 7, 8]
        first = client.propose([a, b], 4)
        assert first == [greedy(model, a, 4), greedy(model, b, 4)]
        # next step: row 0 accepted two draft tokens plus a bonus token (its cache is cropped
        # and reused); row 1 rejected everything and continues with another token
        a2, b2 = [*a, *first[0][:2], 200], [*b, 11]
        second = client.propose([a2, b2], 3)
        assert second == [greedy(model, a2, 3), greedy(model, b2, 3)]
        assert client.stats["ok"] == 2 and client.stats["fallbacks"] == 0
        proc.kill()  # the old GPU's server dies: no proposals, no stall, no exception
        proc.wait()
        assert client.propose([[*a2, 1]], 2) == [[]]
        assert client.stats["errors"] == 1 and client.stats["fallbacks"] == 1
    finally:
        proc.kill()
        proc.wait()


def test_cpu_lists() -> None:
    assert parse_cpus("1") == {1}
    assert parse_cpus("0,2-4") == {0, 2, 3, 4}
    with pytest.raises(ConfigError, match="CPU list"):
        parse_cpus("a-b")


# --- untrusted input over real sockets (in-process server, stub model) ------------------------


class StubModel:
    """Answers ``propose`` with ``k`` copies of the context length (no torch needed)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def propose(self, seq: object, context: list[int], k: int) -> list[int]:
        return [len(context)] * k


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    """A draft server on 127.0.0.1 in a thread; options from ``@pytest.mark.parametrize``-free
    indirect params: ``{"max_line_bytes": ..., "idle_timeout_s": ...}``."""
    options = getattr(request, "param", {})
    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    thread = threading.Thread(
        target=serve, args=(srv, StubModel()), kwargs={"stop": stop, **options}, daemon=True
    )
    thread.start()
    try:
        yield srv.getsockname()[:2]
    finally:
        stop.set()
        thread.join(timeout=5)
        srv.close()


def _connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=10)
    sock.settimeout(10)
    return sock


def _read_until_closed(sock: socket.socket, limit: int = 1 << 16) -> bytes:
    data = b""
    with contextlib.suppress(ConnectionError):
        while chunk := sock.recv(limit):
            data += chunk
    return data


def _ping(address: tuple[str, int]) -> dict[str, object]:
    with _connect(address) as sock:
        sock.sendall(encode({"type": "ping"}))
        return decode(sock.makefile("rb").readline())


BAD_LINES = [
    b"{",
    b"}",
    b"[]",
    b"null",
    b"42",
    b'"ping"',
    b"{}",
    b'{"type": 5}',
    b'{"type": null}',
    b'{"type": ["ping"]}',
    b'{"type": "ping"',
    b"\xff\xfe\xfd",
    b'{"type": "\xc3\x28"}',
    b"\x00\x01\x02",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b"NaN",
    b"GET / HTTP/1.1",
]


@pytest.mark.parametrize("line", BAD_LINES, ids=range(len(BAD_LINES)))
def test_bad_json_gets_a_typed_error_and_only_that_connection_closes(
    server: tuple[str, int], line: bytes
) -> None:
    other = _connect(server)  # a well-behaved client meanwhile
    with _connect(server) as sock:
        sock.sendall(line + b"\n")
        data = _read_until_closed(sock)
    replies = [decode(x) for x in data.splitlines()]
    assert len(replies) == 1 and replies[0]["type"] == "error"
    assert str(replies[0]["message"]).startswith(f"{BAD_REQUEST}: ")
    with other:
        other.sendall(encode({"type": "ping"}))
        assert decode(other.makefile("rb").readline())["type"] == "pong"
    assert _ping(server)["type"] == "pong"


@given(st.binary(max_size=300).filter(lambda b: b"\n" not in b))
@settings(max_examples=60, deadline=None)
def test_any_bytes_get_a_reply_and_the_server_lives(data: bytes) -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    threading.Thread(
        target=serve, args=(srv, StubModel()), kwargs={"stop": stop}, daemon=True
    ).start()
    try:
        address = srv.getsockname()[:2]
        with _connect(address) as sock:
            sock.sendall(data + b"\n")
            line = sock.makefile("rb").readline()
        reply = decode(line)
        assert reply["type"] in ("error", "pong", "stats", "proposal")
        assert _ping(address)["type"] == "pong"
    finally:
        stop.set()
        srv.close()


@pytest.mark.parametrize(
    ("server", "size", "newline"),
    [
        ({"max_line_bytes": 1024}, 1025, True),
        ({"max_line_bytes": 1024}, 1025, False),
        ({"max_line_bytes": 1024}, 64 << 10, False),
        ({"max_line_bytes": 1024}, 8 << 20, False),
        ({}, MAX_LINE_BYTES + 1, False),
        ({}, 48 << 20, False),  # the report: 48 MiB without a newline was held
    ],
    indirect=["server"],
)
def test_an_overlong_line_is_refused_not_buffered(
    server: tuple[str, int], size: int, newline: bool
) -> None:
    with _connect(server) as sock:
        sent = 0
        chunk = b"x" * (1 << 16)
        with contextlib.suppress(ConnectionError):  # the server hangs up before the end
            while sent < size:
                part = chunk[: size - sent]
                sock.sendall(part)
                sent += len(part)
            if newline:
                sock.sendall(b"\n")
        data = _read_until_closed(sock)
    assert sent <= size
    if data:  # the reply may be lost to a reset when the server closes with unread input
        reply = decode(data.splitlines()[0])
        assert reply["type"] == "error" and "longer than" in str(reply["message"])
    assert _ping(server)["type"] == "pong"


@pytest.mark.parametrize(("server", "limit"), [({"max_line_bytes": 64}, 64)], indirect=["server"])
def test_a_line_of_exactly_the_limit_is_served(server: tuple[str, int], limit: int) -> None:
    ping = encode({"type": "ping"})
    line = ping[:-1] + b" " * (limit - len(ping)) + b"\n"
    assert len(line) == limit
    with _connect(server) as sock:
        sock.sendall(line)
        assert decode(sock.makefile("rb").readline())["type"] == "pong"


@pytest.mark.parametrize("server", [{"idle_timeout_s": 0.3}], indirect=True)
@pytest.mark.parametrize("partial", [b"", b"{", b'{"type": "pi'])
def test_idle_connections_are_closed(server: tuple[str, int], partial: bytes) -> None:
    with _connect(server) as sock:
        sock.sendall(partial)
        t0 = time.monotonic()
        assert _read_until_closed(sock) == b""
        assert time.monotonic() - t0 < 5
    busy = _connect(server)  # a client that keeps talking is not idle
    with busy, busy.makefile("rwb") as f:
        for _ in range(4):
            time.sleep(0.15)
            f.write(encode({"type": "ping"}))
            f.flush()
            assert decode(f.readline())["type"] == "pong"


@pytest.mark.parametrize(
    "request_",
    [
        {"type": "teleport"},
        {"type": "propose"},
        {"type": "propose", "k": "x", "rows": []},
        {"type": "propose", "k": 2, "rows": [["a", 0, []]]},
        {"type": "propose", "k": 2, "rows": 5},
    ],
)
def test_a_failed_request_keeps_the_connection(
    server: tuple[str, int], request_: dict[str, object]
) -> None:
    with _connect(server) as sock, sock.makefile("rwb") as f:
        f.write(encode(request_))
        f.flush()
        assert decode(f.readline())["type"] == "error"
        f.write(encode({"type": "ping"}))
        f.flush()
        assert decode(f.readline())["type"] == "pong"


@pytest.mark.parametrize("server", [{"idle_timeout_s": 0.2}], indirect=True)
def test_the_client_reconnects_after_an_idle_close(server: tuple[str, int]) -> None:
    client = DraftClient(server, timeout_s=5.0, retry_s=0.0)
    try:
        assert client.propose([[1, 2, 3]], 2) == [[3, 3]]
        time.sleep(0.6)  # the server closes the idle connection
        assert client.propose([[1, 2, 3, 4]], 2) == [[4, 4]]
        assert client.stats["ok"] == 2 and client.stats["errors"] == 0
    finally:
        client.close()


LIMIT_OPTIONS = [
    {"max_line_bytes": 0},
    {"idle_timeout_s": 0},
    {"idle_timeout_s": -1.0},
    {"max_k": 0},
    {"max_rows": 0},
    {"max_sequences": -1},
    {"max_connections": 0},
]


@pytest.mark.parametrize("options", LIMIT_OPTIONS)
def test_serve_checks_its_limits(options: dict[str, float]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as srv, pytest.raises(ConfigError):
        serve(srv, StubModel(), **options)


@pytest.mark.parametrize("options", LIMIT_OPTIONS)
def test_the_command_line_checks_its_limits(options: dict[str, float]) -> None:
    (name, value), = options.items()
    with pytest.raises(SystemExit) as exit_:  # refused before the model is loaded
        main(["--model", "/nonexistent", f"--{name.replace('_', '-')}", str(value)])
    assert exit_.value.code == 2


def _ask(f: object, message: dict[str, object]) -> dict[str, object]:
    f.write(encode(message))  # type: ignore[attr-defined]
    f.flush()  # type: ignore[attr-defined]
    return decode(f.readline())  # type: ignore[attr-defined]


def _propose(rows: list[int], k: int = 2) -> dict[str, object]:
    return {"type": "propose", "k": k, "rows": [[r, 0, [1, 2]] for r in rows]}


@pytest.mark.parametrize(
    ("server", "k", "expected"),
    [
        ({}, MAX_DRAFT_TOKENS + 1, f"k={MAX_DRAFT_TOKENS + 1} exceeds max_k={MAX_DRAFT_TOKENS}"),
        ({}, 10**9, f"k=1000000000 exceeds max_k={MAX_DRAFT_TOKENS}"),
        ({"max_k": 4}, 5, "k=5 exceeds max_k=4"),
        ({}, 0, "k=0 is below 1"),
        ({}, -3, "k=-3 is below 1"),
    ],
    indirect=["server"],
)
def test_k_beyond_the_limit_gets_a_typed_error(
    server: tuple[str, int], k: int, expected: str
) -> None:
    with _connect(server) as sock, sock.makefile("rwb") as f:
        reply = _ask(f, _propose([0], k))
        assert reply == {"type": "error", "message": f"{BAD_REQUEST}: {expected}"}
        limit = 4 if k == 5 else MAX_DRAFT_TOKENS  # the connection stays open and serves
        assert _ask(f, _propose([0], limit)) == {"type": "proposal", "ids": [[2] * limit],
                                                 "busy_s": pytest.approx(0, abs=1)}  # fmt: skip


@pytest.mark.parametrize("server", [{"max_rows": 4}], indirect=True)
def test_too_many_rows_get_a_typed_error(server: tuple[str, int]) -> None:
    with _connect(server) as sock, sock.makefile("rwb") as f:
        reply = _ask(f, _propose(list(range(5))))
        assert reply == {"type": "error", "message": f"{BAD_REQUEST}: rows=5 exceeds max_rows=4"}
        assert _ask(f, _propose(list(range(4))))["ids"] == [[2, 2]] * 4


@pytest.mark.parametrize("server", [{"max_sequences": 3}], indirect=True)
def test_a_connection_holds_at_most_max_sequences(server: tuple[str, int]) -> None:
    with _connect(server) as sock, sock.makefile("rwb") as f:
        assert _ask(f, _propose([0, 1]))["type"] == "proposal"
        reply = _ask(f, _propose([2, 3]))  # would hold 4: refused, nothing is kept
        assert reply == {"type": "error", "message":
                         f"{BAD_REQUEST}: sequences=4 on this connection exceeds max_sequences=3"}
        assert _ask(f, _propose([2]))["type"] == "proposal"  # 3 held: the refusal added none
        assert _ask(f, _propose([0, 1, 2]))["type"] == "proposal"  # known rows are fine
        assert _ask(f, _propose([3]))["type"] == "error"
    with _connect(server) as sock, sock.makefile("rwb") as f:  # the cap is per connection
        assert _ask(f, _propose([7, 8, 9]))["type"] == "proposal"


@pytest.mark.parametrize("server", [{"max_connections": 2}], indirect=True)
def test_connections_beyond_the_maximum_are_refused(server: tuple[str, int]) -> None:
    first, second = _connect(server), _connect(server)
    with first, first.makefile("rwb") as f1, second, second.makefile("rwb") as f2:
        assert _ask(f1, {"type": "ping"})["type"] == "pong"
        assert _ask(f2, {"type": "ping"})["type"] == "pong"
        for _ in range(3):
            with _connect(server) as extra:
                with contextlib.suppress(ConnectionError):
                    extra.sendall(encode({"type": "ping"}))
                data = _read_until_closed(extra)  # one error line, then closed
            (reply,) = [decode(x) for x in data.splitlines()]
            assert reply["type"] == "error" and str(reply["message"]).startswith(f"{BUSY}: ")
            assert "max_connections=2" in str(reply["message"])
        assert _ask(f1, {"type": "ping"})["type"] == "pong"  # the open ones are unaffected
    deadline = time.monotonic() + 10  # once they close, their slots are free again
    while True:
        with _connect(server) as sock:
            sock.sendall(encode({"type": "ping"}))
            reply = decode(sock.makefile("rb").readline())
        if reply["type"] == "pong" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert reply["type"] == "pong"


@pytest.mark.slow
def test_the_server_process_survives_bad_clients(tiny_dir: Path) -> None:
    cmd = [sys.executable, "-m", "greenllm.backends.vllm.draft_server", "--model", str(tiny_dir)]
    proc = subprocess.Popen(
        [*cmd, "--idle-timeout-s", "0.5", "--max-line-bytes", "4096"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        address = ("127.0.0.1", json.loads(proc.stdout.readline())["port"])
        for bad in (b"{oops\n", b"x" * 10_000, b"\xff\n"):
            with _connect(address) as sock:
                with contextlib.suppress(ConnectionError):
                    sock.sendall(bad)
                _read_until_closed(sock)
        with _connect(address) as sock:  # idle: closed by the server
            assert _read_until_closed(sock) == b""
        client = DraftClient(address, timeout_s=30.0, retry_s=0.0)
        assert len(client.propose([[5, 17, 99]], 3)[0]) == 3
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
