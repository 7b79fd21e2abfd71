"""Live carbon-intensity providers against local HTTP stubs (loopback only, real urllib calls).

The stub answers in the documented Electricity Maps v3 / WattTime v3 JSON shapes and records
every request, so the tests check the auth headers that were sent as well as the parsing.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import pickle
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from greenllm.carbon import (
    CachedProvider,
    CarbonIntensityTrace,
    ElectricityMapsProvider,
    IntensityProvider,
    IntensityReading,
    IntensityUnavailableError,
    StaticProvider,
    TraceProvider,
    WattTimeProvider,
    carbon_intensity,
    make_provider,
)
from greenllm.carbon.intensity.providers import G_PER_LB, PROVIDERS
from greenllm.errors import ConfigError, GreenLLMError

SECRET = "sk-FAKE-secret-7f3a9c21"  # an Electricity Maps key
PASSWORD = "pw-FAKE-secret-91b2e4"  # a WattTime password
USER = "alice"
WT_TOKEN = "wt-FAKE-token-55aa"
LOGGER = "greenllm.carbon.intensity.providers"
EM_LATEST = "/v3/carbon-intensity/latest"
EM_FORECAST = "/v3/carbon-intensity/forecast"
WT_LOGIN = "/login"
WT_FORECAST = "/v3/forecast"


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


NOW_S = _epoch("2026-12-06T20:17:00+00:00")
HOUR_S = _epoch("2026-12-06T20:00:00+00:00")


# ---- the stub server --------------------------------------------------------------------------
@dataclass
class Seen:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class Answer:
    status: int = 200
    body: Any = None  # JSON-encoded unless bytes
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


Route = Answer | Callable[[Seen], Answer]


class Stub:
    """Routes path -> Answer (or a function of the request); records every request."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.url = ""

    def calls(self, path: str) -> int:
        with self.lock:
            return sum(s.path == path for s in self.seen)

    def last(self, path: str) -> Seen:
        with self.lock:
            return [s for s in self.seen if s.path == path][-1]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        stub = self.server.stub
        parts = urlsplit(self.path)
        seen = Seen(
            parts.path, parse_qs(parts.query), {k.lower(): v for k, v in self.headers.items()}
        )
        with stub.lock:
            stub.seen.append(seen)
        route = stub.routes.get(parts.path, Answer(404, {"error": "no such route"}))
        answer = route(seen) if callable(route) else route
        if answer.delay_s:
            stub.stop.wait(answer.delay_s)  # bounded; cut short at teardown
        body = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
        try:
            self.send_response(answer.status)
            for key, value in answer.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up (timeout test)
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    stub: Stub

    def handle_error(self, request: object, client_address: object) -> None:
        pass


def _serve() -> Iterator[Stub]:
    stub = Stub()
    server = _Server(("127.0.0.1", 0), _Handler)
    server.stub = stub
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield stub
    finally:
        stub.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def stub() -> Iterator[Stub]:
    yield from _serve()


