"""The fleet file: the example validates; bad files are one ConfigError naming the file's line
and the field; hosts, links and the inventory read as written."""

from __future__ import annotations

from pathlib import Path

import pytest

from greenllm.errors import ConfigError
from greenllm.fleet import load_fleet, parse_fleet

EXAMPLE = Path(__file__).parents[2] / "examples" / "fleet.toml"
TEXT = EXAMPLE.read_text()


def test_the_example_reads_as_written() -> None:
    spec = load_fleet(EXAMPLE)
    assert spec.inventory() == {"T4": 4, "V100": 2, "A100": 2}
    assert spec.gpu_types == ("T4", "V100", "A100")
    assert [(w.name, w.qps) for w in spec.workloads] == [("chat", 3.0), ("code", 1.0),
                                                         ("summaries", 0.5)]  # fmt: skip
    assert spec.link_gbps("A100", "T4") == 25.0  # across hosts: the [[links]] entry
    assert spec.link_gbps("V100", "T4") == 16.0  # one host: the default
    assert spec.gpus[0].lifetime_years == 10 and spec.gpus[2].lifetime_years == 7.0


@pytest.mark.parametrize("old, new, field, message", [
    ("qps = 1.0", "qps = -1.0", "workloads[1].qps", "greater than 0"),
    ("qps = 0.5", 'qps = "fast"', "workloads[2].qps", "valid number"),
    ("count = 4", "count = 4.5", "gpus[0].count", "valid integer"),
    ("gbps = 25", "gbps = 25\nspeed = 3", "links[0].speed", "Extra inputs"),
    ('hosts = ["old-rack", "new-node"]', 'hosts = ["old-rack", "attic"]', "links[0].hosts",
     "no GPUs on host 'attic'"),
    ('name = "code"', 'name = "chat"', "workloads[1].name", "must be distinct"),
    ('application = "longbench"', 'application = "longbench"\nsizes = {p25 = [1, 1], '
     'p50 = [2, 2], p75 = [3, 3]}', "workloads[2]", "exactly one of application"),
    ('type = "V100"', 'type = ""', "gpus[1].type", "at least 1 character"),
])  # fmt: skip
def test_errors_name_the_line_and_the_field(old: str, new: str, field: str, message: str) -> None:
    bad = TEXT.replace(old, new, 1)
    assert bad != TEXT
    with pytest.raises(ConfigError) as err:
        parse_fleet(bad, source="f.toml")
    text = str(err.value)
    assert f": {field}: " in text and message in text
    line = int(text.split(":")[1])
    key = None if field.endswith("]") else field.rsplit(".", 1)[-1]
    table, index = field.split("[")[0], int(field.split("[")[1].split("]")[0])
    headers = [i for i, t in enumerate(bad.splitlines(), 1) if t.strip() == f"[[{table}]]"]
    assert line >= headers[index] and (index + 1 == len(headers) or line < headers[index + 1])
    if key is not None:
        assert bad.splitlines()[line - 1].lstrip().startswith(key)


def test_whole_file_errors() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_fleet("gpus = [", source="f.toml")
    with pytest.raises(ConfigError, match="region or intensity_g_per_kwh, not both"):
        parse_fleet('intensity_g_per_kwh = 100\n' + TEXT)
    with pytest.raises(ConfigError, match="no such file"):
        load_fleet(EXAMPLE.with_name("missing.toml"))


def test_own_sizes_need_an_slo() -> None:
    own = TEXT.replace('application = "longbench"',
                       'sizes = {p25 = [700, 40], p50 = [1500, 90], p75 = [2600, 180]}')
    with pytest.raises(ConfigError, match="needs ttft_s and tpot_s"):
        parse_fleet(own)
    spec = parse_fleet(own.replace("qps = 0.5", "qps = 0.5\nttft_s = 2.0\ntpot_s = 0.1"))
    assert spec.workloads[2].sizes == {"p25": [700, 40], "p50": [1500, 90], "p75": [2600, 180]}


def test_the_intensity_comes_from_the_file_a_provider_or_the_region() -> None:
    assert load_fleet(EXAMPLE).intensity() == (261.0, "CISO (annual)")
    live = parse_fleet(TEXT.replace('region = "CISO"', 'region = "CISO"\n'
                                    'intensity_provider = "static"\nzone = "MISO"'))
    g, source = live.intensity()
    assert g == 501.0 and "MISO" in source
    fixed = parse_fleet(TEXT.replace('region = "CISO"', "intensity_g_per_kwh = 42.0"))
    assert fixed.intensity()[0] == 42.0
    with pytest.raises(ConfigError, match="year"):
        parse_fleet(TEXT.replace('region = "CISO"', 'region = "CISO"\n'
                                 'intensity_provider = "trace"')).intensity()
    with pytest.raises(ConfigError, match="intensity_provider"):
        parse_fleet(TEXT.replace('region = "CISO"', 'intensity_g_per_kwh = 1.0\n'
                                 'intensity_provider = "static"'))
