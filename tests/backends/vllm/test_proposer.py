"""The DSD proposer without vLLM: per-call timeout and fallback against real sockets."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from greenllm.backends.vllm.proposer import (
    ADDR_ENV,
    LOG_ENV,
    TIMEOUT_ENV,
    DraftClient,
    RemoteDraftProposer,
    parse_address,
)
from greenllm.backends.vllm.protocol import MAX_DRAFT_TOKENS
from greenllm.errors import ConfigError


class Server:
    """A real TCP server on 127.0.0.1: ``stall`` reads requests and never answers; otherwise it
    answers each row with ``k`` copies of the row's last token and records what it got."""

    def __init__(self, stall: bool) -> None:
        self.stall = stall
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[dict] = []
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.05)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as f:
            contexts: dict[int, list[int]] = {}
            for raw in f:
                msg = json.loads(raw)
                self.requests.append(msg)
                if self.stall:
                    continue
                ids = []
                for row, keep, append in msg["rows"]:
                    contexts[row] = contexts.get(row, [])[:keep] + append
                    ids.append([contexts[row][-1]] * msg["k"])
                reply = {"type": "proposal", "ids": ids, "busy_s": 0.001}
                f.write(json.dumps(reply).encode() + b"\n")
                f.flush()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def stalling() -> Iterator[Server]:
    s = Server(stall=True)
    yield s
    s.close()


@pytest.fixture
def echo() -> Iterator[Server]:
    s = Server(stall=False)
    yield s
    s.close()


def test_a_stalling_server_times_out_and_proposes_nothing(stalling: Server, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    client = DraftClient(("127.0.0.1", stalling.port), timeout_s=0.2, retry_s=5.0, log_path=log)
    t0 = time.monotonic()
    assert client.propose([[1, 2, 3], None], 4) == [[], []]
    took = time.monotonic() - t0
    assert 0.2 <= took < 1.0  # waited for the timeout, not longer
    assert client.stats["timeouts"] == 1 and client.stats["fallbacks"] == 1
    assert len(stalling.requests) == 1  # the request did reach the server
    # while down (retry_s), calls return at once without touching the network
    t1 = time.monotonic()
    assert client.propose([[1, 2, 3, 4]], 4) == [[]]
    assert time.monotonic() - t1 < 0.05 and stalling.connections == 1
    outcomes = [json.loads(line)["outcome"] for line in log.read_text().splitlines()]
    assert outcomes == ["timeout", "down"]


def test_a_refused_connection_falls_back_at_once() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = DraftClient(("127.0.0.1", port), timeout_s=2.0, retry_s=0.0)
    t0 = time.monotonic()
    assert client.propose([[5, 6]], 3) == [[]]
    assert time.monotonic() - t0 < 0.5
    assert client.stats["errors"] == 1 and client.stats["bytes_sent"] == 0


def test_only_new_tokens_cross_the_link_and_reconnects_start_over(echo: Server) -> None:
    client = DraftClient(("127.0.0.1", echo.port), timeout_s=2.0, retry_s=0.0)
    assert client.propose([[1, 2, 3], [7, 8]], 2) == [[3, 3], [8, 8]]
    assert client.propose([[1, 2, 3, 4, 5], [7, 9]], 2) == [[5, 5], [9, 9]]
    first, second = echo.requests
    assert first["rows"] == [[0, 0, [1, 2, 3]], [1, 0, [7, 8]]]
    assert second["rows"] == [[0, 3, [4, 5]], [1, 1, [9]]]  # keep the shared prefix
    assert client.stats["ok"] == 2 and client.stats["bytes_received"] > 0
    client.close()  # a new connection has no state on the server: send whole contexts
    assert client.propose([[1, 2, 3, 4, 5, 6]], 2) == [[6, 6]]
    assert echo.requests[-1]["rows"] == [[0, 0, [1, 2, 3, 4, 5, 6]]]


def test_remote_proposer_reads_vllm_batch_rows(
    echo: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(ADDR_ENV, f"127.0.0.1:{echo.port}")
    monkeypatch.setenv(TIMEOUT_ENV, "2.0")
    monkeypatch.setenv(LOG_ENV, str(tmp_path / "log.jsonl"))
    config = SimpleNamespace(  # the two fields of VllmConfig the proposer reads
        speculative_config=SimpleNamespace(num_speculative_tokens=3),
        model_config=SimpleNamespace(max_model_len=12),
    )
    proposer = RemoteDraftProposer(config)
    proposer.load_model()
    token_ids = np.zeros((3, 12), dtype=np.int32)
    token_ids[0, :4] = [11, 12, 13, 14]
    token_ids[1, :2] = [21, 22]
    token_ids[2, :10] = 30
    drafts = proposer.propose([[14], [], [30]], np.array([4, 2, 10]), token_ids)
    # row 1 sampled nothing (still in prefill); row 2 has no room for 3 more tokens
    assert drafts == [[14, 14, 14], [], []]
    assert echo.requests[0]["rows"] == [[0, 0, [11, 12, 13, 14]]]
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 1


def test_configuration_errors_name_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_address("10.0.0.2:7001") == ("10.0.0.2", 7001)
    assert parse_address("[::1]:7001") == ("::1", 7001)
    for bad in ("nohost", "host:", "host:99999"):
        with pytest.raises(ConfigError, match="host:port"):
            parse_address(bad)
    monkeypatch.delenv(ADDR_ENV, raising=False)
    cfg = SimpleNamespace(speculative_config=SimpleNamespace(num_speculative_tokens=2),
                          model_config=SimpleNamespace(max_model_len=64))  # fmt: skip
    with pytest.raises(ConfigError, match=ADDR_ENV):
        RemoteDraftProposer(cfg)
    monkeypatch.setenv(ADDR_ENV, "127.0.0.1:7001")
    for k in (0, MAX_DRAFT_TOKENS + 1):  # the draft server would refuse every call
        cfg.speculative_config.num_speculative_tokens = k
        with pytest.raises(ConfigError, match="MAX_DRAFT_TOKENS"):
            RemoteDraftProposer(cfg)
    with pytest.raises(ConfigError, match="timeout_s"):
        DraftClient(("127.0.0.1", 1), timeout_s=0)
