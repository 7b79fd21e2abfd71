"""Tests of the profile records and the SQLite ProfileStore (paper, Sections 4.2-4.3)."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import greenllm.profiler.store.store as store_mod
from greenllm.config import SLO, Configuration, RequestSize, RequestSizeDistribution, Workload
from greenllm.errors import ConfigError, ProfileError
from greenllm.profiler.store import (
    CarbonAtMeasurement,
    LatencySummary,
    ProfileRecord,
    ProfileStore,
    Provenance,
    cell_id,
    default_store_path,
)
from greenllm.profiler.store.schema import MIGRATIONS, V1_GPU_USAGE, V1_PROFILES
from greenllm.slo import slo_attainment
from tests.profiler.store.store_writer import make_record

REPO = Path(__file__).resolve().parents[3]
SLO_CHAT = SLO(ttft_s=1.0, tpot_s=0.1)
CONFIGS = [
    Configuration(kind="standalone"),
    Configuration(kind="spec_decode", draft_model="llama-300m"),
    Configuration(kind="dpd", old_gpu="V100"),
    Configuration(kind="dsd", old_gpu="T4", draft_model="llama-1b", link_gbps=100.0),
]
PROV = Provenance(created_utc=datetime(2026, 3, 1, 12, tzinfo=UTC), host="h")


# --- hypothesis strategies (reusable) -------------------------------------------------------

latencies = st.lists(st.floats(0, 30, allow_nan=False), min_size=0, max_size=40)
request_sizes = st.one_of(
    st.builds(RequestSize, input_tokens=st.integers(1, 8192), output_tokens=st.integers(1, 2048)),
    st.just(
        RequestSizeDistribution(
            p25=RequestSize(input_tokens=100, output_tokens=20),
            p50=RequestSize(input_tokens=300, output_tokens=80),
            p75=RequestSize(input_tokens=900, output_tokens=200),
        )
    ),
)
workloads = st.builds(
    Workload,
    application=st.sampled_from(["chat", "code", "summarize.v2"]),
    request_size=request_sizes,
    qps=st.floats(0.01, 1000, allow_nan=False),
    slo=st.builds(SLO, ttft_s=st.floats(0.01, 100), tpot_s=st.floats(0.001, 10)),
)


@st.composite
def profile_records(draw: st.DrawFn) -> ProfileRecord:
    """A valid ProfileRecord built from random raw per-request latencies."""
    cfg = draw(st.sampled_from(CONFIGS))
    ttft = draw(latencies)
    tpot = draw(
        st.lists(
            st.one_of(st.floats(0, 2), st.just(math.nan)), min_size=len(ttft), max_size=len(ttft)
        )
    )
    n_gpu = len(cfg.gpus)
    energy = draw(st.lists(st.floats(0, 1e7), min_size=n_gpu, max_size=n_gpu))
    carbon = draw(
        st.none()
        | st.builds(
            CarbonAtMeasurement,
            embodied_g=st.floats(0, 1e4),
            operational_g=st.floats(0, 1e4),
            intensity_g_per_kwh=st.floats(0, 1000),
            lifetime_years=st.none() | st.floats(1, 20),
        )
    )
    extra = draw(
        st.dictionaries(
            st.text(max_size=5),
            st.integers() | st.text(max_size=5) | st.lists(st.booleans()),
            max_size=3,
        )
    )
    when = draw(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)))
    return ProfileRecord.from_requests(
        draw(workloads),
        cfg,
        draw(st.sampled_from(["sim", "vllm", "torch"])),
        ttft_s=ttft,
        tpot_s=tpot,
        energy_j=energy,
        duration_s=draw(st.floats(0.1, 1e4)),
        n_failed=draw(st.integers(0, 3)),
        run_id=draw(st.sampled_from(["default", "r1", "seed-7"])),
        input_tokens=draw(st.integers(0, 10**9)),
        output_tokens=draw(st.integers(0, 10**9)),
        link_bytes=draw(st.integers(0, 2**62)),
        carbon=carbon,
        provenance=Provenance(
            created_utc=when.replace(tzinfo=UTC),
            backend_version="1.2",
            host="x",
            extra=extra,
        ),
    )


def _record(i: int = 0, **changes: object) -> ProfileRecord:
    rec = make_record(i)
    return ProfileRecord.model_validate({**rec.model_dump(), **changes}) if changes else rec


def _gpu_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COUNT(*) FROM gpu_usage").fetchone()[0]


# --- summaries and the SLO rule -------------------------------------------------------------


def test_summary_of_one_to_ten_matches_linear_percentiles() -> None:
    s = LatencySummary.from_values([float(x) for x in range(10, 0, -1)])
    # linear interpolation at rank q*(n-1): p50 -> 5.5, p90 -> 9 + 0.1, p99 -> 9 + 0.91
    assert (s.count, s.mean_s) == (10, 5.5)
    assert s.p50_s == pytest.approx(5.5) and s.p90_s == pytest.approx(9.1)
    assert s.p99_s == pytest.approx(9.91)


@given(st.lists(st.floats(0, 1e3, allow_nan=False), min_size=1, max_size=200))
def test_summary_matches_numpy(values: list[float]) -> None:
    s = LatencySummary.from_values([*values, math.nan])  # NaN = no value, skipped
    arr = np.array(values)
    assert s.count == len(values)
    assert s.mean_s == pytest.approx(arr.mean(), rel=1e-12, abs=1e-12)
    for q, got in ((50, s.p50_s), (90, s.p90_s), (99, s.p99_s)):
        assert got == pytest.approx(np.percentile(arr, q), rel=1e-12, abs=1e-12)


def test_summary_of_nothing_has_no_statistics() -> None:
    s = LatencySummary.from_values([math.nan])
    assert s.count == 0 and s.mean_s is None and s.p99_s is None
    with pytest.raises(ConfigError, match="finite"):
        LatencySummary.from_values([0.1, math.inf])
    with pytest.raises(ConfigError, match="count = 3 needs"):
        LatencySummary(count=3, mean_s=1.0)
    with pytest.raises(ConfigError, match="must not decrease"):
        LatencySummary(count=3, mean_s=1.0, p50_s=2.0, p90_s=1.0, p99_s=3.0)


def test_slo_attainment_by_hand() -> None:
    ttft = [0.5, 1.5, 0.9, 0.2, 1.0]
    tpot = [0.05, 0.05, 0.2, math.nan, 0.1]  # NaN: one output token, meets the TPOT part
    both, t_only, p_only = slo_attainment(ttft, tpot, SLO_CHAT, n_failed=1)
    # meets TTFT: 0, 2, 3, 4 (<= is a hit); meets TPOT: 0, 1, 3, 4; both: 0, 3, 4; n = 6
    assert (both, t_only, p_only) == (3 / 6, 4 / 6, 4 / 6)
    with pytest.raises(ConfigError, match="one value per request"):
        slo_attainment([0.1], [0.1, 0.2], SLO_CHAT)
    with pytest.raises(ConfigError, match="n_failed"):
        slo_attainment([math.nan], [0.1], SLO_CHAT)
    with pytest.raises(ConfigError, match="n_failed = -1"):
        slo_attainment([0.1], [0.1], SLO_CHAT, n_failed=-1)
    assert slo_attainment([], [], SLO_CHAT) == (0.0, 0.0, 0.0)


@given(
    latencies.flatmap(
        lambda t: st.tuples(st.just(t), st.lists(st.floats(0, 1), min_size=len(t), max_size=len(t)))
    )
)
def test_slo_attainment_bounds(pair: tuple[list[float], list[float]]) -> None:
    ttft, tpot = pair
    both, a, b = slo_attainment(ttft, tpot, SLO_CHAT)
    assert max(0.0, a + b - 1) - 1e-12 <= both <= min(a, b) + 1e-12
    if ttft:
        met = sum(1 for x, y in zip(ttft, tpot, strict=True) if x <= 1.0 and y <= 0.1)
        assert both == pytest.approx(met / len(ttft))


def test_from_requests_summarises_and_aligns_gpus() -> None:
    cfg = CONFIGS[3]
    w = Workload(
        application="Chat", request_size=RequestSize(input_tokens=10, output_tokens=5), qps=2
    )
    rec = ProfileRecord.from_requests(
        w, cfg, "sim", ttft_s=[0.2, 2.0], tpot_s=[0.05, 0.05], energy_j=[300.0, 40.0],
        duration_s=12.0, busy_s=[10.0, 3.0], slo=SLO_CHAT, n_failed=2, provenance=PROV,
    )  # fmt: skip
    assert rec.workload.slo == SLO_CHAT and rec.workload.application == "chat"
    assert (rec.n_requests, rec.ttft.count, rec.slo_attainment, rec.tpot_attainment) == (
        4,
        2,
        0.25,
        0.5,
    )
    assert [(g.gpu, g.energy_j, g.busy_s, g.allocated_s) for g in rec.gpus] == [
        ("A100", 300.0, 10.0, 12.0),
        ("T4", 40.0, 3.0, 12.0),
    ]
    assert rec.energy_j == 340.0
    with pytest.raises(ConfigError, match="need 2, one per GPU"):
        ProfileRecord.from_requests(
            w, cfg, "sim", ttft_s=[], tpot_s=[], energy_j=[1.0], duration_s=1, slo=SLO_CHAT
        )
    with pytest.raises(ConfigError, match="no SLO"):
        ProfileRecord.from_requests(
            w, cfg, "sim", ttft_s=[], tpot_s=[], energy_j=[1.0, 2.0], duration_s=1
        )
    fresh = ProfileRecord.from_requests(
        w, CONFIGS[0], "sim", ttft_s=[], tpot_s=[], energy_j=[1.0], duration_s=1, slo=SLO_CHAT
    )
    assert fresh.provenance.created_utc.tzinfo is UTC and fresh.provenance.python_version


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            {"gpus": [{"gpu": "H100", "energy_j": 1, "busy_s": 1, "allocated_s": 1}]},
            "configuration's GPUs",
        ),
        ({"slo_attainment": 0.9}, "cannot exceed"),
        ({"n_requests": 3}, "more latencies"),
        ({"backend": "bad name"}, "backend"),
        ({"provenance": {"created_utc": datetime(2026, 1, 1)}}, "timezone-aware"),
        ({"provenance": {"created_utc": "2026-01-01T00:00:00Z", "extra": {"x": math.nan}}}, "JSON"),
        ({"link_bytes": -1}, "link_bytes"),
        ({"output_tokens": 2**63}, "output_tokens"),
        ({"energy_source": "metered"}, r"ProfileRecord\.energy_source = 'metered'"),
        ({"n_requests": "10"}, r"ProfileRecord\.n_requests = '10': must be a number"),
    ],
)
def test_invalid_records_raise_config_error(change: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _record(0, **change)


def test_from_run_summarises_a_backend_run() -> None:
    from greenllm.backends import get_backend
    from greenllm.workloads import workload

    run = get_backend("sim").run(CONFIGS[3], workload("sharegpt", 4.0), duration_s=5, seed=0)
    rec = ProfileRecord.from_run(run, run_id="r1")
    r = run.requests
    assert (rec.backend, rec.run_id, rec.workload, rec.configuration) == (
        "sim", "r1", run.workload, run.configuration)  # fmt: skip
    assert rec.n_requests == len(r) and rec.ttft.count == int(r.served.sum())
    assert rec.output_tokens == run.output_tokens and rec.link_bytes == run.link_bytes
    assert [(g.gpu, g.energy_j, g.allocated_s) for g in rec.gpus] == [
        (g.gpu, g.energy_j, g.allocated_s) for g in run.gpus]  # fmt: skip
    assert all(g.busy_s <= run.duration_s for g in rec.gpus)
    assert rec.slo_attainment == pytest.approx(run.slo_attainment())
    strict = SLO(ttft_s=1e-3, tpot_s=1e-3)
    assert ProfileRecord.from_run(run, slo=strict).workload.slo == strict


@pytest.mark.parametrize(
    ("claimed", "energy_j", "busy_s", "expected"),
    [
        ("measured", [300.0, 40.0], [10.0, 3.0], "measured"),
        ("modelled", [300.0, 40.0], [10.0, 3.0], "modelled"),
        ("measured", [0.0, 0.0], [10.0, 3.0], "unmeasured"),  # 0 J on a busy GPU: no device
        ("modelled", [0.0, 0.0], [10.0, 0.0], "unmeasured"),
        ("measured", [0.0, 0.0], [0.0, 0.0], "measured"),  # idle: 0 J is a true reading
        ("measured", [0.0, 5.0], [10.0, 3.0], "measured"),
        ("unmeasured", [1.0, 5.0], [10.0, 3.0], "unmeasured"),
    ],
)
def test_from_requests_sets_the_energy_source(
    claimed: str, energy_j: list[float], busy_s: list[float], expected: str
) -> None:
    w = Workload(application="chat", request_size=RequestSize(input_tokens=10, output_tokens=5),
                 qps=2)  # fmt: skip
    rec = ProfileRecord.from_requests(
        w, CONFIGS[3], "sim", ttft_s=[0.2], tpot_s=[0.05], energy_j=energy_j, duration_s=12.0,
        busy_s=busy_s, slo=SLO_CHAT, provenance=PROV, energy_source=claimed,
    )  # fmt: skip
    assert rec.energy_source == expected
    default = ProfileRecord.from_requests(
        w, CONFIGS[3], "sim", ttft_s=[0.2], tpot_s=[0.05], energy_j=[1.0, 1.0], duration_s=1.0,
        slo=SLO_CHAT, provenance=PROV,
    )  # fmt: skip
    assert default.energy_source == "modelled"


def test_from_run_takes_the_runs_energy_source() -> None:
    import dataclasses

    from greenllm.backends import get_backend
    from greenllm.workloads import workload

    run = get_backend("sim").run(CONFIGS[0], workload("sharegpt", 2.0), duration_s=5, seed=0)
    assert ProfileRecord.from_run(run).energy_source == "modelled"
    measured = dataclasses.replace(run, energy="measured")
    assert ProfileRecord.from_run(measured).energy_source == "measured"
    zero = dataclasses.replace(
        measured, gpus=tuple(dataclasses.replace(g, energy_j=0.0) for g in run.gpus)
    )
    assert ProfileRecord.from_run(zero).energy_source == "unmeasured"


def test_record_needs_the_workload_slo() -> None:
    raw = make_record(0).model_dump()
    raw["workload"]["slo"] = None
    with pytest.raises(ConfigError, match=r"workload\.slo is missing"):
        ProfileRecord.model_validate(raw)


def test_provenance_converts_to_utc() -> None:
    east = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=3)))
    assert Provenance(created_utc=east).created_utc == datetime(2026, 1, 1, 9, tzinfo=UTC)
    assert Provenance(created_utc=east, extra={"t": (1, 2)}).extra == {"t": [1, 2]}


# --- cell ids ---------------------------------------------------------------------------------


def test_cell_id_follows_the_documented_recipe() -> None:
    rec = make_record(5)
    w = rec.workload
    assert w.qps == 6.0  # %.6g -> "6"
    text = "\x1f".join(["chat", "69x32", "6", rec.configuration.id, "sim", "default"])
    assert rec.cell_id == hashlib.sha1(text.encode()).hexdigest()[:20]


def test_cell_id_keys() -> None:
    size, cfg = RequestSize(input_tokens=1, output_tokens=2), CONFIGS[0]
    base = cell_id("chat", size, 0.3, cfg.id, "sim", "r")
    assert cell_id("chat", size, 0.1 + 0.2, cfg.id, "sim", "r") == base  # QPS to 6 digits
    others = [
        cell_id("code", size, 0.3, cfg.id, "sim", "r"),
        cell_id("chat", RequestSize(input_tokens=1, output_tokens=3), 0.3, cfg.id, "sim", "r"),
        cell_id("chat", size, 0.31, cfg.id, "sim", "r"),
        cell_id("chat", size, 0.3, CONFIGS[1].id, "sim", "r"),
        cell_id("chat", size, 0.3, cfg.id, "vllm", "r"),
        cell_id("chat", size, 0.3, cfg.id, "sim", "r2"),
    ]
    assert len({base, *others}) == 7
    # measured values and the SLO are not part of the key
    a, b = (
        _record(1),
        _record(
            1,
            slo_attainment=0.1,
            workload={**make_record(1).workload.model_dump(), "slo": {"ttft_s": 9, "tpot_s": 9}},
        ),
    )
    assert a.cell_id == b.cell_id


# --- store basics -------------------------------------------------------------------------------


def test_round_trip_and_queries(tmp_path: Path) -> None:
    recs = [make_record(i) for i in range(30)]
    with ProfileStore(tmp_path / "p.sqlite") as store:
        assert store.put_many(recs) == 30 and len(store) == 30
        assert store.get(recs[4].cell_id) == recs[4]
        assert store.get("nope") is None and not store.has("nope")
        assert recs[7] in store and recs[7].cell_id in store
        assert store.done_cells() == {r.cell_id for r in recs}
        assert store.done_cells(backend="vllm") == set()
        assert sorted(r.cell_id for r in store.query()) == sorted(r.cell_id for r in recs)
        want = {r.cell_id for r in recs if r.configuration.kind.value == "dsd"}
        assert {r.cell_id for r in store.query(kind="Disg-Spec-Decode")} == want
        assert {r.cell_id for r in store.query(configuration_id=recs[2].configuration)} == want
        assert store.query(configuration_id=CONFIGS[3]) == []  # 100 Gbps link: another config
        assert {r.cell_id for r in store.query(application="CHAT", qps=3.0 + 1e-9)} == {
            r.cell_id for r in recs if r.workload.qps == 3.0
        }
        assert [r.cell_id for r in store.query(request_size=recs[9].workload.request_size)] == [
            recs[9].cell_id
        ]
        assert store.query(backend="sim", run_id="other") == []
        with pytest.raises(ConfigError, match="allowed: standalone"):
            store.query(kind="turbo")
        assert store.schema_version == len(MIGRATIONS) == 4
    with sqlite3.connect(tmp_path / "p.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@settings(max_examples=25)
@given(st.lists(profile_records(), min_size=1, max_size=6))
def test_any_records_round_trip_through_store_json_and_csv(
    tmp_path_factory: pytest.TempPathFactory, recs: list[ProfileRecord]
) -> None:
    d = tmp_path_factory.mktemp("rt")
    unique = {r.cell_id: r for r in recs}
    with ProfileStore(d / "a.sqlite") as a:
        a.put_many(recs)
        assert {r.cell_id: r for r in a.query()} == unique
        assert a.export_json(d / "x.json") == a.export_csv(d / "x.csv") == len(unique)
    for importer in ("import_json", "import_csv"):
        with ProfileStore(d / f"{importer}.sqlite") as b:
            assert getattr(b, importer)(
                d / ("x.json" if importer == "import_json" else "x.csv")
            ) == len(unique)
            assert {r.cell_id: r for r in b.query()} == unique


def test_usage_is_one_query_with_per_gpu_numbers(tmp_path: Path) -> None:
    recs = [make_record(i) for i in range(12)]
    with ProfileStore(tmp_path / "u.sqlite") as store:
        store.put_many(recs)
        statements: list[str] = []
        store._connection().set_trace_callback(statements.append)
        cells = store.usage(application="chat")
        assert len(statements) == 1 and statements[0].startswith("SELECT")
        configs = store.configurations(kind="dpd")
    by_id = {r.cell_id: r for r in recs}
    assert configs == {
        r.configuration.id: r.configuration for r in recs if r.configuration.old_gpu == "V100"
    }
    assert len(cells) == 12
    for c in cells:
        r = by_id[c.cell_id]
        assert c.configuration_id == r.configuration.id and c.slo_attainment == r.slo_attainment
        size = r.workload.request_size
        assert c.size_label == f"{size.input_tokens}x{size.output_tokens}"
        assert (c.qps, c.input_tokens, c.output_tokens) == (r.workload.qps, 0, r.output_tokens)
        assert [(g.gpu, g.energy_j, g.busy_s, g.allocated_s) for g in c.gpus] == [
            (g.gpu, g.energy_j, g.busy_s, g.allocated_s) for g in r.gpus
        ]


# --- idempotency and resume ---------------------------------------------------------------------


def test_put_is_an_idempotent_upsert(tmp_path: Path) -> None:
    path = tmp_path / "i.sqlite"
    rec = make_record(2)  # a DSD record: two GPU rows
    with ProfileStore(path) as store:
        store.put(rec)
        store.put(rec)
        assert len(store) == 1 and _gpu_rows(path) == 2
        changed = _record(
            2, ttft_attainment=0.9, gpus=[{**g.model_dump(), "energy_j": 7.0} for g in rec.gpus]
        )
        assert changed.cell_id == rec.cell_id
        store.put(changed)
        assert len(store) == 1 and _gpu_rows(path) == 2
        assert store.get(rec.cell_id) == changed and store.get(rec.cell_id).gpus[1].energy_j == 7.0
        # within one batch the last record of a cell wins
        assert store.put_many([rec, changed, rec]) == 1 and store.get(rec.cell_id) == rec
        assert store.put_many([]) == 0
        with pytest.raises(ConfigError, match="item 1 is a dict"):
            store.put_many([rec, rec.model_dump()])  # type: ignore[list-item]


def test_resume_skips_done_cells_and_adds_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    cells = [make_record(i) for i in range(40)]
    with ProfileStore(path) as store:  # a sweep interrupted after 15 cells
        store.put_many(cells[:15])
    measured: list[str] = []
    with ProfileStore(path) as store:  # the resumed sweep
        done = store.done_cells()
        for rec in cells:
            if rec.cell_id not in done:
                measured.append(rec.cell_id)
                store.put(rec)
        assert len(measured) == 25 and not set(measured) & done
        assert len(store) == 40 and _gpu_rows(path) == sum(len(r.gpus) for r in cells)
        store.put_many(cells)  # a full re-run changes nothing either
        assert len(store) == 40 and _gpu_rows(path) == sum(len(r.gpus) for r in cells)


def test_one_transaction_per_batch_and_speed(tmp_path: Path) -> None:
    base = make_record(3)
    recs = [base.model_copy(update={"run_id": f"r{i}"}) for i in range(10_000)]
    with ProfileStore(tmp_path / "big.sqlite") as store:
        statements: list[str] = []
        store._connection().set_trace_callback(statements.append)
        t0 = time.perf_counter()
        store.put_many(recs)
        t_put = time.perf_counter() - t0
        assert [s for s in statements if s.startswith(("BEGIN", "COMMIT"))] == [
            "BEGIN IMMEDIATE",
            "COMMIT",
        ]
        store._connection().set_trace_callback(None)
        t0 = time.perf_counter()
        out = store.usage()
        t_usage = time.perf_counter() - t0
        assert len(out) == 10_000 and len(store) == 10_000
    # generous bounds (a 2-core shared CI box); a per-row commit would blow them
    assert t_put < 10 and t_usage < 10


# --- export / import validation -----------------------------------------------------------------


def test_import_json_names_the_record_and_field(tmp_path: Path) -> None:
    with ProfileStore(tmp_path / "a.sqlite") as store:
        store.put_many([make_record(i) for i in range(3)])
        store.export_json(tmp_path / "x.json")
    doc = json.loads((tmp_path / "x.json").read_text())
    assert doc["format"] == "greenllm-profiles" and len(doc["records"]) == 3
    doc["records"][1]["ttft"]["p50_s"] = -1
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with ProfileStore(tmp_path / "b.sqlite") as b:
        with pytest.raises(ProfileError, match=r"record 2 of 3: ProfileRecord\.ttft\.p50_s = -1"):
            b.import_json(tmp_path / "bad.json")
        assert len(b) == 0  # all or nothing
        (tmp_path / "broken.json").write_text('{"format": "greenllm-profiles",\n "records": [}')
        with pytest.raises(ProfileError, match="invalid JSON at line 2"):
            b.import_json(tmp_path / "broken.json")
        (tmp_path / "other.json").write_text('{"format": "something"}')
        with pytest.raises(ProfileError, match="not a greenllm profile export"):
            b.import_json(tmp_path / "other.json")
        with pytest.raises(ProfileError, match="cannot read"):
            b.import_json(tmp_path / "missing.json")
        assert b.import_json(tmp_path / "x.json") == 3  # a bare list works too
        (tmp_path / "list.json").write_text(json.dumps(doc["records"][:1]))
        assert b.import_json(tmp_path / "list.json") == 1 and len(b) == 3


def test_import_csv_names_the_line_and_field(tmp_path: Path) -> None:
    with ProfileStore(tmp_path / "a.sqlite") as store:
        store.put_many([make_record(i) for i in range(3)])
        store.export_csv(tmp_path / "x.csv")
    with (tmp_path / "x.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert "gpus.1.energy_j" in rows[0] and "ttft.p99_s" in rows[0]
    rows[1]["workload.qps"] = "fast"
    with (tmp_path / "bad.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with ProfileStore(tmp_path / "b.sqlite") as b:
        with pytest.raises(ProfileError, match=r"bad\.csv line 3: Workload\.qps = 'fast'"):
            b.import_csv(tmp_path / "bad.csv")
        assert len(b) == 0
        rows[1]["workload.qps"] = "2.0"
        rows[1]["surprise"] = "1"
        with (tmp_path / "extra.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[1]), restval="")
            w.writeheader()
            w.writerows(rows)
        with pytest.raises(ProfileError, match=r"extra\.csv line 3: ProfileRecord\.surprise"):
            b.import_csv(tmp_path / "extra.csv")
        assert len(b) == 0


# --- paths and errors -----------------------------------------------------------------------------


def test_default_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GREENLLM_STORE", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert default_store_path() == tmp_path / "home/.local/share/greenllm/profiles.sqlite"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_store_path() == tmp_path / "xdg/greenllm/profiles.sqlite"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert (
        default_store_path()
        == tmp_path / "home/Library/Application Support/greenllm/profiles.sqlite"
    )
    monkeypatch.setenv("GREENLLM_STORE", str(tmp_path / "env.sqlite"))
    assert default_store_path() == tmp_path / "env.sqlite"
    assert ProfileStore().path == tmp_path / "env.sqlite"
    assert ProfileStore(tmp_path / "arg.sqlite").path == tmp_path / "arg.sqlite"  # argument wins


def test_folders_are_created_on_open_not_before(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path / "deep" / "er" / "p.sqlite")
    assert not (tmp_path / "deep").exists() and "not opened" in repr(store)
    assert len(store) == 0  # first use opens
    assert (tmp_path / "deep" / "er" / "p.sqlite").is_file()
    store.close()
    store.close()
    with pytest.raises(ProfileError, match="closed"):
        len(store)
    with pytest.raises(ConfigError, match="busy_timeout_s"):
        ProfileStore(tmp_path / "x", busy_timeout_s=0)


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    path.write_text("hello, I am a text file that is long enough to have a header" * 10)
    with pytest.raises(ProfileError, match=r"not a SQLite database.*another path") as info:
        ProfileStore(path).open()
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


def test_foreign_sqlite_database(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE photos (id INTEGER)")
    with pytest.raises(ProfileError, match=r"not a greenllm profile store.*photos"):
        ProfileStore(path).open()


def test_store_from_a_newer_greenllm(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    with ProfileStore(path) as store:
        store.put(make_record(0))
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (99, '2099-01-01', '9.0')")
    with pytest.raises(ProfileError, match=r"schema version 99.*upgrade greenllm"):
        ProfileStore(path).open()


def test_lock_timeout_is_translated(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    ProfileStore(path).open().close()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with ProfileStore(path, busy_timeout_s=0.05) as store:
            with pytest.raises(ProfileError, match=r"locked.*busy_timeout_s") as info:
                store.put(make_record(0))
            assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    finally:
        other.execute("ROLLBACK")
        other.close()


# --- migrations ---------------------------------------------------------------------------------


def _indexes(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            )
        }


def _old_store(
    path: Path, version: int, recs: list[ProfileRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store at schema ``version`` holding ``recs`` (as an older greenllm wrote it): today's
    rows copied into a file made by the first ``version`` migrations, less newer columns."""
    today = path.with_name("today-" + path.name)
    with ProfileStore(today) as new:
        new.put_many(recs)
    monkeypatch.setattr(store_mod, "MIGRATIONS", MIGRATIONS[:version])
    with ProfileStore(path) as old:
        assert old.schema_version == version
    monkeypatch.setattr(store_mod, "MIGRATIONS", MIGRATIONS)
    with sqlite3.connect(path) as conn:
        conn.execute("ATTACH DATABASE ? AS today", (str(today),))
        for table in ("profiles", "gpu_usage"):
            cols = ", ".join(r[1] for r in conn.execute(f"PRAGMA main.table_info({table})"))
            conn.execute(f"INSERT INTO main.{table} ({cols}) SELECT {cols} FROM today.{table}")
        conn.commit()
        conn.execute("DETACH DATABASE today")
    today.unlink()


