"""Export and import of profile stores as JSON or CSV (``docs/profile-store.md``).

:meth:`ProfileStore.export_json <greenllm.profiler.store.store.ProfileStore.export_json>` and its
siblings call these. JSON is a ``greenllm-profiles`` document with one record per line; CSV has
one row per record with dotted columns (``ttft.p50_s``, ``gpus.1.gpu``). An import validates
every record first and then stores them all in one transaction, so a bad row imports nothing.
Ids in a file (``cell_id``, any ``configuration_id``) are never trusted: an import recomputes
them from the record's configuration and workload, so files written by an older greenllm,
whose ids hashed differently, import under today's keys.
Files are written to a temporary file created exclusively (``mkstemp``) in the destination's
folder and renamed over it (``os.replace``), so a reader never sees half a file, a planted
``<dest>.tmp`` symlink is never followed and concurrent exports to one path all succeed (the
last one wins). CSV cells that a spreadsheet would run as a formula (a text starting with ``=``,
``+``, ``-``, ``@``, a tab or a carriage return) are written with a leading ``'``, and so is a
text that starts with ``'``; an import removes that one quote, so a round trip is exact.
Malformed input (bad UTF-8, JSON nested too deeply, odd column names, out-of-range values) is a
:class:`~greenllm.errors.ProfileError` naming the file and the record, line or column.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import stat
import tempfile
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from greenllm.config import Configuration, FrozenModel, Workload
from greenllm.errors import ConfigError, ProfileError
from greenllm.profiler.store.records import ProfileRecord

if TYPE_CHECKING:
    from greenllm.profiler.store.store import ProfileStore

__all__ = [
    "FORMAT",
    "FORMULA_CHARS",
    "MAX_COLUMN_DEPTH",
    "escape_cell",
    "export_csv",
    "export_json",
    "import_csv",
    "import_json",
    "unescape_cell",
]

FORMAT = "greenllm-profiles"
# Keys an export may carry that are derived from the record: dropped on import, recomputed.
_DERIVED = frozenset({"cell_id", "configuration_id"})
#: First characters that make a spreadsheet read a CSV cell as a formula (OWASP "CSV
#: injection"); such text cells are exported behind a ``'``.
FORMULA_CHARS = ("=", "+", "-", "@", "\t", "\r")
_QUOTE = "'"
#: Version of the JSON export: 2 adds each record's ``energy_source`` (version 1 documents,
#: without it, import as ``"modelled"``, what every energy of those releases was).
FORMAT_VERSION = 2
#: Most dots a CSV column name may have (the deepest real one, ``gpus.0.energy_j``, has 2).
MAX_COLUMN_DEPTH = 8
_INDEX = re.compile(r"0|[1-9][0-9]*")
# Errors the standard library raises on hostile input instead of a ValueError subclass of ours.
_MALFORMED = (ValueError, TypeError, OverflowError, RecursionError, MemoryError)


def export_json(store: ProfileStore, path: str | os.PathLike[str], **filters: Any) -> int:
    """Write ``store``'s records (all, or those matching the filters) as JSON; return how many."""
    records = store.query(**filters)
    from greenllm.version import __version__

    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "greenllm_version": __version__,
        "exported_utc": datetime.now(UTC).isoformat(),
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
        flat.append({k: escape_cell(v) for k, v in row.items()})
    header = list(dict.fromkeys(k for row in flat for k in row)) or ["cell_id"]

    def write(f: Any) -> None:
        # RFC 4180 line ends: the writer then quotes every cell holding a CR or an LF (with
        # "\n" alone, a bare CR in a text was written unquoted and split the row on reading).
        w = csv.DictWriter(f, fieldnames=header, restval="", lineterminator="\r\n")
        w.writeheader()
        w.writerows(flat)

    _write_atomic(Path(path), write)
    return len(records)


