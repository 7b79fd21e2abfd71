"""The paper's three applications (Table 2): SLOs, request-size percentiles, evaluated QPS.

=========  ===============  ========  ========  ===========  ===========  ===========
Dataset    Task             TTFT SLO  TPOT SLO  P25 (in,out) P50 (in,out) P75 (in,out)
=========  ===============  ========  ========  ===========  ===========  ===========
ShareGPT   Chatbot          200 ms    80 ms     (24,24)      (160,140)    (510,357)
HumanEval  Code Completion  125 ms    200 ms    (108,31)     (136,55)     (182,88)
LongBench  Summarization    15 s      150 ms    (1134,201)   (1495,275)   (1817,352)
=========  ===============  ========  ========  ===========  ===========  ===========

A fixed-size workload truncates every request to one percentile, as the paper does (Section 7.1:
"we truncate the prompts to the specific input length and limit the output length"); a sampled
workload draws sizes from a :class:`~greenllm.config.RequestSizeDistribution` through the three
percentiles.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np

from greenllm.config import SLO, RequestSize, RequestSizeDistribution, Workload
from greenllm.errors import ConfigError

__all__ = [
    "APPLICATIONS",
    "Application",
    "SizeName",
    "get_application",
    "list_applications",
    "paper_qps_range",
    "register_application",
    "workload",
]

logger = logging.getLogger(__name__)

SizeName = Literal["p25", "p50", "p75", "sampled"]
_SIZES: tuple[str, ...] = ("p25", "p50", "p75", "sampled")


@dataclass(frozen=True)
class Application:
    """One LLM application of the paper's evaluation (Table 2)."""

    name: str
    """Registry key, lower case (``sharegpt``, ``humaneval``, ``longbench``)."""
    dataset: str
    """Dataset name as printed in the paper."""
    task: str
    """Kind of application (chatbot, code completion, summarization)."""
    slo: SLO
    """TTFT and TPOT targets."""
    p25: RequestSize
    p50: RequestSize
    p75: RequestSize
    qps_grid: tuple[float, ...]
    """QPS values our reproduction sweeps (see :func:`paper_qps_range`)."""
    savings_qps: tuple[float, float] | None = None
    """QPS range over which the paper reports carbon savings (Section 7.2), if it states one."""
    trace: str | None = None
    """Name of the real trace of the same kind of application (:mod:`greenllm.workloads.traces`)."""

    @property
    def distribution(self) -> RequestSizeDistribution:
        """Sizes through the P25/P50/P75 percentiles (see :class:`RequestSizeDistribution`)."""
        return RequestSizeDistribution(p25=self.p25, p50=self.p50, p75=self.p75)

    def size(self, which: str = "p50") -> RequestSize | RequestSizeDistribution:
        """The fixed size at percentile ``which`` (``p25``/``p50``/``p75``) or ``"sampled"``."""
        key = which.strip().lower() if isinstance(which, str) else which
        if key == "sampled":
            return self.distribution
        if key in ("p25", "p50", "p75"):
            return getattr(self, key)
        raise ConfigError(
            f"request size {which!r} for {self.dataset}: must be one of {', '.join(_SIZES)} "
            "(a percentile of Table 2, or 'sampled' for the distribution through them)"
        )


def _size(i: int, o: int) -> RequestSize:
    return RequestSize(input_tokens=i, output_tokens=o)


