"""`greenllm gpus` and `greenllm regions`."""

from __future__ import annotations

from tests.cli.helpers import run, strict_json


def test_gpus(capsys) -> None:
    code, out, _ = run(capsys, ["gpus", "--json"])
    assert code == 0
    assert {"T4", "V100", "A100", "H100"} <= {g["name"] for g in strict_json(out)}


def test_regions_have_name_year_and_source(capsys) -> None:
    code, out, _ = run(capsys, ["regions", "--json"])
    assert code == 0
    regions = strict_json(out)
    assert regions["NCSW"]["g_per_kwh"] == 17 and regions["MISO"]["g_per_kwh"] == 501
    assert all({"name", "year", "source", "kind"} <= set(r) for r in regions.values())
    assert regions["CISO"]["year"] == 2022 and "GreenLLM" in regions["CISO"]["source"]
    code, text, _ = run(capsys, ["regions"])
    assert code == 0
    header = text.splitlines()[0].split()
    assert header == ["region", "g_per_kwh", "name", "kind", "year", "source"]
    assert any(line.startswith("CISO") and "2022" in line for line in text.splitlines())
