"""Validated data models shared by every layer: SLOs, sizes, workloads, models, configurations.

All models are frozen pydantic models. Invalid input raises :class:`~greenllm.errors.ConfigError`
(not pydantic's ``ValidationError``) with a message that names the field, the value and the
allowed range, e.g. ``SLO.ttft_s = -1.0: must be > 0 (allowed: 0 < ttft_s <= 3600)``.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import types
import typing
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import annotated_types as at
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from greenllm.errors import ConfigError
from greenllm.units import MAX_QPS, MAX_REQUESTS, MIN_QPS

if TYPE_CHECKING:
    from typing import Self

    import numpy as np
    import numpy.typing as npt

__all__ = [
    "ID_FIELDS",
    "ID_VERSION",
    "SLO",
    "ConfigKind",
    "Configuration",
    "FrozenModel",
    "ModelSpec",
    "RequestSize",
    "RequestSizeDistribution",
    "Workload",
]


def _allowed_range(model: type[BaseModel], field: str) -> str:
    info = model.model_fields.get(field)
    if info is None:
        return ""
    lo = hi = ""
    metadata = list(info.metadata)
    for arg in typing.get_args(info.annotation):  # Optional[Annotated[...]] keeps bounds inside
        for sub in typing.get_args(arg)[1:] if typing.get_origin(arg) is Annotated else ():
            metadata.extend(getattr(sub, "metadata", [sub]))
    for m in metadata:
        if isinstance(m, at.Gt):
            lo = f"{m.gt} < "
        elif isinstance(m, at.Ge):
            lo = f"{m.ge} <= "
        elif isinstance(m, at.Lt):
            hi = f" < {m.lt}"
        elif isinstance(m, at.Le):
            hi = f" <= {m.le}"
    return f" (allowed: {lo}{field}{hi})" if lo or hi else ""


def _describe(err: ValidationError, model: type[BaseModel]) -> str:
    parts = []
    for e in err.errors(include_url=False):
        loc = [str(x) for x in e["loc"] if x not in ("fixed", "distribution")]
        owner: type[BaseModel] = model
        for name, nxt in itertools.pairwise(loc):  # find the class owning the field
            info = owner.model_fields.get(name)
            owner = _nested_model(info.annotation if info else None, nxt) or owner
        where = ".".join([model.__name__, *loc]) if loc else model.__name__
        msg = e["msg"].removeprefix("Value error, ")
        got = f" = {e['input']!r}" if loc and not isinstance(e["input"], dict) else ""
        rng = _allowed_range(owner, loc[-1]) if loc else ""
        parts.append(f"{where}{got}: {msg}{rng}")
    return "; ".join(parts)


def _nested_model(annotation: object, field: str) -> type[BaseModel] | None:
    """The pydantic model in ``annotation`` (through Optional/Union/Annotated) owning ``field``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation if field in annotation.model_fields else None
    for arg in typing.get_args(annotation):
        found = _nested_model(arg, field)
        if found is not None:
            return found
    return None


