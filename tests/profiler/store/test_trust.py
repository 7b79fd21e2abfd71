"""Hostile and malformed input at the store's boundaries: exports (symlinks, races, CSV
formulas), imports (bad bytes, deep nesting, odd columns, out-of-range values), API arguments
and hand-edited rows. Every failure is a GreenLLMError naming the file, row or argument."""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greenllm.errors import ConfigError, GreenLLMError, ProfileError
from greenllm.profiler.store import ProfileRecord, ProfileStore, Provenance
from greenllm.profiler.store.exchange import FORMULA_CHARS, escape_cell, unescape_cell
from tests.profiler.store.store_writer import make_record

REPO = Path(__file__).resolve().parents[3]
FORMULA_TEXTS = [f"{c}cmd|' /C calc'!A0" for c in FORMULA_CHARS] + [
    "=1+1",
    "+SUM(A1:A9)",
    "-2+3",
    "@HYPERLINK(\"http://x\")",
    "\t=1",
    "\r=1",
    "'",
    "'=already quoted",
    "''",
]


def _store(tmp_path: Path, n: int = 3) -> ProfileStore:
    store = ProfileStore(tmp_path / "s.sqlite").open()
    store.put_many([make_record(i) for i in range(n)])
    return store


def _with_host(rec: ProfileRecord, host: str, **extra: object) -> ProfileRecord:
    prov = rec.provenance.model_copy(update={"host": host, "extra": {**extra}})
    return rec.model_copy(update={"provenance": prov})