def test_v1_store_is_migrated_to_latest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "v1.sqlite"
    recs = [make_record(i) for i in range(5)]
    _old_store(path, 1, recs, monkeypatch)  # an older greenllm: v1 only
    assert _indexes(path) == set()
    monkeypatch.setattr(store_mod, "MIGRATIONS", MIGRATIONS)
    with ProfileStore(path) as new:
        assert new.schema_version == len(MIGRATIONS)
        assert {r.cell_id: r for r in new.query()} == {r.cell_id: r for r in recs}
    assert {"profiles_by_workload", "profiles_by_configuration", "profiles_by_run"} <= _indexes(
        path
    )
    with sqlite3.connect(path) as conn:
        assert [
            r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")
        ] == list(range(1, len(MIGRATIONS) + 1))


def test_v3_store_gets_energy_source_modelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v3.sqlite"
    recs = [make_record(i).model_copy(update={"energy_source": "measured"}) for i in range(4)]
    _old_store(path, 3, recs, monkeypatch)
    with sqlite3.connect(path) as conn:
        assert "energy_source" not in {r[1] for r in conn.execute("PRAGMA table_info(profiles)")}
    with ProfileStore(path) as store:
        assert store.schema_version == len(MIGRATIONS) == 4
        read = store.query()
        assert {u.energy_source for u in store.usage()} == {"modelled"}
        store.put(recs[0])  # today's writes keep their source
        assert store.get(recs[0].cell_id) == recs[0]
    # the documented assumption: rows stored before version 4 are modelled, nothing else changes
    assert sorted(r.model_dump_json() for r in read) == sorted(
        r.model_copy(update={"energy_source": "modelled"}).model_dump_json() for r in recs
    )


