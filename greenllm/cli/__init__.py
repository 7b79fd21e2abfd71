"""The ``greenllm`` command.

Every subcommand that reports numbers takes ``--json``. Bad input prints one line
(``greenllm: error: ...``) to stderr and exits with code 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from greenllm.errors import GreenLLMError

__all__ = ["EXIT_BAD_INPUT", "build_parser", "main"]

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from greenllm.cli.commands import analyze, carbon, catalog, demo, plan, profile
    from greenllm.version import __version__

    parser = _Parser(prog="greenllm", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"greenllm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in (demo, carbon, analyze, catalog, profile, plan):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (already printed as one line), --help, --version
        return int(exc.code or 0)
    try:
        return int(args.run(args) or 0)
    except GreenLLMError as err:
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"greenllm: error: {first_line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("greenllm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
