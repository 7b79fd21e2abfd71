"""The GPU catalog: Table 1 of the paper and data-sheet GPUs (:mod:`.rows`), the registry
(:mod:`.registry`) and ACT-style embodied-carbon estimates (:mod:`.act`).

Its public names are exported by :mod:`greenllm.carbon`.
"""

__all__: list[str] = []
