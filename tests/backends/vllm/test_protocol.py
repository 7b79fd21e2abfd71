"""The JSON-lines protocol: every message names its kind under "type", both ways, and a child
process speaking it through WorkerProcess (a fake child: no vLLM needed)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from greenllm.backends.vllm.process import WorkerProcess
from greenllm.backends.vllm.protocol import AddCommand, decode, encode
from greenllm.errors import BackendUnavailableError, WorkerError

CHILD = '''
import sys
from greenllm.backends.vllm.protocol import decode, encode

out = sys.stdout.buffer
out.write(b"a line that is not a message\\n")
out.write(encode({"no": "type"}))
for line in sys.stdin:
    msg = decode(line)
    if msg["type"] == "echo":
        out.write(encode({"type": "echoed", "got": msg}))
    elif msg["type"] == "fail":
        out.write(encode({"type": "error", "kind": msg["kind"], "message": "it failed"}))
    elif msg["type"] == "exit":
        sys.exit(7)
    out.flush()
'''


def test_messages_are_compact_json_lines_with_a_type() -> None:
    add: AddCommand = {"type": "add", "rid": "r-0", "token_ids": [1, 2], "max_tokens": 3,
                       "at_s": 0.5, "kv_transfer_params": None}  # fmt: skip
    line = encode(add)
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and b" " not in line
    assert decode(line) == add and decode(line.decode()) == add
    for bad in (b"[1, 2]", b'{"op": "add"}', b'{"type": 3}', b"not json"):
        with pytest.raises(ValueError):
            decode(bad)


@pytest.fixture
def child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WorkerProcess:
    (tmp_path / "glm_fake_child.py").write_text(textwrap.dedent(CHILD))
    root = str(Path(__file__).resolve().parents[3])
    env = {"PYTHONPATH": f"{tmp_path}:{root}"}
    return WorkerProcess("fake", Path(sys.executable), "glm_fake_child", env=env,
                         log_path=tmp_path / "child.log")  # fmt: skip


def test_worker_process_exchanges_typed_lines(child: WorkerProcess) -> None:
    try:
        # the two lines before the reply (not JSON; no "type") are skipped, not fatal
        reply = child.request({"type": "echo", "x": [1, 2]}, "echoed", 30)
        assert reply == {"type": "echoed", "got": {"type": "echo", "x": [1, 2]}}
        with pytest.raises(WorkerError, match="it failed"):
            child.request({"type": "fail", "kind": "serve"}, "echoed", 30)
        with pytest.raises(BackendUnavailableError, match="it failed"):
            child.request({"type": "fail", "kind": "unavailable"}, "echoed", 30)
        with pytest.raises(WorkerError, match="exited with code 7"):
            child.request({"type": "exit"}, "echoed", 30)
    finally:
        child.close()
