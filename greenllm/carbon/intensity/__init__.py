"""Grid carbon intensity (the ``CI`` of Eq. 2, the ``alpha`` of Eq. 5): annual figures by region
and country (:mod:`.regions`), hourly traces (:mod:`.trace`) and the shipped data (:mod:`.data`).

Its public names are exported by :mod:`greenllm.carbon`.
"""

__all__: list[str] = []
