"""Export and import of profile stores as JSON or CSV (``docs/profile-store.md``).

:meth:`ProfileStore.export_json <greenllm.profiler.store.store.ProfileStore.export_json>` and its
siblings call these. JSON is a ``greenllm-profiles`` document with one record per line; CSV has
one row per record with dotted columns (``ttft.p50_s``, ``gpus.1.gpu``). An import validates
every record first and then stores them all in one transaction, so a bad row imports nothing.
Ids in a file (``cell_id``, any ``configuration_id``) are never trusted: an import recomputes
them from the record's configuration and workload, so files written by an older greenllm,
whose ids hashed differently, import under today's keys.
Files are written to a ``.tmp`` sibling and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from greenllm.config import Configuration, Workload
from greenllm.errors import ConfigError, ProfileError
from greenllm.profiler.store.records import ProfileRecord

if TYPE_CHECKING:
    from greenllm.profiler.store.store import ProfileStore

__all__ = ["FORMAT", "export_csv", "export_json", "import_csv", "import_json"]

FORMAT = "greenllm-profiles"
# Keys an export may carry that are derived from the record: dropped on import, recomputed.
_DERIVED = frozenset({"cell_id", "configuration_id"})


def export_json(store: ProfileStore, path: str | os.PathLike[str], **filters: Any) -> int:
    """Write ``store``'s records (all, or those matching the filters) as JSON; return how many."""
    records = store.query(**filters)
    from greenllm.version import __version__

    meta = {
        "format": FORMAT,
        "format_version": 1,
        "greenllm_version": __version__,
        "exported_utc": datetime.now(timezone.utc).isoformat(),
    }

    def write(f: Any) -> None:  # one record per line; json.dumps without indent is C-fast
        f.write(json.dumps(meta)[:-1] + ', "records": [\n')
        f.write(
            ",\n".join(
                json.dumps({"cell_id": r.cell_id, **r.model_dump(mode="json")}, allow_nan=False)
                for r in records
            )
        )
        f.write("\n]}\n")

    _write_atomic(Path(path), write)
    return len(records)


def export_csv(store: ProfileStore, path: str | os.PathLike[str], **filters: Any) -> int:
    """Write records as CSV, one row each, dotted columns (``ttft.p50_s``, ``gpus.1.gpu``)."""
    records = store.query(**filters)
    flat: list[dict[str, Any]] = []
    for r in records:
        row: dict[str, Any] = {"cell_id": r.cell_id}
        _flatten(r.model_dump(mode="json"), "", row)
        flat.append(row)
    header = list(dict.fromkeys(k for row in flat for k in row)) or ["cell_id"]

    def write(f: Any) -> None:
        w = csv.DictWriter(f, fieldnames=header, restval="", lineterminator="\n")
        w.writeheader()
        w.writerows(flat)

    _write_atomic(Path(path), write)
    return len(records)


