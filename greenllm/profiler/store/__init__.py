"""The profile database (paper, Sections 4.2-4.3): :class:`ProfileStore` (SQLite, WAL), the
records it holds, its versioned schema, JSON/CSV exchange, and the import of vLLM's serving
benchmark results."""

from greenllm.profiler.store.exchange import export_csv, export_json, import_csv, import_json
from greenllm.profiler.store.records import (
    CarbonAtMeasurement,
    CellUsage,
    GPURow,
    GPUUsage,
    LatencySummary,
    ProfileRecord,
    Provenance,
    cell_id,
    qps_key,
    size_label,
)
from greenllm.profiler.store.schema import ENV_VAR, default_store_path
from greenllm.profiler.store.store import ProfileStore
from greenllm.profiler.store.vllm_bench import (
    read_nvidia_smi_csv,
    record_from_vllm_bench,
    request_rate,
)

__all__ = [
    "ENV_VAR",
    "CarbonAtMeasurement",
    "CellUsage",
    "GPURow",
    "GPUUsage",
    "LatencySummary",
    "ProfileRecord",
    "ProfileStore",
    "Provenance",
    "cell_id",
    "default_store_path",
    "export_csv",
    "export_json",
    "import_csv",
    "import_json",
    "qps_key",
    "read_nvidia_smi_csv",
    "record_from_vllm_bench",
    "request_rate",
    "size_label",
]
