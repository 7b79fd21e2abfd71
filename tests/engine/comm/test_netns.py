"""A real shaped link between two network namespaces (greenllm.engine.comm.netns): the rate limit
holds for TCP, and DSD/DPD with NetnsPlacement put the old-side worker in the other namespace
and still produce target-only greedy output. Needs root and iproute2; skipped otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from greenllm.engine.comm.netns import ShapedLink, netns_unavailable_reason
from greenllm.errors import BackendUnavailableError, ConfigError

ROOT = Path(__file__).resolve().parents[3]


def _cannot_build() -> str | None:
    """Why no shaped link can be built here (root alone is not enough in some containers)."""
    reason = netns_unavailable_reason()
    if reason is None:
        try:
            ShapedLink(prefix=f"p{os.getpid() % 100000}").create().destroy()
        except BackendUnavailableError as err:
            reason = str(err)
    return reason


_REASON = _cannot_build()
needs_netns = pytest.mark.skipif(_REASON is not None, reason=str(_REASON))

_RECEIVER = """
import socket, sys, time
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
conn, _ = srv.accept()
n, start = 0, None
while chunk := conn.recv(1 << 16):
    start = start or time.perf_counter()
    n += len(chunk)
print(n, time.perf_counter() - start)
"""
_SENDER = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
s.sendall(b"x" * int(sys.argv[3]))
s.close()
"""


def test_bad_rate_and_prefix_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="gbps=0"):
        ShapedLink(gbps=0)
    with pytest.raises(ConfigError, match="prefix"):
        ShapedLink(prefix="has-dash")
    with pytest.raises(ConfigError, match="side='mid'"):
        ShapedLink(prefix="t1").ip("mid")


def test_netns_placement_outside_the_namespace_says_how_to_start() -> None:
    from greenllm.engine.comm.placement import NetnsPlacement

    with pytest.raises(ConfigError, match=r"link.command\('new'"):
        NetnsPlacement(ShapedLink(prefix="t2"))


@pytest.mark.skipif(netns_unavailable_reason() is None, reason="only without root/iproute2")
def test_create_without_privileges_is_a_clear_error() -> None:
    with pytest.raises(BackendUnavailableError, match="cannot build a shaped link"):
        ShapedLink(prefix="t3").create()


@needs_netns
def test_tcp_between_namespaces_runs_at_the_shaped_rate() -> None:
    gbps, n_bytes = 0.1, 4_000_000  # 12.5 MB/s: 0.32 s on the wire
    with ShapedLink(gbps=gbps) as link:
        assert link.exists()
        receiver = subprocess.Popen(
            link.command("old", [sys.executable, "-c", _RECEIVER, link.ip("old"), "7391"]),
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(0.5)
        sender = [sys.executable, "-c", _SENDER, link.ip("old"), "7391", str(n_bytes)]
        subprocess.run(link.command("new", sender), check=True, timeout=60)
        out, _ = receiver.communicate(timeout=60)
    assert not link.exists()
    received, elapsed_s = out.split()
    measured_gbps = int(received) * 8 / float(elapsed_s) / 1e9
    assert int(received) == n_bytes
    assert 0.6 * gbps < measured_gbps < 1.1 * gbps, measured_gbps


@needs_netns
def test_dsd_and_dpd_across_namespaces_match_target_only(tiny_dirs: dict[str, str]) -> None:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    with ShapedLink(gbps=0.5) as link:
        done = subprocess.run(
            link.command("new", [sys.executable, str(ROOT / "tests/engine/comm/netns_child.py"),
                                 link.prefix, "0.5", tiny_dirs["target"], tiny_dirs["draft"]]),
            capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    root_netns = os.readlink("/proc/self/ns/net")
    assert report["driver_netns"] != root_netns
    for mode in ("dsd", "dpd"):
        r = report[mode]
        assert r["equal"], mode
        assert r["worker_netns"]["new"] == report["driver_netns"], mode
        assert r["worker_netns"]["old"] not in (report["driver_netns"], root_netns), mode
        assert r["bytes_new_to_old"] > 0, mode  # token ids (DSD verdicts) / the KV cache (DPD)
    assert report["dsd"]["bytes_old_to_new"] > 0  # draft ids and probabilities
