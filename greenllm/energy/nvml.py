"""NVIDIA GPU power through NVML (nvidia-ml-py, imported as ``pynvml`` only when started).

Power: ``nvmlDeviceGetPowerUsage`` (mW). On Ampere-and-newer GPUs other than GA100 (A100, A30,
A800) that value is averaged over 1 s, so there we read the instantaneous field
``NVML_FI_DEV_POWER_INSTANT`` through ``nvmlDeviceGetFieldValues`` when the driver has it, and
flag the device ``power_averaged_1s`` when it does not. Where the GPU has an energy counter
(``nvmlDeviceGetTotalEnergyConsumption``, mJ, Volta and newer) it is read at window edges and
reported beside the integrated energy as a cross-check. NVML errors are translated into
:class:`~greenllm.errors.ProfileError` with the fix; a GPU that disappears is flagged, not fatal.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any

from greenllm.energy.sampler import PowerSampler, Sample
from greenllm.errors import ConfigError, ProfileError, missing_extra

__all__ = ["NVMLSampler", "check_gpu_devices", "import_pynvml", "nvml_available"]

logger = logging.getLogger(__name__)

GA100_MARKERS = ("A100", "A30", "A800")  # GA100 parts: their power reading is instantaneous
MAX_CONSECUTIVE_ERRORS = 5  # a GPU failing this many reads in a row is treated as lost
_VALUE_FIELDS = {
    0: "dVal",
    1: "uiVal",
    2: "ulVal",
    3: "ullVal",
    4: "sllVal",
    5: "siVal",
    6: "usVal",
}
_FIX = "install the NVIDIA driver (it ships libnvidia-ml) or use NullSampler/ModelledSampler"


def import_pynvml() -> ModuleType:
    """The ``pynvml`` module, or :class:`BackendUnavailableError` naming the ``nvml`` extra."""
    try:
        import pynvml
    except ImportError as err:
        raise missing_extra("pynvml", "nvml") from err
    return pynvml


def nvml_error(nv: ModuleType, err: Exception, what: str) -> ProfileError:
    """An NVML exception as a ProfileError that says how to fix it."""
    name = type(err).__name__
    if name == "NVMLError_LibraryNotFound":
        return ProfileError(f"NVML not available: {err} ({what}); {_FIX}")
    if name == "NVMLError_DriverNotLoaded":
        return ProfileError(
            f"NVML: the NVIDIA driver is not loaded ({what}); load it "
            f"(`nvidia-smi` must work) or use NullSampler/ModelledSampler"
        )
    if name == "NVMLError_NoPermission":
        return ProfileError(
            f"NVML: no permission ({what}): {err}; run as a user who can open /dev/nvidia*"
        )
    return ProfileError(f"NVML error during {what}: {name}: {err}; check `nvidia-smi` on this host")


def nvml_available() -> bool:
    """True when pynvml imports, NVML initialises and sees at least one GPU."""
    try:
        nv = import_pynvml()
    except ImportError:
        return False
    try:
        nv.nvmlInit()
    except Exception:  # any NVMLError: no driver, no permission, ...
        return False
    try:
        return int(nv.nvmlDeviceGetCount()) > 0
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            nv.nvmlShutdown()


def check_gpu_devices(where: str, devices: object) -> tuple[int | str, ...]:
    """``devices`` as a tuple of NVML indices (ints >= 0) and UUID strings, or ConfigError."""
    ok = (
        isinstance(devices, Sequence)
        and not isinstance(devices, (str, bytes))
        and len(devices) > 0
        and all(
            (isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1024)
            or (isinstance(d, str) and d.strip() != "")
            for d in devices
        )
    )
    if not ok:
        raise ConfigError(
            f"{where}: devices = {devices!r}: must be a non-empty list of GPU indices "
            "in [0, 1023] or GPU UUID strings (`nvidia-smi -L`)"
        )
    assert isinstance(devices, Sequence)
    out = tuple(d.strip() if isinstance(d, str) else d for d in devices)
    if len(set(out)) != len(out):
        raise ConfigError(f"{where}: devices = {devices!r}: a GPU is named twice")
    return out


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NVMLSampler(PowerSampler):
    """Power of NVIDIA GPUs every ``period_s`` (NVML); devices named ``gpu0``, ``gpu1``, ...

    ``devices``: the GPUs to measure, as NVML indices (``0``) or UUID strings
    (``"GPU-8f1c..."``, as ``nvidia-smi -L`` prints them); default: every GPU on the host. Only
    those GPUs are polled, so a meter measures the GPUs it names, not the host's other tenants.
    A device is named ``gpu<index>`` whichever way it was given. ``models`` maps each device to
    its product name once started, and ``power_source`` to ``"instant"`` or ``"average"`` (the
    1 s average).
    """

    def __init__(
        self,
        period_s: float = 0.2,
        devices: Sequence[int | str] | None = None,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(period_s, clock=clock)
        self._selection = None if devices is None else check_gpu_devices("NVMLSampler", devices)
        self._nv: Any = None  # the pynvml module (untyped) while open
        self._handles: dict[str, object] = {}  # pynvml's opaque device handles
        self._has_counter: set[str] = set()
        self._fails: dict[str, int] = {}
        self.models: dict[str, str] = {}
        self.power_source: dict[str, str] = {}

    def _resolve(self, nv: Any, count: int) -> list[tuple[int, object]]:
        """``(index, handle)`` of every selected GPU; ConfigError for one the host lacks."""
        if self._selection is None:
            return [(i, nv.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
        out: list[tuple[int, object]] = []
        for sel in self._selection:
            if isinstance(sel, int):
                if sel >= count:
                    raise ConfigError(
                        f"NVMLSampler: devices [{sel}] do not exist; this host has "
                        f"{count} GPU(s), indices 0..{count - 1}"
                    )
                out.append((sel, nv.nvmlDeviceGetHandleByIndex(sel)))
                continue
            try:
                handle = nv.nvmlDeviceGetHandleByUUID(sel)
            except nv.NVMLError as err:
                raise ConfigError(
                    f"NVMLSampler: no GPU with UUID {sel!r} on this host ({type(err).__name__});"
                    " `nvidia-smi -L` lists the UUIDs"
                ) from err
            out.append((int(nv.nvmlDeviceGetIndex(handle)), handle))
        seen = [i for i, _ in out]
        dups = sorted({i for i in seen if seen.count(i) > 1})
        if dups:
            raise ConfigError(
                f"NVMLSampler: devices = {list(self._selection)!r} name GPU(s) {dups} twice"
            )
        return out

    def _open(self) -> Sequence[str]:
        nv = import_pynvml()
        try:
            nv.nvmlInit()
        except nv.NVMLError as err:
            raise nvml_error(nv, err, "nvmlInit") from err
        self._nv = nv
        try:
            count = int(nv.nvmlDeviceGetCount())
            selected = self._resolve(nv, count)
            self._handles, self._has_counter, self._fails = {}, set(), {}
            self.models, self.power_source, self._device_flags = {}, {}, {}
            for i, handle in selected:
                dev = f"gpu{i}"
                self._handles[dev] = handle
                self.models[dev] = _text(nv.nvmlDeviceGetName(handle))
                self.power_source[dev] = self._choose_source(nv, handle, self.models[dev])
                if self.power_source[dev] == "average" and self._newer_than_ga100(
                    nv, handle, self.models[dev]
                ):
                    self._device_flags[dev] = {"power_averaged_1s"}
                try:
                    nv.nvmlDeviceGetTotalEnergyConsumption(handle)
                    self._has_counter.add(dev)
                except nv.NVMLError:
                    pass
        except nv.NVMLError as err:
            self._close()
            raise nvml_error(nv, err, "listing GPUs") from err
        except ConfigError:
            self._close()
            raise
        logger.info(
            "NVMLSampler: %s", {d: (self.models[d], self.power_source[d]) for d in self._handles}
        )
        return tuple(self._handles)

    def _close(self) -> None:
        if self._nv is not None:
            with contextlib.suppress(Exception):  # shutting down a lost driver must not raise
                self._nv.nvmlShutdown()
            self._nv = None

    @staticmethod
    def _newer_than_ga100(nv: ModuleType, handle: object, name: str) -> bool:
        """Ampere or newer and not a GA100 part: nvmlDeviceGetPowerUsage is a 1 s average."""
        try:
            arch = int(nv.nvmlDeviceGetArchitecture(handle))
        except Exception:  # old drivers / bindings without the call
            return False
        ampere = getattr(nv, "NVML_DEVICE_ARCH_AMPERE", 7)
        unknown = getattr(nv, "NVML_DEVICE_ARCH_UNKNOWN", 0xFFFFFFFF)
        return ampere <= arch != unknown and not any(m in name for m in GA100_MARKERS)

    def _choose_source(self, nv: ModuleType, handle: object, name: str) -> str:
        if not self._newer_than_ga100(nv, handle, name):
            return "average"
        if getattr(nv, "NVML_FI_DEV_POWER_INSTANT", None) is None:
            return "average"
        try:
            self._instant_mw(nv, handle)
        except nv.NVMLError:
            return "average"
        return "instant"

    @staticmethod
    def _instant_mw(nv: ModuleType, handle: object) -> float:
        value = nv.nvmlDeviceGetFieldValues(handle, [nv.NVML_FI_DEV_POWER_INSTANT])[0]
        if value.nvmlReturn != getattr(nv, "NVML_SUCCESS", 0):
            raise nv.NVMLError(value.nvmlReturn)
        return float(getattr(value.value, _VALUE_FIELDS.get(int(value.valueType), "uiVal")))

    def _is_lost_error(self, err: Exception) -> bool:
        lost = tuple(
            getattr(self._nv, n)
            for n in ("NVMLError_GpuIsLost", "NVMLError_GpuRequiresReset")
            if hasattr(self._nv, n)
        )
        return isinstance(err, lost)

    def _read_failed(self, dev: str, now_s: float, err: Exception) -> None:
        if self._is_lost_error(err):
            self._mark_lost(dev, now_s, err)
            return
        self._count_error(dev)
        self._fails[dev] = self._fails.get(dev, 0) + 1
        if self._fails[dev] >= MAX_CONSECUTIVE_ERRORS:
            self._mark_lost(dev, now_s, f"{MAX_CONSECUTIVE_ERRORS} failed reads in a row: {err}")

    def _poll(self, now_s: float, edge: bool) -> Iterable[Sample]:
        nv, out = self._nv, []
        for dev, handle in self._handles.items():
            if dev in self._lost:
                continue
            try:
                if self.power_source[dev] == "instant":
                    mw = self._instant_mw(nv, handle)
                else:
                    mw = float(nv.nvmlDeviceGetPowerUsage(handle))
            except nv.NVMLError as err:
                self._read_failed(dev, now_s, err)
                continue
            self._fails[dev] = 0
            out.append((dev, now_s, mw / 1000.0))
        return out

    def _counters_j(self) -> Mapping[str, float] | None:
        nv, out = self._nv, {}
        for dev in self._has_counter:
            if dev in self._lost:
                continue
            try:
                out[dev] = float(nv.nvmlDeviceGetTotalEnergyConsumption(self._handles[dev])) / 1e3
            except nv.NVMLError as err:
                self._read_failed(dev, self.now_s(), err)
        return out
