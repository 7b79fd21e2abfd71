"""Fuzz the arguments of every subcommand (hypothesis): whatever the values, the command exits
0, 1 or 2 with at most one error line, no traceback, and no NaN or infinity on stdout; its
--json output parses with a strict parser. Commands stop before heavy work (demo
--analysis-only, profile --dry-run, plan on a missing store), so each example is fast."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cli.helpers import check_contract, run

TMP = Path(tempfile.mkdtemp(prefix="greenllm-cli-fuzz-"))

BAD_NUMBERS = ["nan", "NaN", "inf", "-inf", "Infinity", "1e-320", "1e308", "-1e308", "-1", "0",
               "-0", "", " ", "abc", "1e999", "99999999999", "9" * 40, "1e-300", "0.5", "1",
               "7", "3600", "0x10", "1_000", "1e6"]  # fmt: skip
BAD_RANGES = ["", ",", ",,,", "1,,2", "5:1:1", "1:2", "1:2:3:4", "0:100:1e-9", "1:1e12:1",
              "nan:1:1", "1:inf:1", "1:2:0", "-1:2:1", "a:b:c", "1,inf", "1,nan", "1:3:1",
              "0.5:2:0.5", "1,2,4", "1e-300", "0:1e308:1"]  # fmt: skip

numbers = st.one_of(
    st.sampled_from(BAD_NUMBERS),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
)
ranges = st.one_of(
    st.sampled_from(BAD_RANGES),
    st.tuples(numbers, numbers, numbers).map(":".join),
    st.lists(numbers, min_size=1, max_size=4).map(",".join),
)
run_specs = st.tuples(st.sampled_from(["A100", "T4", "", "B200X"]), numbers, numbers).map(
    ":".join
)

BASES = {
    "carbon": ["carbon", "--gpu", "A100", "--seconds", "3600", "--energy-j", "1.2e6"],
    "analyze": ["analyze", "--standalone", "A100:3600:1.2e6", "--disaggregated",
                "A100:3600:6e5", "--disaggregated", "T4:3600:2e5"],
    "demo": ["demo", "--analysis-only", "--out", str(TMP / "demo")],
    "profile": ["profile", "--dry-run", "--store", str(TMP / "none.sqlite"), "--configs",
                "standalone", "--apps", "sharegpt"],
    "plan": ["plan", "--store", str(TMP / "none.sqlite")],
}  # fmt: skip

OPTIONS = {
    "carbon": {"--seconds": numbers, "--energy-j": numbers, "--lifetime-years": numbers,
               "--tokens": numbers, "--pue": numbers, "--intensity": numbers,
               "--region": st.sampled_from(["", " ", "CISO", "XXX", "miso"])},
    "analyze": {"--standalone": run_specs, "--lifetime-years": numbers,
                "--lifetime": numbers.map(lambda v: f"T4={v}"), "--sweep-intensity": ranges,
                "--sweep-old-lifetime": ranges, "--sweep-new-lifetime": ranges,
                "--intensity": numbers},
    "demo": {"--lifetime-years": numbers, "--requests": numbers, "--workers": numbers},
    "profile": {"--qps": ranges, "--requests": numbers, "--duration-s": numbers,
                "--fraction": numbers, "--link-gbps": numbers, "--seed": numbers,
                "--workers": numbers, "--batch-size": numbers,
                "--sizes": st.sampled_from(["", ",", "p50", "p25,p75", "p99"])},
    "plan": {"--seed": numbers, "--slo-target": numbers, "--margin": numbers,
             "--verify": numbers, "--requests": numbers, "--lifetime-years": numbers,
             "--switch-energy-kwh": numbers, "--switch-embodied-g": numbers,
             "--intensity": numbers, "--qps": ranges},
}  # fmt: skip


@st.composite
def command_lines(draw) -> list[str]:
    cmd = draw(st.sampled_from(sorted(BASES)))
    argv = list(BASES[cmd])
    options = OPTIONS[cmd]
    chosen = draw(st.lists(st.sampled_from(sorted(options)), min_size=1, max_size=3,
                           unique=True))  # fmt: skip
    for opt in chosen:
        argv.append(f"{opt}={draw(options[opt])}")  # `=`: a value may start with '-'
    if cmd == "profile" and "--requests" in " ".join(argv) and "--duration-s" in " ".join(argv):
        argv = [a for a in argv if not a.startswith("--duration-s")]
    if draw(st.booleans()):
        argv.append("--json")
    return argv


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(argv=command_lines())
def test_fuzzed_arguments_keep_the_contract(capsys, argv) -> None:
    code, out, err = run(capsys, argv)
    check_contract(code, out, err, argv)
