"""The DSD draft server as a real process, on a tiny random Llama (no vLLM needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.extras import require

torch = require("torch")
require("transformers")

from greenllm.backends.vllm.draft_server import parse_cpus
from greenllm.backends.vllm.proposer import DraftClient
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
