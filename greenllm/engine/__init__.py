"""The real disaggregated serving engine on PyTorch (Sections 3-4 of the paper, and beyond).

Public names are imported lazily, so ``import greenllm.engine`` does not import torch:

- the serving engine: :class:`Engine` (:data:`MODES` standalone, spec_decode, dsd, dpd), what
  it returns (:class:`RequestOutput`), its counters (:class:`EngineStats`,
  :class:`WorkerStats`) and link emulation (:class:`LinkEmulation`); see docs/engine.md;
- pretrained weights offline (:mod:`greenllm.engine.pretrained`): :func:`smollm2_dir`,
  :func:`load_model`, :func:`tiny_llama`, :func:`cache_dir`;
- sampling (:mod:`greenllm.engine.sampling`): :class:`SamplingParams`,
  :func:`probs_from_logits`, :func:`sample`;
- speculative-decoding verification (:mod:`greenllm.engine.verifier`, loops in
  :mod:`greenllm.engine.generate`):
  :func:`rejection_sample` (full draft rows, as in the paper), :func:`rejection_sample_lean`
  (only the draft token probabilities, plus the one full row at a rejection), and the
  single-process reference loops :func:`speculative_generate` / :func:`autoregressive_generate`;
- draft models (:mod:`greenllm.engine.draft`): :func:`layerskip_draft`, :func:`distill_draft`,
  :func:`draft_dir`, :func:`measure_acceptance`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from greenllm._lazy import lazy_exports

_LAZY: dict[str, str] = {
    "Engine": "greenllm.engine.engine",
    "MODES": "greenllm.engine.engine",
    "RequestOutput": "greenllm.engine.outputs",
    "EngineStats": "greenllm.engine.stats",
    "WorkerStats": "greenllm.engine.stats",
    "LinkEmulation": "greenllm.engine.link",
    "cache_dir": "greenllm.engine.pretrained",
    "smollm2_gguf_path": "greenllm.engine.pretrained",
    "smollm2_dir": "greenllm.engine.pretrained",
    "load_model": "greenllm.engine.pretrained",
    "tiny_llama": "greenllm.engine.pretrained",
    "SamplingParams": "greenllm.engine.sampling",
    "probs_from_logits": "greenllm.engine.sampling",
    "sample": "greenllm.engine.sampling",
    "VerifyResult": "greenllm.engine.verifier",
    "rejection_sample": "greenllm.engine.verifier",
    "rejection_sample_lean": "greenllm.engine.verifier",
    "verify": "greenllm.engine.verifier",
    "verify_lean": "greenllm.engine.verifier",
    "GenerationResult": "greenllm.engine.generate",
    "speculative_generate": "greenllm.engine.generate",
    "autoregressive_generate": "greenllm.engine.generate",
    "layerskip_draft": "greenllm.engine.draft",
    "distill_draft": "greenllm.engine.draft",
    "draft_dir": "greenllm.engine.draft",
    "measure_acceptance": "greenllm.engine.draft",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

if TYPE_CHECKING:  # pragma: no cover
    from greenllm.engine.draft import (  # noqa: F401
        distill_draft,
        draft_dir,
        layerskip_draft,
        measure_acceptance,
    )
    from greenllm.engine.engine import MODES, Engine  # noqa: F401
    from greenllm.engine.generate import (  # noqa: F401
        GenerationResult,
        autoregressive_generate,
        speculative_generate,
    )
    from greenllm.engine.link import LinkEmulation  # noqa: F401
    from greenllm.engine.outputs import RequestOutput  # noqa: F401
    from greenllm.engine.pretrained import (  # noqa: F401
        cache_dir,
        load_model,
        smollm2_dir,
        smollm2_gguf_path,
        tiny_llama,
    )
    from greenllm.engine.sampling import SamplingParams, probs_from_logits, sample  # noqa: F401
    from greenllm.engine.stats import EngineStats, WorkerStats  # noqa: F401
    from greenllm.engine.verifier import (  # noqa: F401
        VerifyResult,
        rejection_sample,
        rejection_sample_lean,
        verify,
        verify_lean,
    )