def test_energy_source_round_trips_through_store_json_and_csv(tmp_path: Path) -> None:
    recs = [
        make_record(i).model_copy(update={"energy_source": src})
        for i, src in enumerate(("measured", "modelled", "unmeasured"))
    ]
    with ProfileStore(tmp_path / "a.sqlite") as store:
        store.put_many(recs)
        assert sorted(r.energy_source for r in store.query()) == [
            "measured", "modelled", "unmeasured"
        ]
        store.export_json(tmp_path / "x.json")
        store.export_csv(tmp_path / "x.csv")
    for name in ("x.json", "x.csv"):
        with ProfileStore(tmp_path / f"{name}.sqlite") as b:
            (b.import_json if name.endswith("json") else b.import_csv)(tmp_path / name)
            assert {r.cell_id: r for r in b.query()} == {r.cell_id: r for r in recs}


def test_exports_without_energy_source_import_as_modelled(tmp_path: Path) -> None:
    rec = make_record(1).model_copy(update={"energy_source": "measured"})
    with ProfileStore(tmp_path / "a.sqlite") as store:
        store.put(rec)
        store.export_json(tmp_path / "x.json")
        store.export_csv(tmp_path / "x.csv")
    doc = json.loads((tmp_path / "x.json").read_text())
    assert doc["format_version"] == 2  # version 2 added energy_source
    del doc["records"][0]["energy_source"]
    doc["format_version"] = 1
    (tmp_path / "old.json").write_text(json.dumps(doc))
    doc["format_version"] = 3
    (tmp_path / "future.json").write_text(json.dumps(doc))
    with ProfileStore(tmp_path / "f.sqlite") as b, pytest.raises(ProfileError, match="upgrade"):
        b.import_json(tmp_path / "future.json")
    with (tmp_path / "x.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    with (tmp_path / "old.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[c for c in rows[0] if c != "energy_source"])
        w.writeheader()
        w.writerows({k: v for k, v in r.items() if k != "energy_source"} for r in rows)
    for name in ("old.json", "old.csv"):
        with ProfileStore(tmp_path / f"{name}.sqlite") as b:
            (b.import_json if name.endswith("json") else b.import_csv)(tmp_path / name)
            assert b.query() == [rec.model_copy(update={"energy_source": "modelled"})]


