"""Live grid carbon intensity: providers a controller polls every re-planning period.

``provider.read()`` gives an :class:`IntensityReading` (g/kWh now, the instant it is for, an
optional forecast) or raises :class:`IntensityUnavailableError`. Providers:

* :class:`StaticProvider` -- a region's annual figure (:func:`carbon_intensity`); never fails;
* :class:`TraceProvider` -- an hourly :class:`CarbonIntensityTrace`, the current instant mapped
  explicitly onto the trace's year (the shipped traces are of 2022);
* :class:`ElectricityMapsProvider` -- Electricity Maps API v3, average intensity;
* :class:`WattTimeProvider` -- WattTime API v3, marginal emissions (MOER);
* :class:`CachedProvider` -- caching, a stale last value and a fallback provider around another;
* :func:`make_provider` -- the factory the CLI uses.

HTTP uses ``urllib.request`` (a timeout on every call). API keys and passwords never appear in
messages, logs, reprs or ``source``.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import json
import logging
import math
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from greenllm.carbon.intensity.data import TRACE_REGIONS, canonical_code
from greenllm.carbon.intensity.regions import carbon_intensity, region_info
from greenllm.carbon.intensity.trace import CarbonIntensityTrace
from greenllm.checks import finite_int, finite_number
from greenllm.errors import ConfigError, GreenLLMError
from greenllm.units import MAX_INTENSITY_G_PER_KWH, MAX_TIME_S, SECONDS_PER_HOUR

__all__ = [
    "G_PER_LB",
    "PROVIDERS",
    "CachedProvider",
    "ElectricityMapsProvider",
    "IntensityProvider",
    "IntensityReading",
    "IntensityUnavailableError",
    "ReadingKind",
    "StaticProvider",
    "TraceProvider",
    "WattTimeProvider",
    "make_provider",
]

logger = logging.getLogger(__name__)

ReadingKind = Literal["average", "marginal"]
Clock = Callable[[], float]

G_PER_LB = 453.59237
"""Grams in one avoirdupois pound: lbs/MWh x G_PER_LB / 1000 = g/kWh."""
#: Names :func:`make_provider` takes.
PROVIDERS = ("static", "trace", "electricitymaps", "watttime")
#: Longest HTTP answer read (bytes); a longer one is refused.
MAX_BODY_BYTES = 5_000_000
#: Most forecast points kept from one answer.
MAX_FORECAST_POINTS = 10_000
#: Longest timeout (s) of one HTTP call.
MAX_TIMEOUT_S = 300.0
#: Longest Retry-After (s) honoured.
MAX_RETRY_AFTER_S = 86_400.0
#: A WattTime token lives 30 minutes; it is renewed after this many seconds.
WATTTIME_TOKEN_S = 25 * 60.0
ELECTRICITYMAPS_KEY_ENV = "ELECTRICITYMAPS_API_KEY"
WATTTIME_USER_ENV = "WATTTIME_USER"
WATTTIME_PASSWORD_ENV = "WATTTIME_PASSWORD"

_ERROR_BODY_CHARS = 200
_ZONE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
_TIMES = (-MAX_TIME_S, MAX_TIME_S)
#: Electricity Maps / WattTime zones whose grid has a static figure under another code.
_STATIC_FOR_ZONE = {"SE-SE2": "NCSW"}


class IntensityUnavailableError(GreenLLMError):
    """A provider has no trustworthy intensity: HTTP error, timeout, bad JSON, a missing or bad
    field. ``provider``, ``reason`` (short, e.g. ``"HTTP 429"``), ``status`` (HTTP status or
    None) and ``retry_after_s`` (a server's Retry-After, or None) say what failed."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        reason: str = "",
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.reason = reason or message
        self.status = status
        self.retry_after_s = retry_after_s


def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _fail(
    who: str,
    reason: str,
    detail: str = "",
    *,
    secrets: Iterable[str] = (),
    status: int | None = None,
    retry_after_s: float | None = None,
) -> IntensityUnavailableError:
    secrets = tuple(secrets)
    message = f"{who}: {reason}" + (f": {detail}" if detail else "")
    return IntensityUnavailableError(
        _redact(message, secrets),
        provider=who,
        reason=_redact(reason, secrets),
        status=status,
        retry_after_s=retry_after_s,
    )


def _iso(t_s: float) -> str:
    """``2026-12-06T20:00Z`` (epoch seconds beyond the year 9999 as seconds)."""
    try:
        return datetime.fromtimestamp(t_s, UTC).strftime("%Y-%m-%dT%H:%MZ")
    except (ValueError, OverflowError, OSError):
        return f"{t_s:.0f} s"


def _hour_floor(t_s: float) -> float:
    return math.floor(t_s / SECONDS_PER_HOUR) * SECONDS_PER_HOUR


# ---- the reading ------------------------------------------------------------------------------
@dataclass(frozen=True)
class IntensityReading:
    """One answer of a provider: ``g_per_kwh`` for the instant ``at_s`` (epoch s).

    ``forecast`` holds ``(at_s, g_per_kwh)`` pairs in ascending time; ``fallback`` is None for a
    fresh answer, else why this value stands in for one; ``fetched_s`` is when it was obtained.
    """

    g_per_kwh: float
    at_s: float
    kind: ReadingKind
    source: str
    fetched_s: float
    forecast: tuple[tuple[float, float], ...] = ()
    fallback: str | None = None

    def __post_init__(self) -> None:
        where = "IntensityReading"
        g = finite_number("g_per_kwh", self.g_per_kwh, 0.0, MAX_INTENSITY_G_PER_KWH, where=where)
        at = finite_number("at_s", self.at_s, *_TIMES, where=where)
        fetched = finite_number("fetched_s", self.fetched_s, *_TIMES, where=where)
        if self.kind not in ("average", "marginal"):
            raise ConfigError(f"{where}: kind = {self.kind!r}: must be 'average' or 'marginal'")
        if not isinstance(self.source, str):
            raise ConfigError(f"{where}: source = {self.source!r:.60}: must be a string")
        if self.fallback is not None and not isinstance(self.fallback, str):
            raise ConfigError(
                f"{where}: fallback = {self.fallback!r:.60}: must be a string or None"
            )
        pairs: list[tuple[float, float]] = []
        for i, pair in enumerate(self.forecast):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ConfigError(
                    f"{where}: forecast[{i}] = {pair!r:.60}: must be (at_s, g_per_kwh)"
                )
            t = finite_number(f"forecast[{i}] at_s", pair[0], *_TIMES, where=where)
            v = finite_number(
                f"forecast[{i}] g_per_kwh", pair[1], 0.0, MAX_INTENSITY_G_PER_KWH, where=where
            )
            if pairs and t <= pairs[-1][0]:
                raise ConfigError(f"{where}: forecast[{i}] at_s = {t}: times must ascend")
            pairs.append((t, v))
        object.__setattr__(self, "g_per_kwh", g)
        object.__setattr__(self, "at_s", at)
        object.__setattr__(self, "fetched_s", fetched)
        object.__setattr__(self, "forecast", tuple(pairs))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the forecast as a list of ``[at_s, g_per_kwh]``)."""
        return {
            "g_per_kwh": self.g_per_kwh,
            "at_s": self.at_s,
            "kind": self.kind,
            "source": self.source,
            "forecast": [[t, g] for t, g in self.forecast],
            "fallback": self.fallback,
            "fetched_s": self.fetched_s,
        }


# ---- the interface ----------------------------------------------------------------------------
class IntensityProvider(ABC):
    """Where the grid's current carbon intensity comes from.

    Hooks a provider defines:

    * ``name`` -- short provider name (``"electricitymaps"``, ``"static"``, ...);
    * ``kind`` -- ``"average"`` or ``"marginal"`` intensity;
    * ``read(now_s=None)`` -- the reading for now (``now_s`` epoch seconds, default the
      provider's clock; HTTP providers always ask for the latest value); raises
      :class:`IntensityUnavailableError` when no trustworthy value is at hand;
    * ``__repr__`` -- must not show keys or passwords.
    """

    name: str = "provider"
    kind: ReadingKind = "average"

    @abstractmethod
    def read(self, now_s: float | None = None) -> IntensityReading:
        """The current intensity; IntensityUnavailableError on failure."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _clock_arg(who: str, clock: object) -> Clock:
    if not callable(clock):
        raise ConfigError(f"{who}: clock = {clock!r:.60}: must be a function returning epoch s")
    return clock


def _now(who: str, now_s: float | None, clock: Clock) -> float:
    if now_s is None:
        return float(clock())
    return finite_number("now_s", now_s, *_TIMES, where=f"{who}.read")


# ---- static -----------------------------------------------------------------------------------
class StaticProvider(IntensityProvider):
    """A region's annual intensity (:func:`carbon_intensity`): constant, never fails."""

    name = "static"
    kind: ReadingKind = "average"

    def __init__(self, region: str, *, clock: Clock = time.time) -> None:
        if not isinstance(region, str) or not region.strip():
            raise ConfigError(
                f"StaticProvider: region = {region!r:.60}: give a region such as 'CISO', 'DEU' "
                "or 'NCSW' (see greenllm.carbon.list_regions())"
            )
        info = region_info(region)  # ConfigError naming close matches
        self.region = info.code
        self.g_per_kwh = carbon_intensity(info.code)
        self._clock = _clock_arg("StaticProvider", clock)

    def read(self, now_s: float | None = None) -> IntensityReading:
        """The annual figure, for now."""
        t = _now("StaticProvider", now_s, self._clock)
        return IntensityReading(
            self.g_per_kwh, t, "average", f"static {self.region}", float(self._clock())
        )

    def __repr__(self) -> str:
        return f"StaticProvider({self.region!r}, {self.g_per_kwh:g} g/kWh)"


# ---- trace ------------------------------------------------------------------------------------
def _shipped_code(trace: CarbonIntensityTrace) -> str | None:
    """The region code when ``trace`` is one of the shipped 2022 traces."""
    for code in TRACE_REGIONS:
        if trace.name == f"{code}-2022":
            shipped = CarbonIntensityTrace.from_region(code, periodic=False)
            same = len(shipped) == len(trace) and np.array_equal(
                shipped.timestamps_s, trace.timestamps_s
            ) and np.array_equal(shipped.g_per_kwh, trace.g_per_kwh)  # fmt: skip
            return code if same else None
    return None


def _resolve_trace(value: object) -> tuple[CarbonIntensityTrace, str | None]:
    """(trace, shipped region code or None) for a trace, a shipped region code or a CSV path."""
    if isinstance(value, CarbonIntensityTrace):
        return value, _shipped_code(value)
    if isinstance(value, str) and 0 < len(value) <= 64 and canonical_code(value) in TRACE_REGIONS:
        code = canonical_code(value)
        return CarbonIntensityTrace.from_region(code, periodic=False), code
    if isinstance(value, (str, Path)) and str(value).strip():
        path = Path(value)
        if path.is_file():
            return CarbonIntensityTrace.from_csv(path), None
        raise ConfigError(
            f"TraceProvider: trace = {str(value)!r:.100}: neither a shipped trace region "
            f"({', '.join(TRACE_REGIONS)}) nor an existing CSV file; for a region with only an "
            "annual figure use StaticProvider"
        )
    raise ConfigError(
        f"TraceProvider: trace = {value!r:.60}: give a CarbonIntensityTrace, a region code "
        f"({', '.join(TRACE_REGIONS)}) or the path of a CSV file (timestamp,g_per_kwh)"
    )


def _map_to_year(t_s: float, year: int) -> tuple[float, float]:
    """(start of ``t_s``'s UTC hour, the same UTC month/day/hour in ``year``); Feb 29 -> Feb 28
    when ``year`` is not a leap year."""
    hour_s = _hour_floor(t_s)
    try:
        real = datetime.fromtimestamp(hour_s, UTC)
    except (ValueError, OverflowError, OSError) as err:
        raise ConfigError(
            f"TraceProvider: now_s = {t_s!r}: must fall in the years 1 to 9999 to be mapped"
        ) from err
    day = real.day
    if real.month == 2 and day == 29 and not _is_leap(year):
        day = 28
    mapped = datetime(year, real.month, day, real.hour, tzinfo=UTC)
    return hour_s, mapped.timestamp()


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


class TraceProvider(IntensityProvider):
    """Intensity from an hourly :class:`CarbonIntensityTrace`.

    ``trace_or_region`` is a trace, a shipped region code (``CISO``, ...; 2022 data) or a CSV
    path. With ``year`` the current instant is read as the same UTC month/day/hour of ``year``
    (Feb 29 -> Feb 28); the mapping is logged once and shown in ``source``. Without ``year`` the
    trace must cover now (or be a periodic trace of your own); the shipped traces need
    ``year=2022``. ``forecast`` holds the next 24 hourly values.
    """

    name = "trace"
    kind: ReadingKind = "average"

    def __init__(
        self,
        trace_or_region: CarbonIntensityTrace | str | Path,
        *,
        year: int | None = None,
        clock: Clock = time.time,
    ) -> None:
        trace, shipped = _resolve_trace(trace_or_region)
        self._clock = _clock_arg("TraceProvider", clock)
        self.trace = trace
        self.year = None if year is None else finite_int("year", year, 1, 9998,
                                                         where="TraceProvider")  # fmt: skip
        span = f"{_iso(trace.start_s)} to {_iso(trace.end_s)}"
        if self.year is None and shipped is not None:
            raise ConfigError(
                f"TraceProvider: year = None for the shipped trace {trace.name!r} (hourly data of "
                "2022): pass year=2022 to read each instant as the same UTC month/day/hour of 2022 "
                "(now is never mapped onto 2022 silently)"
            )
        if self.year is None and not trace.periodic:
            now = float(self._clock())
            if not trace.start_s <= now < trace.end_s:
                first = datetime.fromtimestamp(trace.start_s, UTC).year
                raise ConfigError(
                    f"TraceProvider: year = None but trace {trace.name!r} covers {span}, not now "
                    f"({_iso(now)}): pass year={first} to read now as the same UTC "
                    f"month/day/hour of {first}"
                )
        if self.year is not None and not trace.periodic:
            y0 = datetime(self.year, 1, 1, tzinfo=UTC).timestamp()
            y1 = datetime(self.year + 1, 1, 1, tzinfo=UTC).timestamp()
            if y1 <= trace.start_s or y0 >= trace.end_s:
                raise ConfigError(
                    f"TraceProvider: year = {self.year}: trace {trace.name!r} covers {span}, "
                    "nothing of that year; pass a year the trace covers"
                )
        self._logged = False
        self._lock = threading.Lock()

    def _covers(self, t_s: float) -> bool:
        return self.trace.periodic or self.trace.start_s <= t_s < self.trace.end_s

    def _mapped(self, t_s: float) -> float:
        return t_s if self.year is None else _map_to_year(t_s, self.year)[1]

    def read(self, now_s: float | None = None) -> IntensityReading:
        """The trace's value now (mapped onto ``year``) and the next 24 hourly values."""
        t = _now("TraceProvider", now_s, self._clock)
        name = self.trace.name
        if self.year is None:
            at_s, mapped, source = t, t, f"trace {name}"
        else:
            at_s, mapped = _map_to_year(t, self.year)
            source = f"trace {name} ({_iso(at_s)} read as {_iso(mapped)})"
            with self._lock:
                if not self._logged:
                    self._logged = True
                    logger.info(
                        "TraceProvider: trace %s is read at the current UTC month/day/hour of "
                        "%d (now %s read as %s)", name, self.year, _iso(at_s), _iso(mapped),
                    )  # fmt: skip
        if not self._covers(mapped):
            raise _fail(
                f"trace {name}",
                "outside the trace",
                f"{_iso(mapped)} is not in {_iso(self.trace.start_s)} to {_iso(self.trace.end_s)}",
            )
        forecast = []
        for k in range(1, 25):
            when = _hour_floor(t) + k * SECONDS_PER_HOUR
            m = self._mapped(when)
            if self._covers(m):
                forecast.append((when, float(self.trace.at(m))))
        return IntensityReading(
            float(self.trace.at(mapped)), at_s, "average", source, float(self._clock()),
            tuple(forecast),
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"TraceProvider({self.trace.name!r}, year={self.year})"


# ---- HTTP -------------------------------------------------------------------------------------
class _SameHostAuth(urllib.request.HTTPRedirectHandler):
    """Follows redirects, dropping the credentials when one leaves the origin."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        old_url, new_url = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        if new is not None and (old_url.scheme, old_url.netloc) != (new_url.scheme, new_url.netloc):
            for header in ("Auth-token", "Authorization"):
                new.remove_header(header)
        return new


def _retry_after_s(raw: str | None) -> float | None:
    if not raw:
        return None
    text = raw.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(text).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _http_error(
    who: str, url: str, err: urllib.error.HTTPError, secrets: tuple[str, ...]
) -> IntensityUnavailableError:
    try:
        raw = err.read(_ERROR_BODY_CHARS * 4)
    except (OSError, http.client.HTTPException, ValueError):
        raw = b""
    finally:
        err.close()
    body = " ".join(raw.decode("utf-8", "replace").split())[:_ERROR_BODY_CHARS]
    status = int(err.code)
    retry_raw = err.headers.get("Retry-After") if err.headers is not None else None
    retry_s = _retry_after_s(retry_raw)
    detail = f"GET {url}" + (f"; body: {body!r}" if body else "")
    if status == 429:
        shown = f"; Retry-After: {retry_raw.strip()[:40]!s} s" if retry_raw else ""
        return _fail(who, "rate limited, HTTP 429", f"{detail}{shown}", secrets=secrets,
                     status=status, retry_after_s=retry_s)  # fmt: skip
    if status == 401:
        return _fail(who, "HTTP 401 (unauthorized; check the credentials)", detail,
                     secrets=secrets, status=status)  # fmt: skip
    return _fail(who, f"HTTP {status}", detail, secrets=secrets, status=status,
                 retry_after_s=retry_s)  # fmt: skip


def _get_json(
    who: str,
    url: str,
    headers: Mapping[str, str],
    timeout_s: float,
    secrets: tuple[str, ...],
) -> object:
    """GET ``url`` and parse its JSON; every failure is an IntensityUnavailableError."""
    request = urllib.request.Request(url, headers=dict(headers), method="GET")
    opener = urllib.request.build_opener(_SameHostAuth())
    try:
        with opener.open(request, timeout=timeout_s) as resp:
            body = resp.read(MAX_BODY_BYTES + 1)
    except urllib.error.HTTPError as err:
        raise _http_error(who, url, err, secrets) from err
    except urllib.error.URLError as err:
        if isinstance(err.reason, TimeoutError):
            raise _fail(who, "timeout", f"GET {url}: no answer within {timeout_s:g} s",
                        secrets=secrets) from err  # fmt: skip
        raise _fail(who, "unreachable", f"GET {url}: {err.reason}", secrets=secrets) from err
    except TimeoutError as err:  # socket.timeout is TimeoutError
        raise _fail(who, "timeout", f"GET {url}: no answer within {timeout_s:g} s",
                    secrets=secrets) from err  # fmt: skip
    except (OSError, http.client.HTTPException, ValueError) as err:
        raise _fail(who, "connection failed", f"GET {url}: {type(err).__name__}: {err}",
                    secrets=secrets) from err  # fmt: skip
    if len(body) > MAX_BODY_BYTES:
        raise _fail(who, "answer too large", f"GET {url}: more than {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError
        start = " ".join(body[:_ERROR_BODY_CHARS].decode("utf-8", "replace").split())
        raise _fail(who, "bad JSON", f"GET {url}: {err}; body starts {start!r}",
                    secrets=secrets) from err  # fmt: skip


def _object(who: str, obj: object, where: str = "answer") -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _fail(who, "bad answer", f"{where} is {type(obj).__name__}, not a JSON object")
    return obj


def _field(who: str, obj: object, key: str, where: str = "answer") -> object:
    found = _object(who, obj, where)
    if key not in found:
        keys = sorted(str(k)[:40] for k in found)[:20]
        raise _fail(who, f"missing field {key!r}", f"{where} has keys {keys}")
    return found[key]


def _intensity(who: str, value: object, name: str, hi: float = MAX_INTENSITY_G_PER_KWH) -> float:
    try:
        return finite_number(name, value, 0.0, hi)
    except ConfigError as err:
        raise _fail(who, "bad value", str(err)) from None


def _epoch_s(who: str, value: object, name: str) -> float:
    if not isinstance(value, str) or len(value) > 64:
        raise _fail(who, "bad value", f"{name} = {value!r:.80}: must be an ISO-8601 time")
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError as err:
        raise _fail(who, "bad value", f"{name} = {value!r}: not an ISO-8601 time") from err
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _url_arg(who: str, base_url: object) -> str:
    url = base_url.strip().rstrip("/") if isinstance(base_url, str) else ""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or len(url) > 512:
        raise ConfigError(
            f"{who}: base_url = {base_url!r:.100}: give an http(s) URL such as "
            "'https://api.example.org'"
        )
    return url


def _zone_arg(who: str, field: str, value: object, example: str) -> str:
    if not isinstance(value, str) or not _ZONE_RE.match(value.strip()):
        raise ConfigError(f"{who}: {field} = {value!r:.80}: give a {field} such as {example}")
    return value.strip()


def _secret_arg(who: str, field: str, value: object, env: str) -> str:
    if value is None:
        value = os.environ.get(env, "")
        if not value.strip():
            raise ConfigError(
                f"{who}: {field} = None and ${env} is not set: pass {field}=... or set {env}"
            )
    if not isinstance(value, str) or not value.strip() or len(value) > 4096:
        raise ConfigError(
            f"{who}: {field} must be a non-empty string (given: {type(value).__name__}); "
            f"pass {field}=... or set {env}"
        )
    return value.strip()


class _HTTPProvider(IntensityProvider):
    def __init__(self, who: str, base_url: object, timeout_s: object, clock: object) -> None:
        self.base_url = _url_arg(who, base_url)
        self.timeout_s = finite_number("timeout_s", timeout_s, 0.0, MAX_TIMEOUT_S, lo_open=True,
                                       where=who)  # fmt: skip
        self._clock = _clock_arg(who, clock)

    def _secrets(self) -> tuple[str, ...]:
        return ()

    def read(self, now_s: float | None = None) -> IntensityReading:
        """The latest value (``now_s`` is not used: the API answers for now)."""
        try:
            return self._read()
        except IntensityUnavailableError as err:
            secrets = self._secrets()
            if not any(s in str(err) or s in err.reason for s in secrets if s):
                raise
            # An answer echoed a secret into a field: drop the original error, keep a copy.
            raise IntensityUnavailableError(
                _redact(str(err), secrets), provider=err.provider,
                reason=_redact(err.reason, secrets), status=err.status,
                retry_after_s=err.retry_after_s,
            ) from None  # fmt: skip

    @abstractmethod
    def _read(self) -> IntensityReading:
        """One reading, every failure an IntensityUnavailableError."""

    def _get(self, who: str, path: str, query: Mapping[str, str], headers: Mapping[str, str]
             ) -> object:  # fmt: skip
        url = self.base_url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        return _get_json(who, url, headers, self.timeout_s, self._secrets())


class ElectricityMapsProvider(_HTTPProvider):
    """Electricity Maps API v3: the latest average (consumption) intensity of ``zone``.

    The key comes from ``token`` or ``$ELECTRICITYMAPS_API_KEY``. ``forecast=True`` also asks
    for the forecast; a failing forecast keeps the latest value and logs a warning.
    """

    name = "electricitymaps"
    kind: ReadingKind = "average"

    def __init__(
        self,
        zone: str,
        *,
        token: str | None = None,
        base_url: str = "https://api.electricitymap.org",
        timeout_s: float = 5.0,
        forecast: bool = False,
        clock: Clock = time.time,
    ) -> None:
        who = "ElectricityMapsProvider"
        self.zone = _zone_arg(who, "zone", zone, "'DE' or 'US-CAL-CISO'")
        super().__init__(who, base_url, timeout_s, clock)
        if not isinstance(forecast, bool):
            raise ConfigError(f"{who}: forecast = {forecast!r:.40}: must be True or False")
        self.forecast = forecast
        self._token = _secret_arg(who, "token", token, ELECTRICITYMAPS_KEY_ENV)

    def _secrets(self) -> tuple[str, ...]:
        return (self._token,)

    @property
    def _who(self) -> str:
        return f"electricitymaps {self.zone}"

    def _read(self) -> IntensityReading:
        who, headers = self._who, {"auth-token": self._token, "Accept": "application/json"}
        data = self._get(who, "/v3/carbon-intensity/latest", {"zone": self.zone}, headers)
        data = _object(who, data)
        g = _intensity(who, _field(who, data, "carbonIntensity"), "carbonIntensity")
        at_s = _epoch_s(who, _field(who, data, "datetime"), "datetime")
        zone = data.get("zone")
        if isinstance(zone, str) and zone.upper() != self.zone.upper():
            raise _fail(who, "wrong zone", f"asked for {self.zone!r}, answered for {zone!r:.40}")
        notes = [str(data["emissionFactorType"])[:32]] if isinstance(
            data.get("emissionFactorType"), str) else []  # fmt: skip
        if data.get("isEstimated") is True:
            notes.append("estimated")
        source = who + (f" ({', '.join(notes)})" if notes else "")
        points: tuple[tuple[float, float], ...] = ()
        if self.forecast:
            try:
                points = self._read_forecast(who, headers, at_s)
            except IntensityUnavailableError as err:
                logger.warning("%s: forecast unavailable, using the latest value only: %s",
                               who, _redact(str(err), self._secrets()))  # fmt: skip
        return IntensityReading(g, at_s, "average", source, float(self._clock()), points)

    def _read_forecast(
        self, who: str, headers: Mapping[str, str], after_s: float
    ) -> tuple[tuple[float, float], ...]:
        data = self._get(who, "/v3/carbon-intensity/forecast", {"zone": self.zone}, headers)
        items = _field(who, data, "forecast")
        if not isinstance(items, list):
            raise _fail(who, "bad value", f"forecast is {type(items).__name__}, not a list")
        pairs: dict[float, float] = {}
        for i, item in enumerate(items[:MAX_FORECAST_POINTS]):
            where = f"forecast[{i}]"
            t = _epoch_s(who, _field(who, item, "datetime", where), f"{where}.datetime")
            g = _intensity(who, _field(who, item, "carbonIntensity", where),
                           f"{where}.carbonIntensity")  # fmt: skip
            if t > after_s:
                pairs.setdefault(t, g)
        return tuple(sorted(pairs.items()))

    def __repr__(self) -> str:
        return (
            f"ElectricityMapsProvider(zone={self.zone!r}, base_url={self.base_url!r}, "
            f"forecast={self.forecast}, token=***)"
        )


class WattTimeProvider(_HTTPProvider):
    """WattTime API v3: the marginal operating emissions rate (MOER) of ``region``.

    Logs in with HTTP Basic auth (``username``/``password`` or ``$WATTTIME_USER`` /
    ``$WATTTIME_PASSWORD``) for a 30-minute token, renewed after 25 minutes or once on a 401.
    The forecast's first point is the current MOER, the rest the forecast; lbs/MWh are
    converted to g/kWh.
    """

    name = "watttime"
    kind: ReadingKind = "marginal"

    def __init__(
        self,
        region: str,
        *,
        username: str | None = None,
        password: str | None = None,
        base_url: str = "https://api.watttime.org",
        timeout_s: float = 5.0,
        clock: Clock = time.time,
    ) -> None:
        who = "WattTimeProvider"
        self.region = _zone_arg(who, "region", region, "'CAISO_NORTH' or 'PJM_DC'")
        super().__init__(who, base_url, timeout_s, clock)
        self._username = _secret_arg(who, "username", username, WATTTIME_USER_ENV)
        self._password = _secret_arg(who, "password", password, WATTTIME_PASSWORD_ENV)
        pair = f"{self._username}:{self._password}".encode()
        self._basic = base64.b64encode(pair).decode("ascii")
        self._token: str | None = None
        self._token_at = -math.inf
        self._lock = threading.Lock()

    def _secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self._password, self._basic, self._token) if s)

    @property
    def _who(self) -> str:
        return f"watttime {self.region}"

    def _login(self) -> str:
        who = self._who
        try:
            data = self._get(who, "/login", {}, {"Authorization": f"Basic {self._basic}"})
        except IntensityUnavailableError as err:
            if err.status in (401, 403):
                raise _fail(
                    who, f"login failed (HTTP {err.status})",
                    f"check {WATTTIME_USER_ENV} / {WATTTIME_PASSWORD_ENV}",
                    status=err.status,
                ) from err  # fmt: skip
            raise
        token = _field(who, data, "token", "login answer")
        if not isinstance(token, str) or not token or len(token) > 16_384:
            raise _fail(who, "bad value", "login answer: token is not a non-empty string")
        self._token, self._token_at = token, float(self._clock())
        return token

    def _forecast(self) -> object:
        query = {"region": self.region, "signal_type": "co2_moer"}
        with self._lock:
            token = self._token
            if token is None or float(self._clock()) - self._token_at >= WATTTIME_TOKEN_S:
                token = self._login()
            for attempt in range(2):
                try:
                    return self._get(self._who, "/v3/forecast", query,
                                     {"Authorization": f"Bearer {token}"})  # fmt: skip
                except IntensityUnavailableError as err:
                    if err.status != 401 or attempt:
                        raise
                    self._token = None
                    token = self._login()
        raise AssertionError("unreachable")  # pragma: no cover

    def _read(self) -> IntensityReading:
        who = self._who
        data = self._forecast()
        meta = _object(who, _field(who, data, "meta"), "meta")
        units = _field(who, meta, "units", "meta")
        if units != "lbs_co2_per_mwh":
            raise _fail(who, "unsupported units",
                        f"meta.units = {units!r:.60}; only 'lbs_co2_per_mwh' is read")  # fmt: skip
        signal = meta.get("signal_type")
        if signal is not None and signal != "co2_moer":
            raise _fail(who, "wrong signal", f"meta.signal_type = {signal!r:.60}, not 'co2_moer'")
        items = _field(who, data, "data")
        if not isinstance(items, list) or not items:
            raise _fail(who, "bad value", "data must be a non-empty list of points")
        hi = MAX_INTENSITY_G_PER_KWH * 1000.0 / G_PER_LB  # in lbs/MWh
        points: dict[float, float] = {}
        for i, item in enumerate(items[:MAX_FORECAST_POINTS]):
            where = f"data[{i}]"
            t = _epoch_s(who, _field(who, item, "point_time", where), f"{where}.point_time")
            raw = _field(who, item, "value", where)
            lbs = _intensity(who, raw, f"{where}.value (lbs/MWh)", hi)
            points.setdefault(t, lbs * G_PER_LB / 1000.0)
        (at_s, g), *rest = sorted(points.items())
        source = f"{who} marginal (MOER)"
        return IntensityReading(g, at_s, "marginal", source, float(self._clock()), tuple(rest))

    def __repr__(self) -> str:
        return f"WattTimeProvider(region={self.region!r}, base_url={self.base_url!r}, auth=***)"


# ---- caching and fallback ---------------------------------------------------------------------
class CachedProvider(IntensityProvider):
    """Wraps ``provider``: a reading younger than ``cache_s`` is reused; when the provider
    fails, the last good reading serves while younger than ``max_age_s`` (``fallback`` text says
    its age and the error); beyond that the ``fallback`` provider's reading (or the error when
    there is none), with one WARNING per outage. A 429's Retry-After is honoured. Thread-safe.
    Ages are measured on ``clock`` (or ``now_s`` when given)."""

    def __init__(
        self,
        provider: IntensityProvider,
        *,
        cache_s: float = 300.0,
        max_age_s: float = 3600.0,
        fallback: IntensityProvider | None = None,
        clock: Clock = time.time,
    ) -> None:
        who = "CachedProvider"
        if not isinstance(provider, IntensityProvider):
            raise ConfigError(f"{who}: provider = {provider!r:.60}: must be an IntensityProvider")
        if fallback is not None and not isinstance(fallback, IntensityProvider):
            raise ConfigError(
                f"{who}: fallback = {fallback!r:.60}: must be an IntensityProvider or None"
            )
        self.cache_s = finite_number("cache_s", cache_s, 0.0, MAX_TIME_S, where=who)
        self.max_age_s = finite_number("max_age_s", max_age_s, 0.0, MAX_TIME_S, where=who)
        if self.max_age_s < self.cache_s:
            raise ConfigError(
                f"{who}: max_age_s = {self.max_age_s:g} < cache_s = {self.cache_s:g}: a stale "
                "value must be allowed at least as long as a cached one; raise max_age_s"
            )
        self.provider, self.fallback = provider, fallback
        self.name, self.kind = provider.name, provider.kind
        self._clock = _clock_arg(who, clock)
        self._lock = threading.Lock()
        self._last: IntensityReading | None = None
        self._last_t = -math.inf
        self._error: IntensityUnavailableError | None = None
        self._retry_at = -math.inf
        self._outage_since: float | None = None
        self._warned = False

    def read(self, now_s: float | None = None) -> IntensityReading:
        """The cached, fresh, stale or fallback reading; IntensityUnavailableError when none."""
        with self._lock:
            t = _now("CachedProvider", now_s, self._clock)
            if self._last is not None and self._error is None and t - self._last_t < self.cache_s:
                return self._last
            if t >= self._retry_at or self._error is None:
                try:
                    reading = self.provider.read(now_s)
                except IntensityUnavailableError as err:
                    self._failed(t, err)
                else:
                    self._recovered(t)
                    self._last, self._last_t, self._error = reading, t, None
                    return reading
            return self._stand_in(t, now_s)

    def _failed(self, t: float, err: IntensityUnavailableError) -> None:
        self._error = err
        if err.retry_after_s is not None:
            self._retry_at = t + err.retry_after_s
        if self._outage_since is None:
            self._outage_since = t
            logger.info("%s unavailable, serving a stand-in value: %s", self.provider.name, err)

    def _recovered(self, t: float) -> None:
        if self._outage_since is not None:
            logger.info("%s is back after %.0f s", self.provider.name, t - self._outage_since)
        self._outage_since, self._warned, self._retry_at = None, False, -math.inf

    def _stand_in(self, t: float, now_s: float | None) -> IntensityReading:
        err = self._error
        assert err is not None
        name = self.provider.name
        age = t - self._last_t
        if self._last is not None and age <= self.max_age_s:
            return replace(self._last, fallback=f"stale: last {name} value, {age:.0f} s old "
                                                f"({err.reason})")  # fmt: skip
        last = f"last good value {age:.0f} s old" if self._last is not None else "no good value yet"
        if not self._warned:
            self._warned = True
            if self.fallback is None:
                logger.warning("%s: %s and no fallback; raising: %s", name, last, err)
            else:
                logger.warning("%s: %s (max_age_s = %g); using %r until it recovers: %s",
                               name, last, self.max_age_s, self.fallback, err)  # fmt: skip
        if self.fallback is None:  # a fresh copy: re-raising one object grows its traceback
            raise IntensityUnavailableError(
                str(err), provider=err.provider, reason=err.reason, status=err.status,
                retry_after_s=err.retry_after_s,
            ) from err  # fmt: skip
        try:
            reading = self.fallback.read(now_s)
        except IntensityUnavailableError as fb_err:
            raise _fail(name, "unavailable, and so is the fallback",
                        f"{err}; fallback: {fb_err}") from fb_err  # fmt: skip
        text = f"{reading.source} fallback: {name} unavailable, {last} ({err.reason})"
        return replace(reading, fallback=text)

    def __repr__(self) -> str:
        return (
            f"CachedProvider({self.provider!r}, cache_s={self.cache_s:g}, "
            f"max_age_s={self.max_age_s:g}, fallback={self.fallback!r})"
        )


# ---- factory ----------------------------------------------------------------------------------
def _static_region_for(zone: str) -> str | None:
    """A region with an annual figure for an Electricity Maps zone / WattTime region, if any."""
    key = zone.strip().upper()
    if key in _STATIC_FOR_ZONE:
        return _STATIC_FOR_ZONE[key]
    try:
        info = region_info(key)
    except ConfigError:
        info = None
    if info is not None and info.code == canonical_code(key):
        return info.code
    # US grids: Electricity Maps 'US-CAL-CISO' -> CISO; WattTime 'CAISO_NORTH' -> CISO.
    for part in (key.split("-")[-1], key.split("_")[0]):
        code = canonical_code(part)
        if code in TRACE_REGIONS:
            return code
    return None


def make_provider(
    name: str,
    *,
    zone: str | None,
    year: int | None = None,
    token: str | None = None,
    username: str | None = None,
    password: str | None = None,
    forecast: bool = False,
    base_url: str | None = None,
    timeout_s: float = 5.0,
    cache_s: float = 300.0,
    max_age_s: float = 3600.0,
    fallback_region: str | None = None,
    clock: Clock = time.time,
) -> IntensityProvider:
    """The provider ``name`` (``static``, ``trace``, ``electricitymaps``, ``watttime``) for
    ``zone`` (a region code, a trace region or CSV path, an Electricity Maps zone or a WattTime
    region). The HTTP ones are wrapped in :class:`CachedProvider`, with a
    :class:`StaticProvider` fallback for ``fallback_region`` or, by default, the zone's own
    static region when one is known (else no fallback)."""
    if not isinstance(name, str) or name.strip().lower() not in PROVIDERS:
        raise ConfigError(
            f"make_provider: name = {name!r:.60}: unknown provider; valid names: "
            f"{', '.join(PROVIDERS)}"
        )
    kind = name.strip().lower()
    if zone is None or not isinstance(zone, str) or not zone.strip():
        example = {"static": "'CISO'", "trace": "'CISO' or a CSV path", "electricitymaps": "'DE'",
                   "watttime": "'CAISO_NORTH'"}[kind]  # fmt: skip
        raise ConfigError(f"make_provider({kind!r}): zone = {zone!r:.60}: give a zone such as "
                          f"{example}")  # fmt: skip
    if kind == "static":
        return StaticProvider(zone, clock=clock)
    if kind == "trace":
        return TraceProvider(zone, year=year, clock=clock)
    inner: IntensityProvider
    if kind == "electricitymaps":
        inner = ElectricityMapsProvider(
            zone, token=token, timeout_s=timeout_s, forecast=forecast, clock=clock,
            base_url=base_url or "https://api.electricitymap.org",
        )  # fmt: skip
    else:
        inner = WattTimeProvider(
            zone, username=username, password=password, timeout_s=timeout_s, clock=clock,
            base_url=base_url or "https://api.watttime.org",
        )  # fmt: skip
    region = fallback_region if fallback_region is not None else _static_region_for(zone)
    fallback = None if region is None else StaticProvider(region, clock=clock)
    return CachedProvider(
        inner, cache_s=cache_s, max_age_s=max_age_s, fallback=fallback, clock=clock
    )
