"""Profiling (paper, Section 4.2): load generation (:mod:`greenllm.profiler.loadgen`), resumable
sweeps (:mod:`greenllm.profiler.sweep`) and the SQLite profile store
(:mod:`greenllm.profiler.store`). Each subpackage exports its own public names."""

__all__: list[str] = []
