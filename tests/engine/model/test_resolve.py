"""The one model resolver: an alias names the same folder in the engine and in the backends,
aliases match exactly, and only the explicit ``-distilled`` alias may start a distillation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from greenllm.errors import ConfigError
from tests.extras import require

torch = require("torch")
require("transformers")

from greenllm.engine import resolve_model_dir
from greenllm.engine.model import draft, resolve
from greenllm.engine.model.pretrained import DISTILLED_DRAFT_PREFIX, DONE_MARKER


def _vllm_resolve(name: str | Path) -> Path:
    """What the vLLM backend resolves ``name`` to (it calls the engine's resolver)."""
    from greenllm.backends.vllm import backend

    return backend.resolve_model_dir(str(name))


def _backend_folders(name: str) -> set[Path]:
    """``name`` resolved by the vLLM backend and (as the draft of a DSD run) the torch backend."""
    from greenllm.backends.torch.support import engine_key
    from greenllm.config import Configuration

    cfg = Configuration(kind="dsd", old_gpu="T4", target_model="smollm2-135m", draft_model=name)
    key = engine_key(cfg, emulate_link=False, link_latency_s=0.0, lean=False, overlap=True,
                     devices=("cpu", "cpu"))  # fmt: skip
    assert key.draft is not None
    return {_vllm_resolve(name), Path(key.draft)}


@pytest.fixture
def tiny_cache(tmp_path: Path, tiny_target: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache, a tiny model standing in for SmolLM2, and no distillation allowed."""
    target = tmp_path / "smollm2"
    tiny_target.save_pretrained(target)
    monkeypatch.setenv("GREENLLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(resolve, "smollm2_dir", lambda: target)
    monkeypatch.setattr(draft, "smollm2_dir", lambda: target)

    def no_distillation(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a distillation was started")

    monkeypatch.setattr(draft, "distill", no_distillation)
    monkeypatch.setattr(draft, "distill_draft", no_distillation)
    return tmp_path / "cache"


def test_plain_draft_alias_is_layerskip_without_a_cached_distilled_draft(tiny_cache: Path) -> None:
    folder = resolve_model_dir("smollm2-135m-draft")
    assert folder == tiny_cache / "smollm2-135m-draft-layerskip-4l"
    assert (folder / "config.json").is_file()
    assert _backend_folders("smollm2-135m-draft") == {folder}
    assert resolve_model_dir("smollm2-135m-draft-layerskip") == folder
    assert _vllm_resolve("smollm2-135m") == resolve_model_dir("smollm2-135m")


def test_plain_draft_alias_prefers_the_newest_cached_distilled_draft(tiny_cache: Path) -> None:
    for age, name in enumerate(("4l-new", "4l-old")):
        done = tiny_cache / f"{DISTILLED_DRAFT_PREFIX}{name}"
        done.mkdir(parents=True)
        (done / "config.json").write_text("{}")
        (done / DONE_MARKER).write_text("")
        os.utime(done / DONE_MARKER, (1e9 - age, 1e9 - age))
    (tiny_cache / f"{DISTILLED_DRAFT_PREFIX}4l-half").mkdir()  # no marker: never picked
    newest = tiny_cache / f"{DISTILLED_DRAFT_PREFIX}4l-new"
    assert resolve_model_dir("smollm2-135m-draft") == newest
    assert _backend_folders("smollm2-135m-draft") == {newest}


def test_only_the_distilled_alias_distils(
    tiny_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []

    def fake_distill_draft(target_dir: Any, out_dir: Any, **settings: Any) -> Path:
        calls.append(Path(out_dir))
        return Path(out_dir)

    monkeypatch.setattr(draft, "distill_draft", fake_distill_draft)
    resolve_model_dir("smollm2-135m-draft")
    assert calls == []
    folder = resolve_model_dir("smollm2-135m-draft-distilled")
    assert calls == [folder] and folder.name.startswith(DISTILLED_DRAFT_PREFIX)


@pytest.mark.parametrize(
    "name", ["smollm2-135m-instruct", "smollm2-135m-draft-x", "smollm2-135m-draftlayerskip"]
)
def test_names_that_merely_start_with_an_alias_are_rejected(name: str, tiny_cache: Path) -> None:
    for resolver in (resolve_model_dir, _vllm_resolve):
        with pytest.raises(ConfigError, match="known alias") as err:
            resolver(name)
        assert all(alias in str(err.value) for alias in resolve.ALIASES)


def test_folders_resolve_to_themselves(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model_dir(tmp_path) == tmp_path.resolve()
    assert resolve_model_dir(str(tmp_path)) == _vllm_resolve(tmp_path)
    with pytest.raises(ConfigError, match=r"neither a folder with config\.json"):
        resolve_model_dir(tmp_path / "missing")


def test_one_alias_table() -> None:
    from greenllm.backends.torch import support
    from greenllm.backends.vllm import backend

    assert backend.resolve_model_dir is support.resolve_model_dir is resolve.resolve_model_dir
    assert resolve.ALIASES == (
        "smollm2-135m",
        "smollm2-135m-draft",
        "smollm2-135m-draft-distilled",
        "smollm2-135m-draft-layerskip",
    )
