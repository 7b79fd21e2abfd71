"""Subprocess sweep for the kill / Ctrl-C tests of ``test_sweep.py`` (not a test module).

Usage (from the repository root)::

    python -m tests.profiler.sweep.sweep_child STORE BATCH WORKERS DELAY_S
    python -m tests.profiler.sweep.sweep_child cli ARGS...

Runs the sweep of :func:`cells` (24 cells, 6 of them infeasible) on the simulator with
``BATCH`` records per transaction and ``WORKERS`` processes, each cell slowed by ``DELAY_S``
seconds so that a test can kill it between any two cells. Prints ``STARTED`` first, then
``CELL <i>`` after each cell processed, and ``DONE <report JSON>`` (exit 0) or, on Ctrl-C,
``INTERRUPTED <report JSON>`` (exit 130). ``cli ARGS`` runs ``greenllm profile ARGS``
(:func:`profile_cli`), each cell slowed by ``$GREENLLM_TEST_CELL_DELAY_S`` seconds if set.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from greenllm.config import Configuration
from greenllm.profiler.store import ProfileStore
from greenllm.profiler.sweep import Cell, SweepGrid, SweepInterrupted, SweepReport, run_sweep

N_REQUESTS = 8
#: ``cli`` mode: slow each cell down by this many seconds (set by the Ctrl-C tests).
DELAY_ENV = "GREENLLM_TEST_CELL_DELAY_S"


def cells() -> list[Cell]:
    """3 QPS x 2 applications x 4 configurations; the Llama-3.1-8B DPD on a T4 cannot fit."""
    configs = [
        Configuration(kind="standalone"),
        Configuration(kind="dpd", old_gpu="T4"),
        Configuration(kind="dsd", old_gpu="V100", draft_model="llama-300m"),
        Configuration(kind="dpd", old_gpu="T4", target_model="llama-3.1-8b"),
    ]
    return SweepGrid.build(configs, ["sharegpt", "humaneval"], qps=[1.0, 2.0, 3.0]).cells()


def run(path: str, batch: int = 1, workers: int = 1, **kw: object) -> SweepReport:
    """The sweep every test runs (the same call resumes it)."""
    with ProfileStore(path) as store:
        return run_sweep(
            cells(),
            store,
            backend="sim",
            n_requests=N_REQUESTS,
            seed=3,
            run_id="kill-test",
            batch_size=batch,
            flush_interval_s=60.0,
            workers=workers,
            **kw,
        )


def profile_cli(argv: list[str]) -> int:
    """``greenllm profile ARGV`` through ``main()`` once the lead wires the subcommand into
    :mod:`greenllm.cli`; until then the same parser and error handling here."""
    from greenllm.cli import _Parser, build_parser, main
    from greenllm.cli.commands import profile as cmd
    from greenllm.errors import GreenLLMError

    sub = next(a for a in build_parser()._actions if getattr(a, "choices", None))
    if "profile" in sub.choices:
        return main(["profile", *argv])
    parser = _Parser(prog="greenllm")
    cmd.register(parser.add_subparsers(dest="command", required=True, parser_class=_Parser))
    try:
        args = parser.parse_args(["profile", *argv])
        return int(args.run(args) or 0)
    except SystemExit as exc:
        return int(exc.code or 0)
    except GreenLLMError as err:
        print(f"greenllm: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("greenllm: interrupted", file=sys.stderr)
        return 130


def _slow_down(delay_s: float) -> None:
    from greenllm.backends.sim import SimBackend

    real = SimBackend.run

    def run_slowly(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(delay_s)
        return real(self, *args, **kwargs)

    SimBackend.run = run_slowly  # type: ignore[method-assign]


if __name__ == "__main__":
    # Behave like a program started from a terminal even when the test runner was not: SIGINT
    # may be ignored from the start (then Python installs no handler) or blocked, inherited.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if sys.argv[1] == "cli":
        if os.environ.get(DELAY_ENV):
            _slow_down(float(os.environ[DELAY_ENV]))
        sys.exit(profile_cli(sys.argv[2:]))
    store_path, batch, workers, delay = sys.argv[1], *map(float, sys.argv[2:5])
    _slow_down(delay)
    print("STARTED", flush=True)
    try:
        report = run(
            store_path,
            int(batch),
            int(workers),
            progress=lambda i, n: print(f"CELL {i}", flush=True),
        )
    except SweepInterrupted as stop:
        print("INTERRUPTED", json.dumps(stop.report.as_dict()), flush=True)
        sys.exit(130)
    print("DONE", json.dumps(report.as_dict()), flush=True)
