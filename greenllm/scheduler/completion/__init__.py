"""Collaborative filtering (Section 4.3): the estimator base (:mod:`.base`), the methods (SGD,
ALS, SoftImpute, scikit-surprise), value transforms, and :func:`complete` with rank selection.
Public names are exported by :mod:`greenllm.scheduler`."""

__all__: list[str] = []
