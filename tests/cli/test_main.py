"""`greenllm.cli.main`: exit codes 0/1/2/130, one error line, no traceback, pipes and signals.

In-process where possible; in a subprocess for signals, pipes and /dev/full.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from greenllm.cli import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_INTERRUPTED, main
from greenllm.errors import ProfileError, WorkerError
from tests.cli.helpers import assert_error, run

CLI = [sys.executable, "-m", "greenllm.cli"]


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [(["carbon", "--gpu", "A100"], "required"), (["nonsense"], "invalid choice"), ([], "required"),
     (["carbon", "--gpu", "A100", "--seconds", "1", "--energy-j", "1", "--bogus"], "--bogus")],
)  # fmt: skip
def test_usage_errors_are_one_line_exit_2(capsys, argv, fragment) -> None:
    assert_error(capsys, argv, EXIT_BAD_INPUT, fragment)


def test_help_and_version_exit_0(capsys) -> None:
    assert run(capsys, ["--version"])[0] == 0
    assert run(capsys, ["carbon", "--help"])[0] == 0


@pytest.mark.parametrize(
    ("error", "code"),
    [(WorkerError("worker 3 died\nmore"), EXIT_FAILURE), (ProfileError("store broke"), 1),
     (OSError(28, "No space left on device"), 1), (RuntimeError("library bug"), 1),
     (MemoryError(), 1), (KeyboardInterrupt(), EXIT_INTERRUPTED)],
)  # fmt: skip
def test_runtime_failures_are_one_line_exit_1(capsys, monkeypatch, error, code) -> None:
    from greenllm.cli.commands import catalog

    def boom(args):
        raise error

    monkeypatch.setattr(catalog, "run_gpus", boom)
    got, _, err = run(capsys, ["gpus"])
    assert got == code
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    expected = "greenllm: interrupted" if code == EXIT_INTERRUPTED else "greenllm gpus: error: "
    assert err.startswith(expected)


def test_sigterm_handler_is_installed_for_every_command_and_restored(capsys) -> None:
    before = signal.getsignal(signal.SIGTERM)
    assert run(capsys, ["gpus"])[0] == 0
    assert signal.getsignal(signal.SIGTERM) == before


def _wait_for(proc: subprocess.Popen, path: Path, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and path.stat().st_size > 0:
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"the command did not start: {proc.poll()}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_demo_exits_130_on_sigterm_and_ctrl_c(tmp_path, sig) -> None:
    err_path = tmp_path / "err.txt"
    with err_path.open("w") as err:
        proc = subprocess.Popen([*CLI, "demo", "--out", str(tmp_path / "d"), "--no-figures"],
                                stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
        try:
            _wait_for(proc, err_path)  # the progress line: profiling has started
            proc.send_signal(sig)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert code == EXIT_INTERRUPTED
    text = err_path.read_text()
    assert "Traceback" not in text and text.rstrip().endswith("greenllm: interrupted")


@pytest.mark.parametrize(
    "shell",
    ["{cli} regions | head -c 1", "{cli} gpus | head -2", "{cli} regions --json | head -1"],
)
def test_broken_pipe_exits_quietly(shell) -> None:
    cli = " ".join(CLI)
    proc = subprocess.run(["bash", "-c", f"set -o pipefail; {shell.format(cli=cli)}"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.stderr == ""
    assert proc.returncode in (0, EXIT_FAILURE)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
@pytest.mark.parametrize("argv", [["regions"], ["gpus", "--json"],
                                  ["carbon", "--gpu", "A100", "--seconds", "1", "--energy-j", "1"]])
def test_output_to_dev_full_is_one_line_exit_1(argv) -> None:
    with open("/dev/full", "w") as full:
        proc = subprocess.run([*CLI, *argv], stdout=full, stderr=subprocess.PIPE, text=True,
                              check=False)  # fmt: skip
    assert proc.returncode == EXIT_FAILURE
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"greenllm {argv[0]}: error: "), proc.stderr
    assert "No space left" in lines[0]


def test_console_script_exit_code_and_no_traceback() -> None:
    proc = subprocess.run([*CLI, "carbon", "--gpu", "nope", "--seconds", "1", "--energy-j", "1"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == EXIT_BAD_INPUT
    assert proc.stderr.startswith("greenllm carbon: error: ") and "Traceback" not in proc.stderr


def test_main_returns_an_int() -> None:
    assert isinstance(main(["--version"]), int)


def test_library_warnings_are_one_line_each_on_success_and_dropped_on_failure(
    capsys, monkeypatch
) -> None:
    import warnings

    from greenllm.cli.commands import catalog

    def warns(args) -> int:
        warnings.warn("overflow encountered\nin divide", RuntimeWarning, stacklevel=1)
        warnings.warn("overflow encountered\nin divide", RuntimeWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(catalog, "run_gpus", warns)
    code, _, err = run(capsys, ["gpus"])
    assert code == 0 and err == "greenllm: warning: overflow encountered in divide\n"

    def warns_then_fails(args) -> int:
        warnings.warn("overflow", RuntimeWarning, stacklevel=1)
        raise ProfileError("broke")

    monkeypatch.setattr(catalog, "run_gpus", warns_then_fails)
    assert_error(capsys, ["gpus"], EXIT_FAILURE, "broke")


def test_numpy_reprs_do_not_reach_the_message(capsys, monkeypatch) -> None:
    from greenllm.cli.commands import catalog
    from greenllm.errors import ConfigError

    def bad(args) -> int:
        raise ConfigError("N_A=np.float64(0.0): must be finite > 0")

    monkeypatch.setattr(catalog, "run_gpus", bad)
    err = assert_error(capsys, ["gpus"], EXIT_BAD_INPUT, "N_A=0.0: must be")
    assert "np." not in err