# --- atomic exports ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "csv"])
@pytest.mark.parametrize("planted", ["symlink", "dangling", "directory", "file"])
def test_export_never_follows_or_touches_a_planted_tmp(
    tmp_path: Path, fmt: str, planted: str
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    dest = tmp_path / f"out.{fmt}"
    tmp = dest.with_name(dest.name + ".tmp")
    if planted == "symlink":
        tmp.symlink_to(victim)
    elif planted == "dangling":
        tmp.symlink_to(tmp_path / "nowhere" / "x")
    elif planted == "directory":
        tmp.mkdir()
    else:
        tmp.write_text("someone's file")
    with _store(tmp_path) as store:
        n = getattr(store, f"export_{fmt}")(dest)
        assert n == 3
    assert victim.read_text() == "precious"
    assert tmp.is_symlink() or tmp.exists()  # left exactly as it was
    if planted == "file":
        assert tmp.read_text() == "someone's file"
    assert not dest.is_symlink() and dest.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_export_replaces_a_symlink_at_the_destination_not_its_target(
    tmp_path: Path, fmt: str
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    dest = tmp_path / f"out.{fmt}"
    dest.symlink_to(victim)
    with _store(tmp_path) as store:
        getattr(store, f"export_{fmt}")(dest)
    assert victim.read_text() == "precious" and not dest.is_symlink()


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_export_keeps_an_existing_files_mode_and_fails_typed(tmp_path: Path, fmt: str) -> None:
    dest = tmp_path / f"out.{fmt}"
    dest.write_text("old")
    dest.chmod(0o640)
    with _store(tmp_path) as store:
        getattr(store, f"export_{fmt}")(dest)
        assert dest.stat().st_mode & 0o777 == 0o640
        with pytest.raises(ProfileError, match="no-such-folder"):
            getattr(store, f"export_{fmt}")(tmp_path / "no-such-folder" / f"x.{fmt}")
        with pytest.raises(ProfileError, match="cannot write"):
            getattr(store, f"export_{fmt}")(tmp_path)  # a directory
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_concurrent_exports_to_one_path_all_succeed(tmp_path: Path, fmt: str) -> None:
    dest = tmp_path / f"out.{fmt}"
    with _store(tmp_path, n=40):
        pass
    errors: list[BaseException] = []
    counts: list[int] = []

    def export(run: int) -> None:
        try:
            with ProfileStore(tmp_path / "s.sqlite") as store:
                for _ in range(5):
                    counts.append(getattr(store, f"export_{fmt}")(dest))
        except BaseException as err:  # collected for the assertion below
            errors.append(err)

    threads = [threading.Thread(target=export, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and counts == [40] * 30
    with ProfileStore(tmp_path / "other.sqlite") as fresh:
        assert getattr(fresh, f"import_{fmt}")(dest) == 40  # a whole file, not a mix
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_concurrent_exports_from_processes(tmp_path: Path) -> None:
    with _store(tmp_path, n=20):
        pass
    dest = tmp_path / "out.json"
    code = (
        "import sys\n"
        "from greenllm.profiler.store import ProfileStore\n"
        "with ProfileStore(sys.argv[1]) as s:\n"
        "    for _ in range(10):\n"
        "        assert s.export_json(sys.argv[2]) == 20\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / "s.sqlite"), str(dest)],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert len(json.loads(dest.read_text())["records"]) == 20


# --- CSV formulas ------------------------------------------------------------------------------


@given(st.text())
def test_escape_cell_round_trips_and_never_starts_a_formula(text: str) -> None:
    escaped = escape_cell(text)
    assert unescape_cell(escaped) == text
    assert not escaped.startswith(FORMULA_CHARS)


@pytest.mark.parametrize("value", [-1.5, -3, 0, 2.5e-9])
def test_numbers_are_not_escaped(value: float) -> None:
    assert escape_cell(value) == value


@pytest.mark.parametrize("text", FORMULA_TEXTS)
def test_csv_export_quotes_formula_cells_and_import_restores_them(
    tmp_path: Path, text: str
) -> None:
    rec = _with_host(make_record(0), text, note=text)
    with ProfileStore(tmp_path / "a.sqlite") as store:
        store.put(rec)
        store.export_csv(tmp_path / "x.csv")
    with (tmp_path / "x.csv").open(newline="", encoding="utf-8") as f:
        row = next(csv.DictReader(f))
    assert row["provenance.host"] == "'" + text
    for cell in row.values():
        assert not cell.startswith(FORMULA_CHARS), cell
    with ProfileStore(tmp_path / "b.sqlite") as other:
        assert other.import_csv(tmp_path / "x.csv") == 1
        back = other.get(rec.cell_id)
    assert back is not None and back.provenance.host == text
    assert back.provenance.extra == {"note": text}
    assert back.model_dump() == rec.model_dump()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(host=st.text(min_size=1).filter(lambda s: s.strip() == s and "\x00" not in s))
def test_any_host_text_round_trips_through_csv(tmp_path: Path, host: str) -> None:
    try:
        rec = _with_host(make_record(1), host)
        Provenance.model_validate(rec.provenance.model_dump())
    except ConfigError:
        return  # not a valid host for the record model itself
    path = tmp_path / "h.csv"
    with ProfileStore(":memory:") as store:
        store.put(rec)
        store.export_csv(path)
    with ProfileStore(":memory:") as other:
        other.import_csv(path)
        back = other.get(rec.cell_id)
    assert back is not None and back.provenance.host == rec.provenance.host


# --- import: malformed files -------------------------------------------------------------------


def _export(tmp_path: Path, fmt: str) -> Path:
    path = tmp_path / f"good.{fmt}"
    with _store(tmp_path) as store:
        getattr(store, f"export_{fmt}")(path)
    return path


BAD_BYTES = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80abc"]


@pytest.mark.parametrize("fmt", ["json", "csv"])
@pytest.mark.parametrize("bad", BAD_BYTES)
def test_import_of_invalid_utf8_names_the_file(tmp_path: Path, fmt: str, bad: bytes) -> None:
    good = _export(tmp_path, fmt).read_bytes()
    path = tmp_path / f"bad.{fmt}"
    path.write_bytes(good[:40] + bad + good[40:])
    with ProfileStore(tmp_path / "t.sqlite") as store:
        with pytest.raises(ProfileError, match=r"bad\.(json|csv): .*(UTF-8|utf-8)"):
            getattr(store, f"import_{fmt}")(path)
        assert len(store) == 0


@pytest.mark.parametrize("depth", [500, 5_000, 100_000])
@pytest.mark.parametrize("shape", ["[", '{"a":'])
def test_import_json_nested_too_deeply(tmp_path: Path, depth: int, shape: str) -> None:
    close = "]" if shape == "[" else "}"
    path = tmp_path / "deep.json"
    path.write_text(shape * depth + "1" + close * depth)
    with ProfileStore(tmp_path / "t.sqlite") as store, pytest.raises(GreenLLMError, match="deep"):
        store.import_json(path)


@pytest.mark.parametrize("depth", [50, 900, 2_000, 50_000, 300_000])
@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_import_deep_value_inside_a_record(tmp_path: Path, depth: int, fmt: str) -> None:
    """A deep ``provenance.extra`` imports and reads back, or is refused naming the file."""
    deep = "[" * depth + "]" * depth
    text = _export(tmp_path, fmt).read_text(encoding="utf-8")
    needle = '"extra": {' if fmt == "json" else '"{""i"": '
    assert needle in text
    key = '"x": ' if fmt == "json" else '""x"": '
    text = text.replace(needle, needle + key + deep + ", ", 1)
    path = tmp_path / f"deep.{fmt}"
    path.write_text(text, encoding="utf-8")
    with ProfileStore(tmp_path / "t.sqlite") as store:
        try:
            assert getattr(store, f"import_{fmt}")(path) == 3
        except ProfileError as err:
            assert "deep." in str(err) and len(store) == 0
            return
        try:
            assert len(store.query()) == 3
        except ProfileError as err:  # stored, but too deep for this reader
            assert "stored row" in str(err)


@pytest.mark.parametrize(
    "stamp",
    [
        "9999-12-31T23:59:59-23:59",
        "0001-01-01T00:00:00+23:59",
        "10000-01-01T00:00:00",
        "2024-13-01T00:00:00",
        "not a time",
        1e300,
        -1e300,
        10**30,
        -(10**30),
        float("1e20"),
        None,
        [],
        {},
        True,
    ],
)
def test_import_json_bad_timestamp_names_the_record(tmp_path: Path, stamp: object) -> None:
    doc = json.loads(_export(tmp_path, "json").read_text())
    doc["records"][1]["provenance"]["created_utc"] = stamp
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    with ProfileStore(tmp_path / "t.sqlite") as store:
        with pytest.raises(ProfileError, match=r"t\.json: record 2 of 3"):
            store.import_json(path)
        assert len(store) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_requests", 10**400),
        ("duration_s", 10**400),
        ("duration_s", "1e999999"),
        ("input_tokens", -(10**400)),
        ("qps_bad", "x"),
    ],
)
def test_import_json_out_of_range_numbers(tmp_path: Path, field: str, value: object) -> None:
    doc = json.loads(_export(tmp_path, "json").read_text())
    doc["records"][0][field] = value
    path = tmp_path / "n.json"
    path.write_text(json.dumps(doc))
    store = ProfileStore(tmp_path / "t.sqlite")
    with store, pytest.raises(ProfileError, match=r"n\.json"):
        store.import_json(path)


@given(st.binary(max_size=200))
@settings(max_examples=150, deadline=None)
def test_import_json_of_any_bytes_is_typed(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.json"
        path.write_bytes(data)
        with ProfileStore(":memory:") as store:
            try:
                store.import_json(path)
            except GreenLLMError as err:
                assert "x.json" in str(err)


BAD_COLUMNS = [
    "a" + ".a" * 5_000,  # RecursionError before
    "gpus.٠.gpu",  # Arabic-Indic digit: KeyError before
    "gpus.０.gpu",  # fullwidth digit
    "gpus.².gpu",  # superscript two
    "gpus.00.gpu",
    "gpus.01.gpu",
    "gpus..gpu",
    ".cell",
    "ttft.",
    "",
    "0",
    "1.x",
    "tt\u200bft.p50_s",
    "provenance.é",
]


@pytest.mark.parametrize("column", BAD_COLUMNS)
def test_import_csv_odd_column_names_name_the_file_and_column(
    tmp_path: Path, column: str
) -> None:
    good = _export(tmp_path, "csv").read_text(encoding="utf-8").splitlines()
    header = good[0] + "," + (f'"{column}"' if "," in column else column)
    path = tmp_path / "odd.csv"
    path.write_text("\n".join([header, *(line + ",1" for line in good[1:])]) + "\n")
    with ProfileStore(tmp_path / "t.sqlite") as store:
        with pytest.raises(ProfileError, match=r"odd\.csv line \d") as err:
            store.import_csv(path)
        assert len(store) == 0
    assert "Traceback" not in str(err.value)


@given(
    st.lists(
        st.text(alphabet=st.characters(codec="utf-8"), min_size=0, max_size=12),
        min_size=1,
        max_size=4,
    ),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
)
@settings(max_examples=200, deadline=None)
def test_import_csv_of_any_header_and_cells_is_typed(parts: list[str], cell: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow([".".join(parts), "gpus." + parts[0]])
            w.writerow([cell, cell])
        with ProfileStore(":memory:") as store:
            try:
                store.import_csv(path)
            except GreenLLMError as err:
                assert "x.csv" in str(err)


# --- API arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["5", b"5", None, [5], True, float("nan"), float("inf"), 0, -1])
def test_busy_timeout_must_be_a_number(value: object) -> None:
    with pytest.raises(ConfigError, match="busy_timeout_s"):
        ProfileStore(":memory:", busy_timeout_s=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [5, 5.0, 0.001, 86_400])
def test_busy_timeout_accepts_numbers(value: float) -> None:
    assert ProfileStore(":memory:", busy_timeout_s=value).busy_timeout_s == float(value)


@pytest.mark.parametrize("value", [1, 3, 7.5])
def test_store_path_must_be_a_path(value: object) -> None:
    with pytest.raises(ConfigError, match="path"):
        ProfileStore(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("qps", "1"),
        ("qps", b"1"),
        ("qps", True),
        ("qps", [1.0]),
        ("qps", float("nan")),
        ("qps", float("inf")),
        ("qps", -1.0),
        ("qps", 0),
        ("application", 3),
        ("application", ["chat"]),
        ("backend", 1),
        ("run_id", object()),
        ("kind", 2),
        ("configuration_id", 12),
        ("request_size", 64),
    ],
)
def test_query_filters_are_checked(tmp_path: Path, argument: str, value: object) -> None:
    with _store(tmp_path) as store:
        for method in (store.query, store.usage, store.configurations, store.export_json):
            args = (tmp_path / "q.json",) if method == store.export_json else ()
            with pytest.raises(ConfigError, match=argument):
                method(*args, **{argument: value})


@pytest.mark.parametrize("qps", [1, 1.0, 2, 7.0])
def test_query_accepts_int_and_float_qps(tmp_path: Path, qps: float) -> None:
    import numpy as np

    with _store(tmp_path, n=8) as store:
        found = store.query(qps=qps)
        assert found == store.query(qps=np.float64(qps)) == store.query(qps=float(qps))


@pytest.mark.parametrize("records", [None, 5, 1.5, make_record(0), "abc", b"x", object()])
def test_put_many_needs_an_iterable_of_records(records: object) -> None:
    with ProfileStore(":memory:") as store:
        with pytest.raises(ConfigError, match=r"put_many|records"):
            store.put_many(records)  # type: ignore[arg-type]
        if not isinstance(records, ProfileRecord):
            with pytest.raises(ConfigError, match="put_many item 1"):
                store.put_many([make_record(0), records])  # type: ignore[list-item]
        assert len(store) == 0


# --- hand-edited rows --------------------------------------------------------------------------


HAND_EDITS = [
    ("created_utc", "yesterday"),
    ("created_utc", "2024-02-30T00:00:00"),
    ("created_utc", "9999-99-99"),
    ("created_utc", 12345),
    ("created_utc", b"\xff\xfe"),
    ("extra_json", "{not json"),
    ("extra_json", "[" * 100_000 + "]" * 100_000),
    ("extra_json", 3),
    ("workload_json", "{"),
    ("workload_json", "[]"),
    ("workload_json", '{"qps": "fast"}'),
    ("configuration_json", "{oops"),
    ("configuration_json", '{"kind": "warp"}'),
    ("configuration_json", "[" * 100_000 + "]" * 100_000),
]


@pytest.mark.parametrize(("column", "value"), HAND_EDITS)
def test_hand_edited_row_names_the_row(tmp_path: Path, column: str, value: object) -> None:
    path = tmp_path / "s.sqlite"
    with _store(tmp_path) as store:
        victim = store.query()[1].cell_id
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA ignore_check_constraints = ON")
    try:
        conn.execute(f"UPDATE profiles SET {column} = ? WHERE cell_id = ?", (value, victim))
        conn.commit()
    except sqlite3.IntegrityError:
        pytest.skip(f"the schema itself refuses {column} = {value!r}")
    finally:
        conn.close()
    with ProfileStore(path) as store:
        with pytest.raises(ProfileError, match=victim) as err:
            store.query()
        assert "hand" in str(err.value)
        with pytest.raises(ProfileError, match=victim):
            store.get(victim)
        if column == "configuration_json":
            with pytest.raises(ProfileError):
                store.configurations()
        others = [c for c in store.done_cells() if c != victim]
        for cid in others:
            assert store.get(cid) is not None  # the other rows still read


def test_files_given_as_any_path_like(tmp_path: Path) -> None:
    with _store(tmp_path) as store:
        assert store.export_json(os.fspath(tmp_path / "a.json")) == 3
        assert store.export_csv(tmp_path / "a.csv") == 3