def _is_number_type(annotation: object) -> bool:
    """Whether ``annotation`` is int or float, through Annotated and Optional/Union (every
    member other than None numeric)."""
    if annotation in (int, float):
        return True
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Annotated:
        return _is_number_type(args[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        return bool(members) and all(_is_number_type(a) for a in members)
    return False


@functools.cache
def _number_fields(model: type[BaseModel]) -> frozenset[str]:
    """The fields of ``model`` annotated int or float (see :func:`_is_number_type`)."""
    return frozenset(n for n, f in model.model_fields.items() if _is_number_type(f.annotation))


class FrozenModel(BaseModel):
    """Frozen pydantic base whose validation failures are :class:`ConfigError`.

    Numeric fields (int or float, also inside Optional/Annotated) take numbers only: a str,
    bytes or bool is refused (pydantic's lax mode would turn ``"5"`` into ``5.0`` and ``True``
    into ``1``); other lax conversions stay (numpy numbers, an integral ``5.0`` for an int).
    JSON is parsed as JSON, so its numbers are numbers; CSV import converts its cells first.
    No float field holds NaN or an infinity.
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False
    )

    @classmethod
    def number_fields(cls) -> frozenset[str]:
        """Names of the fields that take numbers only (annotated int or float)."""
        return _number_fields(cls)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_only(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, (str, bytes, bytearray, bool)) and info.field_name in _number_fields(
            cls
        ):
            raise ValueError(f"must be a number (int or float), not {type(value).__name__}")
        return value

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise ConfigError(_describe(err, type(self))) from err

    # Pydantic calls a custom __init__ for every nested model it validates (~3x slower reads,
    # doubled error prefixes). Errors need translating at the top level only, so mark this
    # __init__ as pydantic's own for nested validation.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as err:
            raise ConfigError(_describe(err, cls)) from err

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> Self:
        try:
            return super().model_validate_json(json_data, **kwargs)
        except ValidationError as err:
            raise ConfigError(_describe(err, cls)) from err


PositiveSeconds = Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)]


class SLO(FrozenModel):
    """Latency service-level objective of one application (paper, Table 2)."""

    ttft_s: PositiveSeconds = Field(description="time to first token target, seconds")
    tpot_s: Annotated[float, Field(gt=0, le=60, allow_inf_nan=False)] = Field(
        description="time per output token target, seconds"
    )


class RequestSize(FrozenModel):
    """A fixed request size: prompt tokens in, generated tokens out."""

    input_tokens: Annotated[int, Field(ge=1, le=1_048_576)]
    output_tokens: Annotated[int, Field(ge=1, le=1_048_576)]

    def __str__(self) -> str:
        return f"({self.input_tokens},{self.output_tokens})"


class RequestSizeDistribution(FrozenModel):
    """Request sizes given by their P25/P50/P75 percentiles (paper, Table 2).

    Sampling draws each of input and output tokens independently from a quantile function that
    is piecewise linear in log tokens through the three percentiles and extended linearly beyond
    them (a log-logistic-like tail), rounded and clipped to ``[1, max_tokens]``.
    """

    p25: RequestSize
    p50: RequestSize
    p75: RequestSize
    max_tokens: Annotated[int, Field(ge=1, le=1_048_576)] = 32_768

    @model_validator(mode="after")
    def _monotone(self) -> RequestSizeDistribution:
        for attr in ("input_tokens", "output_tokens"):
            a, b, c = (getattr(p, attr) for p in (self.p25, self.p50, self.p75))
            if not a <= b <= c:
                raise ValueError(f"percentiles of {attr} must not decrease: got {a}, {b}, {c}")
        return self

    def quantile(self, q: npt.ArrayLike, attr: str = "input_tokens") -> npt.NDArray[np.int64]:
        """Token count at quantile(s) ``q`` in [0, 1] of ``attr`` (input or output tokens).

        ConfigError for a ``q`` that is not a number (or array of numbers) in [0, 1], NaN
        included, and for an ``attr`` other than ``"input_tokens"``/``"output_tokens"``."""
        import numpy as np

        if attr not in ("input_tokens", "output_tokens"):
            raise ConfigError(
                f"quantile: attr = {attr!r:.100}: must be 'input_tokens' or 'output_tokens'"
            )
        need = "a number (or array of numbers) with 0 <= q <= 1"
        if isinstance(q, (bool, str, bytes, np.bool_)) or q is None:
            raise ConfigError(f"quantile: q = {q!r:.100}: must be {need}")
        try:
            raw = np.asarray(q)
            if raw.dtype.kind not in "iuf":
                raise TypeError(f"dtype {raw.dtype}")
            qq = raw.astype(float)
        except (TypeError, ValueError, OverflowError) as err:
            raise ConfigError(f"quantile: q = {q!r:.100}: must be {need}") from err
        bad = ~((qq >= 0.0) & (qq <= 1.0))
        if bad.any():
            first = float(qq[bad].flat[0]) if qq.ndim else float(qq)
            raise ConfigError(f"quantile: q = {first!r}: must be {need}")
        logs = np.log([getattr(p, attr) for p in (self.p25, self.p50, self.p75)])
        qs = np.array([0.25, 0.5, 0.75])
        lo_slope = (logs[1] - logs[0]) / 0.25
        hi_slope = (logs[2] - logs[1]) / 0.25
        val = np.interp(qq, qs, logs)
        val = np.where(qq < 0.25, logs[0] - lo_slope * (0.25 - qq), val)
        val = np.where(qq > 0.75, logs[2] + hi_slope * (qq - 0.75), val)
        return np.clip(np.rint(np.exp(val)), 1, self.max_tokens).astype(np.int64)

    def sample(self, n: int, seed: int = 0) -> list[RequestSize]:
        """``n`` request sizes drawn with a fixed ``seed`` (``0 <= n <= MAX_REQUESTS``,
        ``seed`` an integer >= 0)."""
        import numpy as np

        ok_n = isinstance(n, (int, np.integer)) and not isinstance(n, bool)
        if not (ok_n and 0 <= n <= MAX_REQUESTS):
            raise ConfigError(f"sample: n = {n!r:.60}: must be an integer in [0, {MAX_REQUESTS}]")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"sample: seed = {seed!r:.60}: must be an integer >= 0")
        rng = np.random.default_rng(seed)
        ins = self.quantile(rng.uniform(0.005, 0.995, n), "input_tokens")
        outs = self.quantile(rng.uniform(0.005, 0.995, n), "output_tokens")
        return [
            RequestSize(input_tokens=int(i), output_tokens=int(o))
            for i, o in zip(ins, outs, strict=True)
        ]


def _size_kind(v: object) -> str:
    if isinstance(v, dict):
        return "distribution" if "p50" in v else "fixed"
    return "distribution" if isinstance(v, RequestSizeDistribution) else "fixed"


class Workload(FrozenModel):
    """What is served: an application at a request size (or distribution) and a query rate."""

    application: Annotated[
        str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    ]
    request_size: Annotated[
        Annotated[RequestSize, Tag("fixed")]
        | Annotated[RequestSizeDistribution, Tag("distribution")],
        Discriminator(_size_kind),
    ]
    qps: Annotated[float, Field(ge=MIN_QPS, le=MAX_QPS, allow_inf_nan=False)]
    slo: SLO | None = None

    @field_validator("application", mode="before")
    @classmethod
    def _lower(cls, v: object) -> object:
        return v.strip().lower() if isinstance(v, str) else v


class ModelSpec(FrozenModel):
    """A Llama-shaped decoder-only transformer (enough to count FLOPs, bytes and KV cache)."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    n_layers: Annotated[int, Field(ge=1, le=1024)]
    hidden_size: Annotated[int, Field(ge=1, le=262_144)]
    n_heads: Annotated[int, Field(ge=1, le=1024)]
    n_kv_heads: Annotated[int, Field(ge=1, le=1024)]
    intermediate_size: Annotated[int, Field(ge=1, le=1_048_576)]
    vocab_size: Annotated[int, Field(ge=2, le=4_194_304)]
    bytes_per_param: Annotated[int, Field(ge=1, le=8)] = 2
    tie_embeddings: bool = False

    @model_validator(mode="after")
    def _shape(self) -> ModelSpec:
        if self.hidden_size % self.n_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by n_heads ({self.n_heads})"
            )
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.n_kv_heads})"
            )
        return self

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.n_heads

    @property
    def n_params(self) -> int:
        """Parameter count: attention (q, k, v, o), gated MLP, two norms per layer, embeddings."""
        h, kv = self.hidden_size, self.n_kv_heads * self.head_dim
        per_layer = h * h * 2 + h * kv * 2 + 3 * h * self.intermediate_size + 2 * h
        embed = self.vocab_size * h * (1 if self.tie_embeddings else 2)
        return self.n_layers * per_layer + embed + h

    @property
    def weight_bytes(self) -> int:
        return self.n_params * self.bytes_per_param

    def kv_cache_bytes(self, tokens: int) -> int:
        """KV cache bytes: 2 x layers x kv_heads x head_dim x bytes/element x ``tokens``."""
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * self.bytes_per_param * tokens