@pytest.fixture
def other_stub() -> Iterator[Stub]:
    yield from _serve()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy between urllib and the loopback stub; no real credentials from the shell."""
    proxies = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
    for var in (*proxies, "ELECTRICITYMAPS_API_KEY", "WATTTIME_USER", "WATTTIME_PASSWORD"):
        monkeypatch.delenv(var, raising=False)


class FakeClock:
    def __init__(self, t: float = NOW_S) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


# ---- documented answers -----------------------------------------------------------------------
def em_latest(value: object = 312.0, when: str = "2026-12-06T20:00:00.000Z") -> dict[str, Any]:
    return {
        "zone": "DE",
        "carbonIntensity": value,
        "datetime": when,
        "updatedAt": "2026-12-06T20:05:12.000Z",
        "emissionFactorType": "lifecycle",
        "isEstimated": False,
    }


def em_forecast() -> dict[str, Any]:
    hours = [f"2026-12-06T{h:02d}:00:00.000Z" for h in (21, 22, 23)]
    return {
        "zone": "DE",
        "forecast": [
            {"carbonIntensity": g, "datetime": t}
            for g, t in zip((290, 280, 301), hours, strict=True)
        ],
        "updatedAt": "2026-12-06T20:05:12.000Z",
    }


def wt_forecast(values: tuple[object, ...] = (1000.0, 900.0, 800.0), units: str = "lbs_co2_per_mwh"
                ) -> dict[str, Any]:  # fmt: skip
    times = [f"2026-12-06T20:{m:02d}:00+00:00" for m in range(0, 5 * len(values), 5)]
    return {
        "data": [{"point_time": t, "value": v} for t, v in zip(times, values, strict=True)],
        "meta": {
            "region": "CAISO_NORTH",
            "signal_type": "co2_moer",
            "units": units,
            "generated_at": "2026-12-06T20:00:00+00:00",
        },
    }


def em_provider(stub: Stub, **kw: Any) -> ElectricityMapsProvider:
    kw.setdefault("token", SECRET)
    kw.setdefault("timeout_s", 0.2)
    return ElectricityMapsProvider("DE", base_url=stub.url, **kw)


def wt_provider(stub: Stub, **kw: Any) -> WattTimeProvider:
    kw.setdefault("username", USER)
    kw.setdefault("password", PASSWORD)
    kw.setdefault("timeout_s", 0.2)
    return WattTimeProvider("CAISO_NORTH", base_url=stub.url, **kw)


def serve_em(stub: Stub, latest: Answer | None = None) -> None:
    stub.routes[EM_LATEST] = latest or Answer(body=em_latest())
    stub.routes[EM_FORECAST] = Answer(body=em_forecast())


def serve_wt(stub: Stub, forecast: Route | None = None) -> None:
    stub.routes[WT_LOGIN] = Answer(body={"token": WT_TOKEN})
    stub.routes[WT_FORECAST] = forecast or Answer(body=wt_forecast())


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in (SECRET, PASSWORD, WT_TOKEN, base64.b64encode(f"{USER}:{PASSWORD}".encode())
                       .decode()):  # fmt: skip
            assert secret not in text


# ---- the reading ------------------------------------------------------------------------------
def test_reading_is_checked_and_serialises_to_json() -> None:
    r = IntensityReading(300, 10.0, "average", "x", 11.0, forecast=[(20, 1), (30, 2)])  # type: ignore[arg-type]
    assert r.forecast == ((20.0, 1.0), (30.0, 2.0))
    assert json.loads(json.dumps(r.to_dict())) == {
        "g_per_kwh": 300.0, "at_s": 10.0, "kind": "average", "source": "x",
        "forecast": [[20.0, 1.0], [30.0, 2.0]], "fallback": None, "fetched_s": 11.0,
    }  # fmt: skip
    with pytest.raises(ConfigError, match="kind"):
        IntensityReading(1.0, 0.0, "mean", "x", 0.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="g_per_kwh"):
        IntensityReading(math.nan, 0.0, "average", "x", 0.0)
    with pytest.raises(ConfigError, match="ascend"):
        IntensityReading(1.0, 0.0, "average", "x", 0.0, forecast=((2.0, 1.0), (1.0, 1.0)))


def test_error_is_a_greenllm_error_and_pickles() -> None:
    err = IntensityUnavailableError("x: HTTP 500", provider="x", reason="HTTP 500", status=500)
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, GreenLLMError)
    assert (str(back), back.provider, back.reason, back.status) == (
        "x: HTTP 500",
        "x",
        "HTTP 500",
        500,
    )


# ---- static -----------------------------------------------------------------------------------
def test_static_provider() -> None:
    p = StaticProvider("caiso", clock=FakeClock())
    r = p.read()
    assert isinstance(p, IntensityProvider)
    assert (r.g_per_kwh, r.kind, r.source, r.at_s, r.fallback) == (
        carbon_intensity("CISO"), "average", "static CISO", NOW_S, None)  # fmt: skip
    assert r.g_per_kwh == 261.0
    assert p.read(now_s=5.0).at_s == 5.0
    for bad in ("", "Atlantis", None):
        with pytest.raises(ConfigError, match="region"):
            StaticProvider(bad)  # type: ignore[arg-type]


# ---- trace ------------------------------------------------------------------------------------
def test_shipped_trace_needs_an_explicit_year() -> None:
    for value in ("CISO", CarbonIntensityTrace.from_region("CISO")):
        with pytest.raises(ConfigError, match=r"year=2022"):
            TraceProvider(value)
    with pytest.raises(ConfigError, match="year = 2023"):
        TraceProvider("CISO", year=2023)
    with pytest.raises(ConfigError, match="year"):
        TraceProvider("CISO", year=2022.0)  # type: ignore[arg-type]


def test_trace_maps_now_onto_the_year(caplog: pytest.LogCaptureFixture) -> None:
    trace = CarbonIntensityTrace.from_region("CISO", periodic=False)
    p = TraceProvider("CISO", year=2022, clock=FakeClock())
    mapped = _epoch("2022-12-06T20:00:00+00:00")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        r = p.read()
        p.read()
    assert r.g_per_kwh == trace.at(mapped)
    assert r.at_s == HOUR_S and r.kind == "average" and r.fallback is None
    assert r.source == "trace CISO-2022 (2026-12-06T20:00Z read as 2022-12-06T20:00Z)"
    infos = [m for m in caplog.records if m.levelno == logging.INFO and "read as" in m.getMessage()]
    assert len(infos) == 1 and "2022" in infos[0].getMessage()
    # Forecast: the next 24 hourly values, real times ascending, values of the mapped hours.
    assert len(r.forecast) == 24
    assert [t for t, _ in r.forecast] == [HOUR_S + 3600.0 * k for k in range(1, 25)]
    assert [g for _, g in r.forecast] == [trace.at(mapped + 3600.0 * k) for k in range(1, 25)]


def test_trace_feb_29_reads_feb_28() -> None:
    trace = CarbonIntensityTrace.from_region("MISO", periodic=False)
    p = TraceProvider("MISO", year=2022)
    r = p.read(now_s=_epoch("2028-02-29T05:30:00+00:00"))
    assert r.g_per_kwh == trace.at(_epoch("2022-02-28T05:00:00+00:00"))
    assert "2028-02-29T05:00Z read as 2022-02-28T05:00Z" in r.source
    assert len(r.forecast) == 24
    # The year's last hour: the forecast continues at Jan 1 of the same trace year.
    end = p.read(now_s=_epoch("2026-12-31T23:10:00+00:00"))
    assert end.forecast[0][1] == trace.at(_epoch("2022-01-01T00:00:00+00:00"))


def test_trace_without_year_must_cover_now(tmp_path: Path) -> None:
    clock = FakeClock()
    mine = CarbonIntensityTrace([NOW_S - 3600, NOW_S], [100.0, 200.0], name="mine")
    r = TraceProvider(mine, clock=clock).read()
    assert (r.g_per_kwh, r.source, r.at_s) == (200.0, "trace mine", NOW_S)
    daily = CarbonIntensityTrace([0.0, 43_200.0], [50.0, 60.0], periodic=True, name="daily")
    assert TraceProvider(daily, clock=clock).read().g_per_kwh == 60.0  # 20:17 UTC: second half
    old = CarbonIntensityTrace([0.0, 3600.0], [1.0, 2.0], name="old")
    with pytest.raises(ConfigError, match="pass year=1970"):
        TraceProvider(old, clock=clock)
    csv = tmp_path / "grid.csv"
    csv.write_text("timestamp,g_per_kwh\n2022-12-06T19:00:00Z,10\n2022-12-06T20:00:00Z,20\n")
    r = TraceProvider(str(csv), year=2022, clock=clock).read()
    assert r.g_per_kwh == 20.0 and r.source.startswith("trace grid (")
    assert len(r.forecast) == 0  # the CSV ends at 21:00
    with pytest.raises(IntensityUnavailableError, match="outside the trace"):
        TraceProvider(csv, year=2022, clock=clock).read(now_s=_epoch("2026-05-01T00:00:00+00:00"))
    with pytest.raises(ConfigError, match="StaticProvider"):
        TraceProvider("DEU", year=2022)


# ---- Electricity Maps -------------------------------------------------------------------------
def test_electricitymaps_good_answer(stub: Stub) -> None:
    serve_em(stub)
    r = em_provider(stub, forecast=True, clock=FakeClock()).read()
    assert (r.g_per_kwh, r.kind, r.at_s, r.fallback, r.fetched_s) == (312.0, "average", HOUR_S,
                                                                      None, NOW_S)  # fmt: skip
    assert r.source == "electricitymaps DE (lifecycle)"
    assert r.forecast == tuple((HOUR_S + 3600.0 * k, g) for k, g in ((1, 290.0), (2, 280.0),
                                                                     (3, 301.0)))  # fmt: skip
    seen = stub.last(EM_LATEST)
    assert seen.headers["auth-token"] == SECRET and seen.query == {"zone": ["DE"]}
    assert stub.last(EM_FORECAST).headers["auth-token"] == SECRET
    assert stub.calls(EM_FORECAST) == 1


def test_electricitymaps_without_forecast_asks_once(stub: Stub) -> None:
    serve_em(stub)
    assert em_provider(stub).read().forecast == ()
    assert (stub.calls(EM_LATEST), stub.calls(EM_FORECAST)) == (1, 0)


def test_electricitymaps_forecast_failure_keeps_the_value(
    stub: Stub, caplog: pytest.LogCaptureFixture
) -> None:
    serve_em(stub)
    stub.routes[EM_FORECAST] = Answer(503, {"error": f"bad key {SECRET}"})
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        r = em_provider(stub, forecast=True).read()
    assert r.g_per_kwh == 312.0 and r.forecast == ()
    assert "forecast unavailable" in caplog.text and "HTTP 503" in caplog.text
    assert_no_secret(caplog.text)


def test_electricitymaps_key_from_the_environment(
    stub: Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve_em(stub)
    with pytest.raises(ConfigError, match="ELECTRICITYMAPS_API_KEY"):
        ElectricityMapsProvider("DE", base_url=stub.url)
    monkeypatch.setenv("ELECTRICITYMAPS_API_KEY", SECRET)
    ElectricityMapsProvider("DE", base_url=stub.url).read()
    assert stub.last(EM_LATEST).headers["auth-token"] == SECRET


def test_electricitymaps_bad_arguments() -> None:
    with pytest.raises(ConfigError, match=r"zone = '': give a zone such as 'DE'"):
        ElectricityMapsProvider("", token=SECRET)
    with pytest.raises(ConfigError, match="base_url"):
        ElectricityMapsProvider("DE", token=SECRET, base_url="file:///etc/passwd")
    with pytest.raises(ConfigError, match="timeout_s"):
        ElectricityMapsProvider("DE", token=SECRET, timeout_s=0)
    with pytest.raises(ConfigError, match="token") as info:
        ElectricityMapsProvider("DE", token="")
    assert_no_secret(str(info.value))


# ---- WattTime ---------------------------------------------------------------------------------
def test_watttime_good_answer(stub: Stub) -> None:
    serve_wt(stub)
    r = wt_provider(stub, clock=FakeClock()).read()
    assert r.g_per_kwh == pytest.approx(453.59237, abs=1e-9)  # 1000 lbs/MWh by hand
    assert G_PER_LB == 453.59237
    assert (r.kind, r.at_s, r.fallback) == ("marginal", HOUR_S, None)
    assert r.source == "watttime CAISO_NORTH marginal (MOER)"
    assert [t for t, _ in r.forecast] == [HOUR_S + 300, HOUR_S + 600]
    assert [g for _, g in r.forecast] == pytest.approx([900 * 0.45359237, 800 * 0.45359237])
    auth = stub.last(WT_LOGIN).headers["authorization"]
    assert auth.startswith("Basic ")
    assert base64.b64decode(auth.split()[1]).decode() == f"{USER}:{PASSWORD}"
    seen = stub.last(WT_FORECAST)
    assert seen.headers["authorization"] == f"Bearer {WT_TOKEN}"
    assert seen.query == {"region": ["CAISO_NORTH"], "signal_type": ["co2_moer"]}


def test_watttime_reuses_its_token_for_25_minutes(stub: Stub) -> None:
    serve_wt(stub)
    clock = FakeClock()
    p = wt_provider(stub, clock=clock)
    p.read()
    clock.advance(24 * 60)
    p.read()
    assert stub.calls(WT_LOGIN) == 1
    clock.advance(2 * 60)
    p.read()
    assert (stub.calls(WT_LOGIN), stub.calls(WT_FORECAST)) == (2, 3)


def test_watttime_logs_in_again_once_on_401(stub: Stub) -> None:
    answers = iter([Answer(401, {"error": "token expired"}), Answer(body=wt_forecast())])
    serve_wt(stub, lambda seen: next(answers))
    r = wt_provider(stub).read()
    assert r.g_per_kwh == pytest.approx(453.59237)
    assert (stub.calls(WT_LOGIN), stub.calls(WT_FORECAST)) == (2, 2)


def test_watttime_gives_up_after_a_second_401(stub: Stub) -> None:
    serve_wt(stub, Answer(401, {"error": "nope"}))
    with pytest.raises(IntensityUnavailableError, match="HTTP 401") as info:
        wt_provider(stub).read()
    assert (stub.calls(WT_LOGIN), stub.calls(WT_FORECAST)) == (2, 2)
    assert_no_secret(str(info.value))


def test_watttime_login_refused_names_the_variables(stub: Stub) -> None:
    serve_wt(stub)
    stub.routes[WT_LOGIN] = Answer(403, {"error": f"bad password {PASSWORD}"})
    with pytest.raises(IntensityUnavailableError, match="WATTTIME_USER") as info:
        wt_provider(stub).read()
    assert info.value.status == 403
    assert_no_secret(str(info.value))


def test_watttime_refuses_other_units(stub: Stub) -> None:
    serve_wt(stub, Answer(body=wt_forecast(units="kg_co2_per_mwh")))
    with pytest.raises(IntensityUnavailableError, match="kg_co2_per_mwh"):
        wt_provider(stub).read()


def test_watttime_credentials_from_the_environment(
    stub: Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve_wt(stub)
    with pytest.raises(ConfigError, match="WATTTIME_USER"):
        WattTimeProvider("CAISO_NORTH", base_url=stub.url)
    monkeypatch.setenv("WATTTIME_USER", USER)
    with pytest.raises(ConfigError, match="WATTTIME_PASSWORD") as info:
        WattTimeProvider("CAISO_NORTH", base_url=stub.url)
    monkeypatch.setenv("WATTTIME_PASSWORD", PASSWORD)
    WattTimeProvider("CAISO_NORTH", base_url=stub.url).read()
    auth = stub.last(WT_LOGIN).headers["authorization"].split()[1]
    assert base64.b64decode(auth).decode() == f"{USER}:{PASSWORD}"
    assert_no_secret(str(info.value))


# ---- failures, for both HTTP providers --------------------------------------------------------
FAILURES: dict[str, tuple[Callable[[str], Answer], str]] = {
    # name: (answer for the value endpoint, given the provider, and the expected message part)
    "http-500": (lambda p: Answer(500, {"error": "boom; you sent "
                                        + (SECRET if p == "em" else f"{WT_TOKEN} {PASSWORD}")}),
                 r"HTTP 500.*boom"),
    "rate-limited": (lambda p: Answer(429, {"error": "slow down"}, {"Retry-After": "30"}),
                     r"rate limited, HTTP 429.*Retry-After: 30 s"),
    "timeout": (lambda p: Answer(body=em_latest() if p == "em" else wt_forecast(), delay_s=1.0),
                r"timeout.*0.2 s"),
    "bad-json": (lambda p: Answer(body=b'{"carbonIntensity": 3'), "bad JSON"),
    "missing-field": (lambda p: Answer(body={"zone": "DE", "datetime": "2026-12-06T20:00Z"}
                                       if p == "em" else {"meta": wt_forecast()["meta"]}),
                      "missing field '(carbonIntensity|data)'"),
    "nan": (lambda p: Answer(body=em_latest(math.nan) if p == "em" else wt_forecast((math.nan,))),
            r"bad value.*= nan"),
    "negative": (lambda p: Answer(body=em_latest(-5.0) if p == "em" else wt_forecast((-5.0,))),
                 r"bad value.*= -5"),
    "string": (lambda p: Answer(body=em_latest("300") if p == "em" else wt_forecast(("300",))),
               r"bad value.*'300'"),
    "absurd": (lambda p: Answer(body=em_latest(1e9) if p == "em" else wt_forecast((1e9,))),
               r"bad value"),
    "bad-time": (lambda p: Answer(body=em_latest(when="yesterday") if p == "em"
                                  else {**wt_forecast(), "data": [{"point_time": 5, "value": 1}]}),
                 r"bad value.*ISO-8601"),
    "not-an-object": (lambda p: Answer(body=[1, 2]), r"bad answer.*list"),
}  # fmt: skip


@pytest.mark.parametrize("which", ["em", "wt"])
@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_failures_are_clear_and_keep_secrets(
    stub: Stub, caplog: pytest.LogCaptureFixture, which: str, failure: str
) -> None:
    answer, pattern = FAILURES[failure]
    if which == "em":
        serve_em(stub, answer(which))
        p: IntensityProvider = em_provider(stub)
    else:
        serve_wt(stub, answer(which))
        p = wt_provider(stub)
    with caplog.at_level(logging.DEBUG), pytest.raises(IntensityUnavailableError) as info:
        p.read()
    message = str(info.value)
    assert message.startswith("electricitymaps DE: " if which == "em" else "watttime CAISO_NORTH: ")
    assert re.search(pattern, message), message
    assert_no_secret(message, caplog.text, repr(p), repr(info.value))
    if failure == "rate-limited":
        assert info.value.status == 429 and info.value.retry_after_s == 30.0
    if failure == "http-500":
        assert "***" in message  # the echoed key is redacted, not dropped silently


def test_a_secret_echoed_into_a_field_is_redacted(stub: Stub) -> None:
    serve_em(stub, Answer(body=em_latest(value=SECRET)))
    with pytest.raises(IntensityUnavailableError, match=r"carbonIntensity = '\*\*\*'") as info:
        em_provider(stub).read()
    assert_no_secret(str(info.value), info.value.reason)
    assert info.value.__suppress_context__


def test_unreachable_server() -> None:
    p = ElectricityMapsProvider("DE", token=SECRET, base_url="http://127.0.0.1:9", timeout_s=0.2)
    with pytest.raises(
        IntensityUnavailableError, match=r"electricitymaps DE: (unreachable|timeout)"
    ):
        p.read()


def test_redirect_to_another_host_drops_the_key(stub: Stub, other_stub: Stub) -> None:
    serve_em(other_stub)
    stub.routes[EM_LATEST] = Answer(302, b"", {"Location": f"{other_stub.url}{EM_LATEST}?zone=DE"})
    assert em_provider(stub).read().g_per_kwh == 312.0
    assert "auth-token" in stub.last(EM_LATEST).headers
    assert "auth-token" not in other_stub.last(EM_LATEST).headers


def test_reprs_hide_secrets(stub: Stub) -> None:
    serve_wt(stub)
    wt = wt_provider(stub)
    wt.read()  # now holding a token
    em = em_provider(stub)
    cached = CachedProvider(em, fallback=StaticProvider("CISO"))
    assert_no_secret(repr(wt), repr(em), repr(cached), str(vars(cached)))
    assert "DE" in repr(em) and "CAISO_NORTH" in repr(wt)


# ---- caching and fallback ---------------------------------------------------------------------
def test_cache_hit_and_expiry(stub: Stub) -> None:
    serve_em(stub)
    clock = FakeClock()
    p = CachedProvider(em_provider(stub, clock=clock), cache_s=300, clock=clock)
    first = p.read()
    clock.advance(299)
    assert p.read() is first and stub.calls(EM_LATEST) == 1
    clock.advance(2)
    assert p.read().fallback is None and stub.calls(EM_LATEST) == 2
    assert (p.name, p.kind) == ("electricitymaps", "average")


def test_cache_is_thread_safe(stub: Stub) -> None:
    serve_em(stub)
    stub.routes[EM_LATEST] = Answer(body=em_latest(), delay_s=0.05)
    p = CachedProvider(em_provider(stub, timeout_s=2.0))
    out: list[float] = []
    threads = [threading.Thread(target=lambda: out.append(p.read().g_per_kwh)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)
    assert out == [312.0] * 8 and stub.calls(EM_LATEST) == 1


def test_outage_stale_then_static_fallback_then_recovery(
    stub: Stub, caplog: pytest.LogCaptureFixture
) -> None:
    serve_em(stub)
    clock = FakeClock()
    p = CachedProvider(em_provider(stub, clock=clock), cache_s=300, max_age_s=3600,
                       fallback=StaticProvider("CISO", clock=clock), clock=clock)  # fmt: skip
    good = p.read()
    stub.routes[EM_LATEST] = Answer(500, {"error": f"down {SECRET}"})
    with caplog.at_level(logging.INFO, logger=LOGGER):
        clock.advance(312)
        stale = p.read()
        assert stale.g_per_kwh == good.g_per_kwh and stale.at_s == good.at_s
        assert stale.fallback == "stale: last electricitymaps value, 312 s old (HTTP 500)"
        clock.advance(3600)
        readings = [p.read() for _ in range(3)]
        for r in readings:
            assert (r.g_per_kwh, r.kind, r.source) == (261.0, "average", "static CISO")
            assert r.fallback is not None and r.fallback.startswith("static CISO fallback: ")
            assert (
                "electricitymaps unavailable, last good value 3912 s old (HTTP 500)" in r.fallback
            )
        warnings = [m for m in caplog.records if m.levelno == logging.WARNING]
        assert len(warnings) == 1 and "using StaticProvider('CISO'" in warnings[0].getMessage()
        # Recovery: a fresh value, then a second outage warns once more.
        serve_em(stub)
        clock.advance(10)
        back = p.read()
        assert back.fallback is None and back.source.startswith("electricitymaps DE")
        assert "back after" in caplog.text
        stub.routes[EM_LATEST] = Answer(500, {})
        clock.advance(4000)
        assert p.read().source == "static CISO"
    assert len([m for m in caplog.records if m.levelno == logging.WARNING]) == 2
    assert_no_secret(caplog.text)


def test_outage_without_fallback_raises(stub: Stub, caplog: pytest.LogCaptureFixture) -> None:
    stub.routes[EM_LATEST] = Answer(502, {})
    clock = FakeClock()
    p = CachedProvider(em_provider(stub), clock=clock)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(3):
            with pytest.raises(IntensityUnavailableError, match="HTTP 502"):
                p.read()
            clock.advance(1)
    assert len(caplog.records) == 1 and "no good value yet" in caplog.text


def test_retry_after_is_honoured(stub: Stub) -> None:
    serve_em(stub)
    clock = FakeClock()
    p = CachedProvider(em_provider(stub), cache_s=60, clock=clock)
    p.read()
    stub.routes[EM_LATEST] = Answer(429, {}, {"Retry-After": "120"})
    clock.advance(61)
    first = p.read()
    assert first.fallback == "stale: last electricitymaps value, 61 s old (rate limited, HTTP 429)"
    clock.advance(60)
    p.read()
    assert stub.calls(EM_LATEST) == 2  # not asked again before Retry-After
    serve_em(stub)
    clock.advance(61)
    assert p.read().fallback is None and stub.calls(EM_LATEST) == 3


def test_cached_provider_arguments() -> None:
    inner = StaticProvider("CISO")
    with pytest.raises(ConfigError, match="max_age_s"):
        CachedProvider(inner, cache_s=600, max_age_s=60)
    with pytest.raises(ConfigError, match="cache_s"):
        CachedProvider(inner, cache_s=math.nan)
    with pytest.raises(ConfigError, match="provider"):
        CachedProvider("CISO")  # type: ignore[arg-type]


# ---- the factory ------------------------------------------------------------------------------
def test_make_provider(stub: Stub) -> None:
    assert PROVIDERS == ("static", "trace", "electricitymaps", "watttime")
    assert isinstance(make_provider("static", zone="NCSW"), StaticProvider)
    assert isinstance(make_provider("trace", zone="ERCO", year=2022), TraceProvider)
    em = make_provider("electricitymaps", zone="US-CAL-CISO", token=SECRET, base_url=stub.url)
    assert isinstance(em, CachedProvider) and isinstance(em.provider, ElectricityMapsProvider)
    assert isinstance(em.fallback, StaticProvider) and em.fallback.region == "CISO"
    de = make_provider("electricitymaps", zone="DE", token=SECRET)
    assert isinstance(de, CachedProvider) and de.fallback is None
    se = make_provider("electricitymaps", zone="SE-SE2", token=SECRET)
    assert isinstance(se, CachedProvider) and isinstance(se.fallback, StaticProvider)
    assert se.fallback.region == "NCSW"
    de = make_provider("electricitymaps", zone="DE", token=SECRET, fallback_region="DEU")
    assert isinstance(de, CachedProvider) and isinstance(de.fallback, StaticProvider)
    wt = make_provider("WattTime", zone="CAISO_NORTH", username=USER, password=PASSWORD,
                       cache_s=10, max_age_s=20)  # fmt: skip
    assert isinstance(wt, CachedProvider) and wt.kind == "marginal" and wt.cache_s == 10
    assert isinstance(wt.fallback, StaticProvider) and wt.fallback.region == "CISO"
    with pytest.raises(ConfigError, match="static, trace, electricitymaps, watttime"):
        make_provider("carbonara", zone="DE")
    with pytest.raises(ConfigError, match="zone = None"):
        make_provider("static", zone=None)
    with pytest.raises(ConfigError, match="year=2022"):
        make_provider("trace", zone="CISO")