# QPS grids. The paper states the savings ranges of HumanEval [0.5, 11] and LongBench [0.75, 2]
# (Section 7.2) and, for ShareGPT, the two points where the optimal configuration changes
# (QPS 1: DSD becomes optimal, QPS 4: SpecDecode takes over; Section 7.6). Each grid covers
# that range plus a point or two outside it, so the end of the savings is visible.
APPLICATIONS: dict[str, Application] = {
    "sharegpt": Application(
        name="sharegpt",
        dataset="ShareGPT",
        task="chatbot",
        slo=SLO(ttft_s=0.200, tpot_s=0.080),
        p25=_size(24, 24),
        p50=_size(160, 140),
        p75=_size(510, 357),
        qps_grid=(0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0),
        savings_qps=None,
        trace="conversation",
    ),
    "humaneval": Application(
        name="humaneval",
        dataset="HumanEval",
        task="code completion",
        slo=SLO(ttft_s=0.125, tpot_s=0.200),
        p25=_size(108, 31),
        p50=_size(136, 55),
        p75=_size(182, 88),
        qps_grid=(0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 11.0, 12.0),
        savings_qps=(0.5, 11.0),
        trace="code",
    ),
    "longbench": Application(
        name="longbench",
        dataset="LongBench",
        task="summarization",
        slo=SLO(ttft_s=15.0, tpot_s=0.150),
        p25=_size(1134, 201),
        p50=_size(1495, 275),
        p75=_size(1817, 352),
        qps_grid=(0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5),
        savings_qps=(0.75, 2.0),
        trace="summarization",
    ),
}

_ALIASES = {"chatbot": "sharegpt", "code": "humaneval", "summarization": "longbench"}
_TABLE_2 = frozenset(APPLICATIONS)


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "").replace("_", "").replace(" ", "")


def list_applications() -> list[str]:
    """Names of the known applications: Table 2's in its order, then registered ones."""
    return list(APPLICATIONS)


def register_application(app: Application, *, replace: bool = False) -> None:
    """Add ``app`` to the registry under ``app.name`` (lower case), so that every command and
    function taking an application name knows it (a fleet file's own workloads). A name
    already taken needs ``replace=True``; the three applications of Table 2 cannot be
    replaced."""
    if not isinstance(app, Application):
        raise ConfigError(f"register_application: {app!r:.60} is not an Application")
    key = _key(app.name)
    if not key or key != app.name.lower().replace("-", "").replace("_", "").replace(" ", ""):
        raise ConfigError(f"register_application: name = {app.name!r}: letters, digits, - or _")
    if key in _TABLE_2 or key in _ALIASES:
        raise ConfigError(f"register_application: {app.name!r} is an application of Table 2; "
                          "choose another name")  # fmt: skip
    if key in APPLICATIONS and not replace and APPLICATIONS[key] != app:
        raise ConfigError(f"register_application: {app.name!r} is already registered; pass "
                          "replace=True to replace it")  # fmt: skip
    APPLICATIONS[key] = app


def get_application(name: str | Application) -> Application:
    """The application called ``name`` (case-insensitive; ``ShareGPT``, ``human-eval`` work)."""
    if isinstance(name, Application):
        return name
    if not isinstance(name, str):
        raise ConfigError(f"application = {name!r}: must be a name, one of {list_applications()}")
    key = _key(name)
    key = _ALIASES.get(key, key)
    if key not in APPLICATIONS:
        raise ConfigError(
            f"unknown application {name!r}: known applications are "
            f"{', '.join(APPLICATIONS)} (Table 2 of the paper, and any a fleet file declares)"
        )
    return APPLICATIONS[key]


def workload(app: str | Application, qps: float, size: str = "p50") -> Workload:
    """A :class:`~greenllm.config.Workload` of ``app`` at ``qps`` with the application's SLO.

    ``size`` is ``p25``, ``p50`` or ``p75`` (every request truncated to that percentile, as in
    the paper) or ``sampled`` (sizes drawn from the distribution through the percentiles).
    """
    application = get_application(app)
    if isinstance(qps, (bool, str, bytes)) or not isinstance(qps, (int, float, np.number)):
        raise ConfigError(f"workload: qps = {qps!r:.60}: must be a number (1e-06 <= qps <= 100000)")
    return Workload(
        application=application.name,
        request_size=application.size(size),
        qps=qps,
        slo=application.slo,
    )


def paper_qps_range(app: str | Application) -> tuple[float, ...]:
    """The QPS values we sweep for ``app`` to reproduce the paper's Figures 9-12.

    HumanEval and LongBench cover the savings ranges the paper reports (Section 7.2: [0.5, 11]
    and [0.75, 2]) plus a point beyond; ShareGPT covers 0.5-8 around the configuration changes
    the paper names at QPS 1 and 4 (Section 7.6).
    """
    return get_application(app).qps_grid