class ConfigKind(str, Enum):  # noqa: UP042 (str() and format() stay as they were: ids hash them)
    """The four serving configurations of the paper (Section 7.1)."""

    STANDALONE = "standalone"
    SPEC_DECODE = "spec_decode"
    DPD = "dpd"
    DSD = "dsd"

    @classmethod
    def _missing_(cls, value: object) -> ConfigKind:
        """Aliases (``"SpecDecode"``, ``"spec-decode"``, ...); ConfigError naming the kinds."""
        if isinstance(value, str) and len(value) <= 64:
            key = value.strip().lower().replace("-", "").replace("_", "").replace(" ", "")
            if key in _KIND_ALIASES:
                return _KIND_ALIASES[key]
        kinds = ", ".join(repr(k.value) for k in cls)
        raise ConfigError(f"configuration kind {value!r:.80} is unknown: the kinds are {kinds}")

    @property
    def label(self) -> str:
        return _KIND_LABELS[self]


_KIND_ALIASES = {
    "standalone": ConfigKind.STANDALONE,
    "specdecode": ConfigKind.SPEC_DECODE,
    "spec": ConfigKind.SPEC_DECODE,
    "dpd": ConfigKind.DPD,
    "disgprefdecode": ConfigKind.DPD,
    "dsd": ConfigKind.DSD,
    "disgspecdecode": ConfigKind.DSD,
}
_KIND_LABELS = {
    ConfigKind.STANDALONE: "Standalone",
    ConfigKind.SPEC_DECODE: "SpecDecode",
    ConfigKind.DPD: "DPD",
    ConfigKind.DSD: "DSD",
}


#: The fields that identify a :class:`Configuration`: :attr:`Configuration.id` hashes these
#: and nothing else (as vLLM's ``compute_hash`` lists its factors), so a new field, even with a
#: default, changes no id. A field that identifies a configuration must be listed here, with
#: :data:`ID_VERSION` bumped and a profile-store migration that re-keys stored cells
#: (``docs/profile-store.md``).
ID_FIELDS: tuple[str, ...] = (
    "kind",
    "new_gpu",
    "old_gpu",
    "target_model",
    "draft_model",
    "link_gbps",
    "num_speculative_tokens",
)
#: Version of the id rule, hashed with the fields: bump it when :data:`ID_FIELDS` or the
#: normalisation in :attr:`Configuration.id` change.
ID_VERSION = 1


