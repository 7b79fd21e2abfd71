"""The core never imports heavy optional dependencies."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKED = [
    "torch", "transformers", "vllm", "ray", "pynvml", "accelerate", "matplotlib", "surprise",
    "fastapi", "uvicorn", "httpx",
]  # fmt: skip


def test_core_imports_with_heavy_dependencies_blocked() -> None:
    code = textwrap.dedent(
        f"""
        import sys
        for name in {BLOCKED!r}:
            sys.modules[name] = None  # any import of it now raises ImportError
        import greenllm, greenllm.carbon, greenllm.scheduler, greenllm.config, greenllm.errors
        import greenllm.carbon.analysis, greenllm.energy, greenllm.slo, greenllm.workloads
        import greenllm.profiler.store, greenllm.cli
        from greenllm import get_gpu, schedule, complete, SLO
        assert get_gpu("A100").embodied_kg == 26.34
        loaded = sorted(set({BLOCKED!r}) & {{k for k, v in sys.modules.items() if v is not None}})
        assert not loaded, loaded
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_import_greenllm_is_lazy() -> None:
    code = "import sys, greenllm; print(sorted(m for m in sys.modules if m.startswith('greenllm')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['greenllm', 'greenllm.lazy', 'greenllm.version']"


def test_unknown_attribute_raises_attribute_error() -> None:
    import greenllm

    try:
        greenllm.does_not_exist  # noqa: B018
    except AttributeError as err:
        assert "does_not_exist" in str(err)
    else:
        raise AssertionError("expected AttributeError")
