"""The real disaggregated serving engine on PyTorch (Sections 3-4 of the paper, and beyond).

Public names are imported lazily, so ``import greenllm.engine`` does not import torch:

- the serving engine: :class:`Engine` (:data:`MODES` standalone, spec_decode, dsd, dpd), what
  it returns (:class:`RequestOutput`) or streams (:class:`TokenEvent`), its counters
  (:class:`EngineStats`, :class:`WorkerStats`) and link emulation (:class:`LinkEmulation`);
  see docs/engine.md;
- pretrained weights offline (:mod:`greenllm.engine.model.pretrained`): :func:`smollm2_dir`,
  :func:`tiny_llama`, :func:`cache_dir`; model names (:mod:`greenllm.engine.model.resolve`,
  the one alias table): :func:`resolve_model_dir`, :func:`load_model`;
- sampling (:mod:`greenllm.engine.model.sampling`): :class:`SamplingParams`,
  :func:`probs_from_logits`, :func:`sample`;
- speculative-decoding verification (:mod:`greenllm.engine.model.verifier`, loops in
  :mod:`greenllm.engine.model.generate`):
  :func:`rejection_sample` (full draft rows, as in the paper), :func:`rejection_sample_lean`
  (only the draft token probabilities, plus the one full row at a rejection), and the
  single-process reference loops :func:`speculative_generate` / :func:`autoregressive_generate`;
- draft models (:mod:`greenllm.engine.model.draft`): :func:`layerskip_draft`, :func:`distill_draft`,
  :func:`draft_dir`, :func:`measure_acceptance`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from greenllm.lazy import lazy_exports

_LAZY: dict[str, str] = {
    "Engine": "greenllm.engine.driver.engine",
    "MODES": "greenllm.engine.driver.modes",
    "RequestOutput": "greenllm.engine.driver.outputs",
    "TokenEvent": "greenllm.engine.driver.outputs",
    "EngineStats": "greenllm.engine.stats",
    "WorkerStats": "greenllm.engine.stats",
    "LinkEmulation": "greenllm.engine.comm.link",
    "cache_dir": "greenllm.engine.model.pretrained",
    "smollm2_gguf_path": "greenllm.engine.model.pretrained",
    "smollm2_dir": "greenllm.engine.model.pretrained",
    "tiny_llama": "greenllm.engine.model.pretrained",
    "load_model": "greenllm.engine.model.resolve",
    "resolve_model_dir": "greenllm.engine.model.resolve",
    "cached_distilled_draft": "greenllm.engine.model.resolve",
    "SamplingParams": "greenllm.engine.model.sampling",
    "probs_from_logits": "greenllm.engine.model.sampling",
    "sample": "greenllm.engine.model.sampling",
    "VerifyResult": "greenllm.engine.model.verifier",
    "rejection_sample": "greenllm.engine.model.verifier",
    "rejection_sample_lean": "greenllm.engine.model.verifier",
    "verify": "greenllm.engine.model.verifier",
    "verify_lean": "greenllm.engine.model.verifier",
    "GenerationResult": "greenllm.engine.model.generate",
    "speculative_generate": "greenllm.engine.model.generate",
    "autoregressive_generate": "greenllm.engine.model.generate",
    "layerskip_draft": "greenllm.engine.model.draft",
    "distill_draft": "greenllm.engine.model.draft",
    "draft_dir": "greenllm.engine.model.draft",
    "measure_acceptance": "greenllm.engine.model.draft",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

if TYPE_CHECKING:  # pragma: no cover
    from greenllm.engine.comm.link import LinkEmulation  # noqa: F401
    from greenllm.engine.driver.engine import Engine  # noqa: F401
    from greenllm.engine.driver.modes import MODES  # noqa: F401
    from greenllm.engine.driver.outputs import RequestOutput, TokenEvent  # noqa: F401
    from greenllm.engine.model.draft import (  # noqa: F401
        distill_draft,
        draft_dir,
        layerskip_draft,
        measure_acceptance,
    )
    from greenllm.engine.model.generate import (  # noqa: F401
        GenerationResult,
        autoregressive_generate,
        speculative_generate,
    )
    from greenllm.engine.model.pretrained import (  # noqa: F401
        cache_dir,
        smollm2_dir,
        smollm2_gguf_path,
        tiny_llama,
    )
    from greenllm.engine.model.resolve import (  # noqa: F401
        cached_distilled_draft,
        load_model,
        resolve_model_dir,
    )
    from greenllm.engine.model.sampling import SamplingParams, probs_from_logits, sample  # noqa: F401
    from greenllm.engine.model.verifier import (  # noqa: F401
        VerifyResult,
        rejection_sample,
        rejection_sample_lean,
        verify,
        verify_lean,
    )
    from greenllm.engine.stats import EngineStats, WorkerStats  # noqa: F401