def _id_value(value: Any) -> Any:
    """A field value as the id hashes it: enums by value, floats to 9 significant digits and
    integral numbers as ints (``16.0`` and ``16`` hash alike), None as JSON null."""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        number = float(f"{float(value):.9g}")
        return int(number) if number.is_integer() else number
    raise TypeError(f"Configuration id field of type {type(value).__name__} has no id form")


@functools.lru_cache(maxsize=4096)
def _hash_id(values: tuple[Any, ...]) -> str:
    """The id of the configuration whose :data:`ID_FIELDS` hold ``values`` (kind first)."""
    payload: dict[str, Any] = {"id_version": ID_VERSION}
    payload.update(zip(ID_FIELDS, map(_id_value, values), strict=True))
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return f"{payload['kind']}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


class Configuration(FrozenModel):
    """A serving configuration: an optimiser (kind) and its GPU and model placement.

    * ``standalone``: target model on ``new_gpu``.
    * ``spec_decode``: target and ``draft_model`` both on ``new_gpu``.
    * ``dpd``: prefill on ``new_gpu``, decode on ``old_gpu``, KV cache over a ``link_gbps`` link.
    * ``dsd``: target + verifier on ``new_gpu``, ``draft_model`` on ``old_gpu``, over the link.

    GPU and model names are checked against the catalogs when a backend or the carbon model
    resolves them (:func:`greenllm.carbon.get_gpu`), not here.
    """

    kind: ConfigKind
    new_gpu: Annotated[str, Field(min_length=1, max_length=64)] = "A100"
    old_gpu: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    target_model: Annotated[str, Field(min_length=1, max_length=256)] = "llama-2-7b"
    draft_model: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    link_gbps: Annotated[float, Field(gt=0, le=3200, allow_inf_nan=False)] | None = None
    num_speculative_tokens: Annotated[int, Field(ge=1, le=32)] = 4

    _needs: ClassVar[dict[ConfigKind, tuple[bool, bool, bool]]] = {
        # kind: (old_gpu, draft_model, link)
        ConfigKind.STANDALONE: (False, False, False),
        ConfigKind.SPEC_DECODE: (False, True, False),
        ConfigKind.DPD: (True, False, True),
        ConfigKind.DSD: (True, True, True),
    }

    @model_validator(mode="before")
    @classmethod
    def _default_link(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("link_gbps") is None:
            kind = data.get("kind")
            try:
                kind = ConfigKind(kind)
            except ValueError:
                return data
            if cls._needs[kind][2]:
                data = {**data, "link_gbps": 16.0}  # the paper's GCP default (Section 7.1)
        return data

    @model_validator(mode="after")
    def _placement(self) -> Configuration:
        old, draft, link = self._needs[self.kind]
        for field, needed in (("old_gpu", old), ("draft_model", draft), ("link_gbps", link)):
            have = getattr(self, field) is not None
            if needed and not have:
                raise ValueError(f"{self.kind.label} needs {field}")
            if have and not needed:
                raise ValueError(
                    f"{self.kind.label} takes no {field} (got {getattr(self, field)!r})"
                )
        return self

    @property
    def label(self) -> str:
        """Human-readable name, e.g. ``DSD A100+T4 llama-1b``."""
        gpus = self.new_gpu + (f"+{self.old_gpu}" if self.old_gpu else "")
        draft = f" {self.draft_model}" if self.draft_model else ""
        link = f" @{self.link_gbps:g}Gbps" if self.link_gbps is not None else ""
        return f"{self.kind.label} {gpus}{draft}{link}"

    @property
    def gpus(self) -> tuple[str, ...]:
        """GPUs this configuration occupies (new first)."""
        return (self.new_gpu,) if self.old_gpu is None else (self.new_gpu, self.old_gpu)

    @property
    def id(self) -> str:
        """Stable identifier, the profile store's key of this configuration.

        ``<kind>-<12 hex digits>``: the SHA-256 of the canonical JSON (sorted keys, no spaces)
        of ``{"id_version": ID_VERSION, field: value for field in ID_FIELDS}``, values
        normalised so that equal configurations give equal ids (floats to 9 significant
        digits, integral numbers as ints, None as null, kinds by value). Only the fields in
        :data:`ID_FIELDS` count: adding a field to the model changes no id. Changing the rule
        needs a new :data:`ID_VERSION` and a store migration that re-keys stored cells.
        """
        return _hash_id(tuple(getattr(self, f) for f in ID_FIELDS))
