"""Server processes of the vLLM upstream: argv from engine arguments (no vLLM), the watchdog
with a fake server (fail fast, stop, parent death), and one real vLLM api_server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from greenllm.backends.vllm.engine_args import (
    EngineSettings,
    dpd_kwargs,
    dsd_kwargs,
    spec_decode_kwargs,
    standalone_kwargs,
)
from greenllm.backends.vllm.server import (
    API_SERVER_MODULE,
    DraftServerProcess,
    ServerProcess,
    VLLMServer,
    api_server_argv,
    draft_server_argv,
    engine_cli_args,
    free_port,
    group_members,
    http_health,
)
from greenllm.errors import BackendUnavailableError, ConfigError, WorkerError

S = EngineSettings()


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


# ---- argv ------------------------------------------------------------------------------------
def test_standalone_flags() -> None:
    args = engine_cli_args(standalone_kwargs("/m", S))
    assert _flag(args, "--model") == "/m" and _flag(args, "--tokenizer") == "/m"
    assert _flag(args, "--dtype") == "float32" and _flag(args, "--block-size") == "32"
    assert _flag(args, "--kv-cache-memory-bytes") == str(1 << 30)
    assert _flag(args, "--max-model-len") == "2048" and _flag(args, "--seed") == "0"
    assert "--enforce-eager" in args and "--no-enable-prefix-caching" in args
    # store_true flags have no --no- form: disable_log_stats=False is left out
    assert not any("log-stats" in a for a in args)


def test_json_configs() -> None:
    spec = engine_cli_args(spec_decode_kwargs("/m", "/d", 3, S))
    assert json.loads(_flag(spec, "--speculative-config")) == {
        "model": "/d", "method": "draft_model", "num_speculative_tokens": 3}  # fmt: skip
    dsd = json.loads(_flag(engine_cli_args(dsd_kwargs("/m", 4, S)), "--speculative-config"))
    assert dsd["method"] == "custom_class" and dsd["model"].endswith("RemoteDraftProposer")
    for role, kv_role in (("prefill", "kv_producer"), ("decode", "kv_consumer")):
        args = engine_cli_args(dpd_kwargs("/m", role, S, storage_path="/kv"))  # type: ignore[arg-type]
        kv = json.loads(_flag(args, "--kv-transfer-config"))
        assert kv["kv_role"] == kv_role and kv["kv_connector"] == "ExampleConnector"
        assert kv["kv_connector_extra_config"] == {"shared_storage_path": "/kv"}


def test_generic_rules() -> None:
    assert engine_cli_args({"a_b": True, "c": False, "d": None, "e": 1.5, "f": [1, 2]}) == [
        "--a-b", "--no-c", "--e", "1.5", "--f", "[1, 2]"]  # fmt: skip
    cuda = EngineSettings(device="cuda", kv_cache_memory_bytes=None,
                          attention_backend="TRITON_ATTN")  # fmt: skip
    args = engine_cli_args(standalone_kwargs("/m", cuda))
    assert _flag(args, "--gpu-memory-utilization") == "0.9"
    assert _flag(args, "--attention-backend") == "TRITON_ATTN"
    with pytest.raises(ConfigError):
        engine_cli_args({"bad flag": 1})


def test_api_server_and_draft_argv() -> None:
    argv = api_server_argv("/py", standalone_kwargs("/m", S), host="127.0.0.1", port=8001,
                           served_model_name="smol")  # fmt: skip
    assert argv[:3] == ["/py", "-m", API_SERVER_MODULE]
    assert _flag(argv, "--port") == "8001" and _flag(argv, "--served-model-name") == "smol"
    with pytest.raises(ConfigError):
        api_server_argv("/py", {"dtype": "float32"}, host="h", port=1)
    d = draft_server_argv("/py", "/d", host="127.0.0.1", port=7001, cpus="1")
    assert d[:3] == ["/py", "-m", "greenllm.backends.vllm.draft_server"]
    assert _flag(d, "--port") == "7001" and _flag(d, "--cpus") == "1"
    server = VLLMServer("target", standalone_kwargs("/m", S), python="/py", log_path="/tmp/x")
    assert server.url == f"http://127.0.0.1:{server.port}" and not server.alive
    draft = DraftServerProcess("/d", python="/py", log_path="/tmp/x", port=7002)
    assert draft.address == "127.0.0.1:7002" and draft.pid is None


# ---- the watchdog with a fake server -----------------------------------------------------------
FAKE = textwrap.dedent("""
    import http.server, signal, subprocess, sys, time
    port = int(sys.argv[1])
    # a grandchild in the same group that ignores SIGTERM, like a stubborn engine process
    subprocess.Popen([sys.executable, "-c",
                      "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                      "time.sleep(600)"])
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
        def log_message(self, *a):
            pass
    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
""")


class FakeServer(ServerProcess):
    kind = "fake server"

    def healthy(self, timeout_s: float = 2.0) -> bool:
        return http_health(self.host, self.port, timeout_s)


def _fake(tmp_path: Path, script: str = FAKE, grace_s: float = 1.0) -> FakeServer:
    port = free_port()
    argv = [sys.executable, "-c", script, str(port)]
    return FakeServer("fake", argv, host="127.0.0.1", port=port, log_path=tmp_path / "fake.log",
                      grace_s=grace_s)  # fmt: skip


def _gone(pgid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not group_members(pgid):
            return True
        time.sleep(0.1)
    return False


def test_stop_ends_the_whole_group(tmp_path: Path) -> None:
    server = _fake(tmp_path)
    server.start()
    try:
        assert server.wait_ready(30) < 30 and server.healthy()
        pgid = server.pid
        assert pgid is not None and len(group_members(pgid)) == 3  # watchdog, server, grandchild
    finally:
        t0 = time.monotonic()
        server.stop()
    assert time.monotonic() - t0 < 10
    assert not server.alive and not group_members(pgid)  # the SIGTERM-proof grandchild too
    assert "SIGKILL to process group" in (tmp_path / "fake.log").read_text()
    server.start()  # restart on the same port
    try:
        server.wait_ready(30)
        assert server.starts == 2
    finally:
        server.stop()


def test_server_exit_fails_fast_with_the_log(tmp_path: Path) -> None:
    server = _fake(tmp_path, "import sys; print('boom: bad flag'); sys.exit(3)")
    server.start()
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match=r"(?s)exited with code 3.*boom: bad flag"):
        server.wait_ready(60)
    assert time.monotonic() - t0 < 10
    server.stop()


def test_the_root_cause_far_above_the_tail_is_quoted(tmp_path: Path) -> None:
    """A child's exception line (vLLM's EngineCore) 40 lines above the parent's traceback is in
    the error, with the log's last lines."""
    script = ("import sys; print('(EngineCore pid=7) ValueError: not enough KV cache memory'); "
              "[print(f'  frame {i}') for i in range(40)]; "
              "print('RuntimeError: Engine core initialization failed'); sys.exit(1)")  # fmt: skip
    server = _fake(tmp_path, script)
    server.start()
    with pytest.raises(WorkerError) as err:
        server.wait_ready(60)
    server.stop()
    text = str(err.value)
    assert "errors above them:\n    (EngineCore pid=7) ValueError: not enough KV" in text
    assert text.index("ValueError") < text.index("last lines of") < text.index("RuntimeError")
    assert "frame 39" in text and "frame 5\n" not in text


def test_start_timeout_stops_the_server(tmp_path: Path) -> None:
    server = _fake(tmp_path, "import time; time.sleep(600)")
    server.start()
    pgid = server.pid
    assert pgid is not None
    with pytest.raises(WorkerError, match="not ready within"):
        server.wait_ready(1.5)
    assert not server.alive and _gone(pgid)


def test_killed_server_ends_its_group(tmp_path: Path) -> None:
    """A server that dies by itself takes its forks with it (no orphaned EngineCore)."""
    server = _fake(tmp_path)
    server.start()
    server.wait_ready(30)
    pgid = server.pid
    assert pgid is not None
    child = [p for p in group_members(pgid) if p != pgid]
    os.kill(min(child), signal.SIGKILL)  # the fake server itself (the grandchild is newer)
    assert _gone(pgid), group_members(pgid)
    server.stop()


PARENT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from tests.backends.vllm.test_server import _fake
    from pathlib import Path
    server = _fake(Path({tmp!r}))
    server.start()
    server.wait_ready(30)
    print(server.pid, flush=True)
    time.sleep(600)
""")


def test_parent_death_ends_the_group(tmp_path: Path) -> None:
    root = str(Path(__file__).resolve().parents[3])
    script = PARENT.format(root=root, tmp=str(tmp_path))
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pgid = int(parent.stdout.readline())
        assert group_members(pgid)
        parent.kill()  # SIGKILL: no cleanup code of the parent runs
        parent.wait(10)
        assert _gone(pgid), group_members(pgid)
        assert "parent gone" in (tmp_path / "fake.log").read_text()
    finally:
        parent.kill()


# ---- one real vLLM server ----------------------------------------------------------------------
@pytest.mark.vllm
@pytest.mark.slow
def test_real_vllm_server(tmp_path: Path) -> None:
    from greenllm.backends.vllm import find_vllm_python
    from greenllm.backends.vllm.scratch import Scratch
    from greenllm.engine import resolve_model_dir

    try:
        python = find_vllm_python()
    except BackendUnavailableError as err:
        pytest.skip(f"no Python with vLLM (GREENLLM_VLLM_PYTHON): {err}")
    with Scratch() as scratch:
        model = str(resolve_model_dir("smollm2-135m"))
        server = VLLMServer("target", standalone_kwargs(model, S), python=python,
                            log_path=tmp_path / "vllm.log", served_model_name="smol",
                            env=scratch.env())  # fmt: skip
        server.start()
        try:
            took = server.wait_ready(600)
            print(f"\n[vllm server] ready in {took:.1f} s")
            assert server.healthy()
            pgid = server.pid
            assert pgid is not None and len(group_members(pgid)) >= 3  # + EngineCore
            import http.client

            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            body = {"model": "smol", "prompt": "def f(x):", "max_tokens": 4, "temperature": 0}
            conn.request("POST", "/v1/completions", json.dumps(body),
                         {"Content-Type": "application/json"})  # fmt: skip
            reply = json.loads(conn.getresponse().read())
            assert reply["usage"]["completion_tokens"] == 4
        finally:
            server.stop()
        assert not server.alive and _gone(pgid) and not http_health("127.0.0.1", server.port)
