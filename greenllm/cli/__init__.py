"""The ``greenllm`` command.

Every subcommand that reports numbers takes ``--json``. Exit codes: 0 done; 2 bad input (one
line ``greenllm: error: ...`` on stderr, nothing done); 1 a runtime failure (one line: a worker
or backend failed, output could not be written); 130 interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from greenllm.errors import ConfigError, GreenLLMError

# The public API is pinned (tests/test_public_api.py); EXIT_OK, EXIT_FAILURE, EXIT_INTERRUPTED
# and sigterm_as_interrupt are module-level helpers of the command, not part of it.
__all__ = ["EXIT_BAD_INPUT", "build_parser", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        message = " ".join(str(message).split())  # one line, whatever the value held
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from greenllm.cli.commands import (
        analyze,
        carbon,
        catalog,
        demo,
        fleet,
        imports,
        plan,
        profile,
        replay,
        serve,
    )
    from greenllm.version import __version__

    parser = _Parser(prog="greenllm", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"greenllm {__version__}")
    parser.add_argument("--fleet", dest="declare_fleet", metavar="FILE", default=None,
                        help="a fleet file whose GPUs, models and workloads every command then "
                        "knows by name (or $GREENLLM_FLEET)")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in (demo, carbon, analyze, catalog, profile, imports, plan, serve, replay, fleet):
        module.register(sub)
    return parser


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a batch scheduler's stop) behaves like Ctrl-C while the block runs."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _error(prog: str, message: str) -> None:
    line = " ".join(message.split()) or "failed"
    print(f"{prog}: error: {line}", file=sys.stderr)


_NUMPY_SCALAR = re.compile(r"np\.(?:float|int|uint|bool_?)\d*\(([^()]*)\)")


def _clean(text: str) -> str:
    """``np.float64(0.0)`` -> ``0.0``: messages show values, not numpy internals."""
    return _NUMPY_SCALAR.sub(r"\1", text)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return _clean(text.splitlines()[0]) if text else type(err).__name__


def _stdout_to_devnull() -> None:
    """After a broken pipe or a full disk on stdout, send the rest (and the final flush at exit)
    to /dev/null, so that Python prints nothing more (the recipe of the Python docs, signal)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a file (e.g. captured)
        pass


class _LogBuffer(logging.Handler):
    """Keeps the library's log warnings (``logging.warning``) to print after a success."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def main(argv: Sequence[str] | None = None) -> int:
    log = logging.getLogger("greenllm")
    buffer = _LogBuffer()
    log.addHandler(buffer)
    try:
        with sigterm_as_interrupt(), warnings.catch_warnings(record=True) as caught:
            try:
                code = _main(argv)
            except KeyboardInterrupt:
                print("greenllm: interrupted", file=sys.stderr)
                return EXIT_INTERRUPTED
    finally:
        log.removeHandler(buffer)
    if code == EXIT_OK:  # a failure says one line; a success says each warning in one line
        seen: set[str] = set()
        for message in [*buffer.messages, *(str(w.message) for w in caught)]:
            line = " ".join(message.split())
            if line and line not in seen:
                seen.add(line)
                print(f"greenllm: warning: {_clean(line)}", file=sys.stderr)
    return code


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (already printed as one line), --help, --version
        code = exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
        return _flushed(code)
    prog = f"greenllm {args.command}"
    try:
        _declare(args.declare_fleet or os.environ.get("GREENLLM_FLEET") or None)
        code = int(args.run(args) or 0)
        sys.stdout.flush()
        return code
    except BrokenPipeError:  # e.g. `greenllm regions | head -1`: the reader has what it wanted
        _stdout_to_devnull()
        return EXIT_FAILURE
    except ConfigError as err:
        _error(prog, _first_line(err))
        return EXIT_BAD_INPUT
    except GreenLLMError as err:
        _error(prog, _first_line(err))
        return EXIT_FAILURE
    except OSError as err:
        _error(prog, _os_error(err))
        _stdout_flush_or_drop()
        return EXIT_FAILURE
    except MemoryError:
        _error(prog, "out of memory")
        return EXIT_FAILURE
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:  # a library bug: still one line, not a traceback
        if os.environ.get("GREENLLM_DEBUG"):
            raise
        _error(prog, f"internal error ({type(err).__name__}: {_first_line(err)}); "
               "set GREENLLM_DEBUG=1 for the traceback and please report it")  # fmt: skip
        return EXIT_FAILURE


def _declare(fleet_file: str | None) -> None:
    """Register what ``fleet_file`` declares (GPUs, models, workloads) for this command."""
    if fleet_file:
        from greenllm.fleet import declare, load_fleet

        declare(load_fleet(fleet_file))


def _flushed(code: int) -> int:
    try:
        sys.stdout.flush()
    except OSError:
        _stdout_to_devnull()
    return code


def _stdout_flush_or_drop() -> None:
    try:
        sys.stdout.flush()
    except OSError:
        _stdout_to_devnull()


def _os_error(err: OSError) -> str:
    what = err.strerror or _first_line(err)
    where = f": {err.filename}" if err.filename else ""
    if err.filename is None and err.errno is not None:
        return f"cannot write the output: {what}"
    return f"{what}{where}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
