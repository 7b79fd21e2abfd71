"""Run the `greenllm` command in-process and check the contract every run keeps."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from greenllm.cli import main

ERROR_LINE = re.compile(r"^greenllm( [a-z]+)?: error: \S")
WARNING_LINE = re.compile(r"^greenllm( [a-z]+)?: warning: \S")
NON_FINITE = re.compile(r"\b(nan|inf|infinity)\b", re.IGNORECASE)


def run(capsys, argv: Sequence[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``greenllm argv``."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # pragma: no cover - main() returns, it does not exit
        code = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    return code, out, err


def _no_constant(name: str) -> float:
    raise ValueError(f"non-finite JSON constant {name}")


def strict_json(text: str):
    """json.loads that refuses NaN, Infinity and -Infinity."""
    return json.loads(text, parse_constant=_no_constant)


def check_contract(code: int, out: str, err: str, argv: Sequence[str]) -> None:
    """Exit 0/1/2; on failure exactly one ``greenllm[ cmd]: error:`` line; never a traceback,
    never a NaN or an infinity on stdout; ``--json`` output parses strictly."""
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in err and "Traceback" not in out, (argv, err)
    assert not NON_FINITE.search(out), (argv, out[:500])
    lines = err.splitlines()
    if code == 0:
        assert all(WARNING_LINE.match(line) or line.startswith("\r") for line in lines), (argv, err)
        if "--json" in argv:
            strict_json(out)
    else:
        assert len(lines) == 1, (argv, err)
        assert ERROR_LINE.match(lines[0]), (argv, err)


def assert_error(capsys, argv: Sequence[str], code: int = 2, fragment: str = "") -> str:
    """Run ``argv``, check it fails with ``code`` and one error line holding ``fragment``."""
    got, out, err = run(capsys, argv)
    check_contract(got, out, err, argv)
    assert got == code, (argv, got, err)
    assert fragment in err, (argv, err)
    return err