def test_hand_made_v1_layout_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "hand.sqlite"
    with sqlite3.connect(path) as conn:  # what greenllm's first release wrote
        conn.execute(V1_PROFILES)
        conn.execute(V1_GPU_USAGE)
        conn.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY,"
            " applied_utc TEXT NOT NULL, greenllm_version TEXT NOT NULL)"
        )
        conn.execute("INSERT INTO schema_version VALUES (1, '2025-01-01T00:00:00+00:00', '0.0.1')")
    with ProfileStore(path) as store:
        assert store.schema_version == len(MIGRATIONS) and len(store) == 0
        store.put(make_record(1))
        assert store.get(make_record(1).cell_id) == make_record(1)


def test_a_third_migration_is_a_function_run_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v3.sqlite"
    with ProfileStore(path) as store:
        store.put_many([make_record(i) for i in range(4)])
    calls = []

    def v3_add_column(conn: sqlite3.Connection) -> None:
        calls.append(1)
        conn.execute("ALTER TABLE profiles ADD COLUMN energy_total_j REAL")
        conn.execute(
            "UPDATE profiles SET energy_total_j = (SELECT SUM(energy_j) FROM gpu_usage g"
            " WHERE g.cell_id = profiles.cell_id)"
        )

    monkeypatch.setattr(store_mod, "MIGRATIONS", [*MIGRATIONS, v3_add_column])
    for _ in range(2):
        with ProfileStore(path) as store:
            assert store.schema_version == len(MIGRATIONS) + 1 and len(store) == 4
    assert calls == [1]
    with sqlite3.connect(path) as conn:
        totals = dict(conn.execute("SELECT cell_id, energy_total_j FROM profiles"))
    assert totals == {make_record(i).cell_id: make_record(i).energy_j for i in range(4)}


