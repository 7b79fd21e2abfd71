"""Worker processes: the entry point, their context, and one module per role (standalone and
spec-decode, the DSD draft and target, the DPD prefill and decode)."""

__all__: list[str] = []