def import_json(store: ProfileStore, path: str | os.PathLike[str]) -> int:
    """Validate every record of a JSON export, then store them all in one transaction."""
    src = Path(path)
    try:
        doc = json.loads(src.read_text(encoding="utf-8"))
    except OSError as err:
        raise ProfileError(f"cannot read {src}: {err}") from err
    except json.JSONDecodeError as err:
        raise ProfileError(
            f"{src}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from err
    if isinstance(doc, dict):
        if doc.get("format") != FORMAT or not isinstance(doc.get("records"), list):
            raise ProfileError(
                f"{src}: not a greenllm profile export (want format {FORMAT!r} and a records list)"
            )
        if doc.get("format_version", 1) != 1:
            raise ProfileError(
                f"{src}: format_version {doc['format_version']} is newer: upgrade greenllm"
            )
        doc = doc["records"]
    if not isinstance(doc, list):
        raise ProfileError(f"{src}: expected a list of records or a {FORMAT!r} document")
    records, shared = [], _Shared()
    for i, raw in enumerate(doc, start=1):
        if not isinstance(raw, dict):
            raise ProfileError(
                f"{src}: record {i} is a {type(raw).__name__}, not an object; nothing imported"
            )
        raw = {k: v for k, v in raw.items() if k not in _DERIVED}
        records.append(_validate(raw, f"{src}: record {i} of {len(doc)}", shared))
    return store.put_many(records)


def import_csv(store: ProfileStore, path: str | os.PathLike[str]) -> int:
    """Validate every row of a CSV export, then store them all in one transaction."""
    src = Path(path)
    records, shared = [], _Shared()
    try:
        with src.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            for row in reader:
                where = f"{src} line {reader.line_num}"
                try:
                    raw = _unflatten(row)
                except ValueError as err:
                    raise ProfileError(f"{where}: {err}; nothing imported") from err
                records.append(_validate(raw, where, shared))
    except OSError as err:
        raise ProfileError(f"cannot read {src}: {err}") from err
    except (csv.Error, UnicodeDecodeError) as err:
        raise ProfileError(f"{src}: not a readable CSV file: {err}") from err
    return store.put_many(records)


class _Shared:
    """Validates each distinct workload / configuration dict of an import once."""

    def __init__(self) -> None:
        self.memo: dict[str, dict[str, Any]] = {"workload": {}, "configuration": {}}

    def __call__(self, raw: dict[str, Any]) -> dict[str, Any]:
        """``raw`` with its workload / configuration dicts validated once per distinct value."""
        for key, cls in (("workload", Workload), ("configuration", Configuration)):
            value = raw.get(key)
            if isinstance(value, dict):
                memo = self.memo[key]
                text = json.dumps(value, sort_keys=True)
                if text not in memo:
                    memo[text] = cls(**value)
                raw = {**raw, key: memo[text]}
        return raw


def _validate(raw: dict[str, Any], where: str, shared: _Shared) -> ProfileRecord:
    try:
        return ProfileRecord.model_validate(shared(raw))
    except ConfigError as err:
        raise ProfileError(f"{where}: {err}; fix or remove it (nothing was imported)") from err


def _write_atomic(dest: Path, write: Callable[[Any], None]) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    try:
        with tmp.open("w", newline="", encoding="utf-8") as f:
            write(f)
        tmp.replace(dest)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise ProfileError(
            f"cannot write {dest}: {err}; check the folder exists and is writable"
        ) from err


def _flatten(obj: Any, prefix: str, out: dict[str, Any]) -> None:
    """Dotted CSV columns: ``ttft.p50_s``, ``gpus.0.energy_j``; ``provenance.extra`` stays JSON."""
    if prefix == "provenance.extra":
        out[prefix] = json.dumps(obj, sort_keys=True)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f"{prefix}.{k}" if prefix else k, out)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _flatten(v, f"{prefix}.{i}", out)
    elif obj is not None:  # None is every optional field's default: leave the cell empty
        out[prefix] = obj


_UNSET = object()


def _unflatten(row: dict[str, str]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    extra: Any = _UNSET
    for key, val in row.items():
        if key is None:
            raise ValueError(f"more fields than the header has columns: {val}")
        if key in _DERIVED or val in (None, ""):
            continue
        if key == "provenance.extra":  # JSON, not dotted columns: kept out of _listify
            try:
                extra = json.loads(val)
            except json.JSONDecodeError as err:
                raise ValueError(f"column {key!r} is not valid JSON: {err}") from err
            continue
        *parents, leaf = key.split(".")
        node = root
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"column {key!r} clashes with column {part!r}")
        node[leaf] = val
    out = _listify(root)
    if extra is not _UNSET:
        out.setdefault("provenance", {})["extra"] = extra
    return out


def _listify(node: Any) -> Any:
    if not isinstance(node, dict) or not node:
        return node
    items = {k: _listify(v) for k, v in node.items()}
    if all(k.isdigit() for k in items):
        if sorted(int(k) for k in items) != list(range(len(items))):
            raise ValueError(f"list columns must be numbered 0..n-1, got {sorted(items)}")
        return [items[str(i)] for i in range(len(items))]
    return items