def test_a_failing_migration_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "fail.sqlite"
    with ProfileStore(path) as store:
        store.put(make_record(0))

    def v3_broken(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE profiles ADD COLUMN half_done REAL")
        raise RuntimeError("boom")

    monkeypatch.setattr(store_mod, "MIGRATIONS", [*MIGRATIONS, v3_broken])
    n = len(MIGRATIONS)
    failed = rf"version {n} to {n + 1} failed.*unchanged at version {n}"
    with pytest.raises(ProfileError, match=failed):
        ProfileStore(path).open()
    monkeypatch.setattr(store_mod, "MIGRATIONS", MIGRATIONS)
    with ProfileStore(path) as store:
        assert store.schema_version == n and store.get(make_record(0).cell_id) == make_record(0)
    with sqlite3.connect(path) as conn:
        assert "half_done" not in {r[1] for r in conn.execute("PRAGMA table_info(profiles)")}


# --- several processes, and crashes ---------------------------------------------------------------


def _writer(*args: object) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "tests.profiler.store.store_writer", *map(str, args)]
    return subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_two_processes_write_concurrently(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    a = _writer("write", path, 0, 240, 1)  # 240 single-record transactions
    b = _writer("write", path, 120, 600, 8)  # overlapping cells, batches of 8
    for p in (a, b):
        _wait_for(p, "READY")
    path.with_suffix(".go").touch()  # both have the store open: start together
    for p in (a, b):
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with ProfileStore(path) as store:
        assert store.done_cells() == {make_record(i).cell_id for i in range(600)}
    assert _gpu_rows(path) == sum(len(make_record(i).gpus) for i in range(600))


def _wait_for(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith(prefix), (line, proc.stderr.read() if proc.stderr else "")
    return line


def _assert_consistent(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        orphans = conn.execute(
            "SELECT COUNT(*) FROM gpu_usage WHERE cell_id NOT IN (SELECT cell_id FROM profiles)"
        )
        assert orphans.fetchone()[0] == 0
    with ProfileStore(path) as store:
        n = len(store)
        assert store.done_cells() == {make_record(i).cell_id for i in range(n)}
    assert _gpu_rows(path) == sum(len(make_record(i).gpus) for i in range(n))
    return n


def test_sigkill_in_the_middle_of_a_batch_leaves_no_partial_batch(tmp_path: Path) -> None:
    path = tmp_path / "k.sqlite"
    proc = _writer("stall", path, 300, 3000)
    try:
        stalled = _wait_for(proc, "STALLED")  # half the big batch inserted, not committed
        assert int(stalled.split()[1]) >= 1500
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert _assert_consistent(path) == 300  # the committed batch, none of the killed one


def test_sigkill_at_a_random_moment_keeps_whole_batches(tmp_path: Path) -> None:
    path = tmp_path / "loop.sqlite"
    proc = _writer("loop", path, 250)
    try:
        _wait_for(proc, "COMMITTED")
        time.sleep(float(np.random.default_rng().uniform(0, 0.3)))
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    n = _assert_consistent(path)
    assert n >= 250 and n % 250 == 0