def import_json(store: ProfileStore, path: str | os.PathLike[str]) -> int:
    """Validate every record of a JSON export, then store them all in one transaction."""
    src = Path(path)
    try:
        data = src.read_bytes()
    except OSError as err:
        raise ProfileError(f"cannot read {src}: {err}") from err
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise ProfileError(
            f"{src}: not UTF-8 text (bad byte at offset {err.start}); nothing imported"
        ) from err
    except json.JSONDecodeError as err:
        raise ProfileError(
            f"{src}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from err
    except RecursionError as err:
        raise ProfileError(f"{src}: JSON nested too deeply; nothing imported") from err
    except _MALFORMED as err:  # e.g. a number too long to convert
        raise ProfileError(f"{src}: unreadable JSON ({err}); nothing imported") from err
    if isinstance(doc, dict):
        if doc.get("format") != FORMAT or not isinstance(doc.get("records"), list):
            raise ProfileError(
                f"{src}: not a greenllm profile export (want format {FORMAT!r} and a records list)"
            )
        version = doc.get("format_version", 1)
        if version not in (1, FORMAT_VERSION):
            raise ProfileError(
                f"{src}: format_version {version!r:.20} is not one this greenllm reads "
                f"(1 to {FORMAT_VERSION}): upgrade greenllm"
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
            header = reader.fieldnames or []
            bad = next((c for c in header if _bad_column(c)), None)
            if bad is not None:
                raise ProfileError(
                    f"{src} line 1: column {bad!r}: {_bad_column(bad)}; nothing imported"
                )
            for row in reader:
                where = f"{src} line {reader.line_num}"
                try:
                    raw = _numbers(_unflatten(row), ProfileRecord)
                except _MALFORMED as err:
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
                    memo[text] = cls.model_validate(value)
                raw = {**raw, key: memo[text]}
        return raw


def _validate(raw: dict[str, Any], where: str, shared: _Shared) -> ProfileRecord:
    try:
        return ProfileRecord.model_validate(shared(raw))
    except ConfigError as err:
        raise ProfileError(f"{where}: {err}; fix or remove it (nothing was imported)") from err
    except RecursionError as err:
        raise ProfileError(f"{where}: nested too deeply; nothing imported") from err
    except _MALFORMED as err:  # the standard library's own errors (e.g. OverflowError)
        raise ProfileError(
            f"{where}: {type(err).__name__}: {err}; fix or remove it (nothing was imported)"
        ) from err


def escape_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet will not run: text starting with a formula character (or ``'``)
    gets a leading ``'``; numbers and other text are returned as they are."""
    if isinstance(value, str) and value.startswith((*FORMULA_CHARS, _QUOTE)):
        return _QUOTE + value
    return value


def unescape_cell(value: str) -> str:
    """The inverse of :func:`escape_cell` for a CSV cell read back (drops one leading ``'``)."""
    return value[1:] if value.startswith(_QUOTE) else value


def _bad_column(name: str | None) -> str:
    """Why a CSV header column cannot be a record field ("" if it can)."""
    if name is None or name == "":
        return "empty column name"
    if name in _DERIVED or name == "provenance.extra":
        return ""
    parts = name.split(".")
    if len(parts) > MAX_COLUMN_DEPTH + 1:
        return f"more than {MAX_COLUMN_DEPTH} dots"
    if any(p == "" for p in parts):
        return "empty part between dots"
    if not name.isascii():
        return "not an ASCII name"
    if parts[0].isdigit():
        return "a column name cannot start with a number"
    return ""


def _write_atomic(dest: Path, write: Callable[[Any], None]) -> None:
    """Write through a fresh, exclusively created temporary file in ``dest``'s folder, then
    rename it over ``dest`` (atomic; a symlink at ``dest`` is replaced, never followed)."""
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            os.fchmod(f.fileno(), _file_mode(dest))
            write(f)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).replace(dest)
        tmp = None
    except OSError as err:
        raise ProfileError(
            f"cannot write {dest}: {err}; check the folder exists and is writable"
        ) from err
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                Path(tmp).unlink()


def _file_mode(dest: Path) -> int:
    """An existing regular file's mode, else what ``open()`` would give under the umask."""
    try:
        st = os.lstat(dest)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    except OSError:
        pass
    return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask is process-wide and racy)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


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
        val = unescape_cell(val)
        if key == "provenance.extra":  # JSON, not dotted columns: kept out of _listify
            try:
                extra = json.loads(val)
            except json.JSONDecodeError as err:
                raise ValueError(f"column {key!r} is not valid JSON: {err}") from err
            except RecursionError as err:
                raise ValueError(f"column {key!r}: JSON nested too deeply") from err
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


def _numbers(node: Any, model: type[FrozenModel]) -> Any:
    """``node`` (unflattened CSV text cells) with the cells of ``model``'s int and float fields,
    nested models included, converted to numbers; a cell that is not a number stays text, so
    validation names its field."""
    if not isinstance(node, dict):
        return node
    out = dict(node)
    for name, value in node.items():
        info = model.model_fields.get(name)
        if info is None:
            continue
        if isinstance(value, str) and name in model.number_fields():
            out[name] = _number(value)
        elif isinstance(value, dict | list):
            sub = _models_in(info.annotation)
            items = value if isinstance(value, list) else [value]
            done = [_numbers(v, _owner(sub, v)) if isinstance(v, dict) else v for v in items]
            out[name] = done if isinstance(value, list) else done[0]
    return out


def _number(text: str) -> int | float | str:
    """``text`` as an int, else a float, else unchanged."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _models_in(annotation: Any) -> list[type[FrozenModel]]:
    """The models inside ``annotation`` (through Optional, Union, Annotated, tuple)."""
    if isinstance(annotation, type) and issubclass(annotation, FrozenModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _owner(models: list[type[FrozenModel]], node: dict[str, Any]) -> type[FrozenModel]:
    """The first of ``models`` that has every key of ``node`` as a field (else the first)."""
    for m in models:
        if set(node) <= set(m.model_fields):
            return m
    return models[0] if models else FrozenModel


def _listify(node: Any) -> Any:
    if not isinstance(node, dict) or not node:
        return node
    items = {k: _listify(v) for k, v in node.items()}
    numbered = [_INDEX.fullmatch(k) is not None for k in items]
    if all(numbered):
        if sorted(int(k) for k in items) != list(range(len(items))):
            raise ValueError(f"list columns must be numbered 0..n-1, got {sorted(items)}")
        return [items[str(i)] for i in range(len(items))]
    if any(numbered):
        raise ValueError(f"columns mix list numbers and names: {sorted(items)}")
    return items
