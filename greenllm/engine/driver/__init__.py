"""The driver side of the engine: :class:`~greenllm.engine.driver.engine.Engine`, the worker
supervisor and what a request returns. Public names are exported by :mod:`greenllm.engine`."""

__all__: list[str] = []
