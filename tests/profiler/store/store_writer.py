"""Subprocess writer for the ProfileStore concurrency and crash tests (not a test module).

Usage (from the repository root)::

    python -m tests.profiler.store.store_writer write PATH START STOP BATCH
    python -m tests.profiler.store.store_writer stall PATH N_COMMITTED N_BATCH
    python -m tests.profiler.store.store_writer loop PATH BATCH
    python -m tests.profiler.store.store_writer bench FOLDER N

``write`` opens the store, prints ``READY``, waits for the file PATH with suffix ``.go``, then
stores records START..STOP-1 in batches of BATCH (BATCH 1 uses ``put``).
``stall`` commits N_COMMITTED records, then starts a batch of N_BATCH and, half-way through the
inserts, prints ``STALLED`` and sleeps inside the open transaction (to be SIGKILLed).
``loop`` writes batches of BATCH forever, printing ``COMMITTED <n>`` after each.
``bench FOLDER N`` times put_many / query / usage / export / import on N records (JSON out).
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from greenllm.config import SLO, Configuration, RequestSize, Workload
from greenllm.profiler.store import (
    GPUUsage,
    LatencySummary,
    ProfileRecord,
    ProfileStore,
    Provenance,
)

_CONFIGS = (
    Configuration(kind="standalone"),
    Configuration(kind="dpd", old_gpu="V100"),
    Configuration(kind="dsd", old_gpu="T4", draft_model="llama-1b"),
)


def make_record(i: int, run_id: str = "default") -> ProfileRecord:
    """Deterministic record number ``i`` (distinct cell ids for distinct ``i``)."""
    cfg = _CONFIGS[i % len(_CONFIGS)]
    workload = Workload(
        application="chat",
        request_size=RequestSize(input_tokens=64 + i, output_tokens=32),
        qps=1.0 + (i % 7),
        slo=SLO(ttft_s=1.0, tpot_s=0.1),
    )
    lat = LatencySummary(count=10, mean_s=0.5, p50_s=0.4, p90_s=0.8, p99_s=0.9)
    return ProfileRecord(
        workload=workload,
        configuration=cfg,
        backend="sim",
        run_id=run_id,
        n_requests=10,
        duration_s=10.0,
        ttft=lat,
        tpot=lat,
        slo_attainment=0.5,
        ttft_attainment=0.7,
        tpot_attainment=0.6,
        gpus=tuple(
            GPUUsage(gpu=g, energy_j=100.0 + i, busy_s=5.0, allocated_s=10.0) for g in cfg.gpus
        ),
        provenance=Provenance(
            created_utc=datetime(2026, 1, 1, tzinfo=UTC), extra={"i": i}
        ),
    )


def _write(path: str, start: int, stop: int, batch: int) -> None:
    with ProfileStore(path) as store:
        print("READY", flush=True)
        go = Path(path).with_suffix(".go")
        while not go.exists():  # a barrier, so that both writers really overlap
            time.sleep(0.01)
        for lo in range(start, stop, batch):
            recs = [make_record(i) for i in range(lo, min(lo + batch, stop))]
            if batch == 1:
                store.put(recs[0])
            else:
                store.put_many(recs)


def _stall(path: str, n_committed: int, n_batch: int) -> None:
    store = ProfileStore(path).open()
    store.put_many(make_record(i) for i in range(n_committed))
    conn = store._connection()
    base = conn.total_changes

    def handler() -> int:
        if conn.in_transaction and conn.total_changes - base >= n_batch // 2:
            print(f"STALLED {conn.total_changes - base}", flush=True)  # half the rows are in
            time.sleep(120)
            os._exit(3)  # never killed: do not linger
        return 0

    conn.set_progress_handler(handler, 100)
    store.put_many(make_record(i) for i in range(n_committed, n_committed + n_batch))
    print("FINISHED", flush=True)  # the test fails if the kill came too late


def _loop(path: str, batch: int) -> None:
    with ProfileStore(path) as store:
        i = 0
        while True:
            store.put_many(make_record(j) for j in range(i, i + batch))
            i += batch
            print(f"COMMITTED {i}", flush=True)


def _bench(path: str, n: int) -> None:
    """Wall-clock seconds of the store's bulk operations on ``n`` records (printed as JSON)."""
    recs = [make_record(i).model_copy(update={"run_id": f"r{i}"}) for i in range(n)]
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, float] = {"records": n}
    with ProfileStore(folder / "bench.sqlite") as store:
        for name, call in (
            ("put_many_new_s", lambda: store.put_many(recs)),
            ("put_many_replace_s", lambda: store.put_many(recs)),
            ("query_all_s", store.query),
            ("usage_all_s", store.usage),
            ("done_cells_s", store.done_cells),
            ("export_json_s", lambda: store.export_json(folder / "bench.json")),
            ("export_csv_s", lambda: store.export_csv(folder / "bench.csv")),
        ):
            t0 = time.perf_counter()
            call()
            out[name] = round(time.perf_counter() - t0, 3)
    for name, fmt in (("import_json_s", "json"), ("import_csv_s", "csv")):
        with ProfileStore(folder / f"import-{fmt}.sqlite") as other:
            t0 = time.perf_counter()
            getattr(other, f"import_{fmt}")(folder / f"bench.{fmt}")
            out[name] = round(time.perf_counter() - t0, 3)
    print(json.dumps(out))


if __name__ == "__main__":
    mode, path, *nums = sys.argv[1:]
    args = [int(x) for x in nums]
    {"write": _write, "stall": _stall, "loop": _loop, "bench": _bench}[mode](path, *args)
