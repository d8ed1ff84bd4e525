"""The desired state of the fleet: which models run where, how, and how many (FLT-001..FLT-006).

One shape for the file orchestratord reads (TOML or JSON) and the body of `PUT /v2/fleet`
(JSON); `parse_fleet` is the one place either becomes a `FleetSpec`, and it reports every
problem at once as InvalidParams (400 over HTTP, one line on a CLI). Pure: the file is read by
`load_fleet_file`, nothing else here touches the disk.

    [scaling]                     # optional; these are the defaults
    target_ttft_ms = 2000         # scale up when the token backlog would take longer to start
    cooldown_s = 120              # no scale-down sooner than this after the last change

    [models.smollm2]              # the id: the pool catalog id the workers register with
    source = "hf:HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:q8_0"   # or "file:/abs/x.gguf",
                                  # or "catalog:ID" (already in each pool's catalog)
    pools = ["gpu-a", "gpu-b"]    # where it may run, in order of preference
    backend = "cpu"
    slots = 2
    ctx = 4096                    # 0: the model's own context length
    min_replicas = 1
    max_replicas = 2
    warm_replicas = 0             # idle replicas kept above what the load asks for
    idle_ttl_s = 0                # replicas that served nothing this long go, down to
                                  # min_replicas (0: never); with min_replicas = 0 the model
                                  # runs on demand: its tasks queue and bring a replica up
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict

from shared.names import CATALOG_ID, POOL_NAME
from shared.params import FieldReader
from shared.problem import FieldError, InvalidParams

SourceKind = Literal["hf", "file", "catalog"]
BACKENDS = ("cpu", "cuda", "metal", "vulkan", "rocm")
MAX_MODELS = 256
MAX_REPLICAS = 64
MAX_IDLE_TTL_S = 7 * 86_400
_MODEL_FIELDS = {
    "source",
    "pools",
    "backend",
    "slots",
    "ctx",
    "min_replicas",
    "max_replicas",
    "warm_replicas",
    "idle_ttl_s",
}
_SCALING_FIELDS = {"target_ttft_ms", "cooldown_s"}
_TTFT_DEFAULT_MS = 2000
_COOLDOWN_DEFAULT_S = 120


@dataclass(frozen=True, slots=True)
class Source:
    """Where a pool gets the model: a Hugging Face reference, a file on the pool host, or
    its catalog (already imported there)."""

    kind: SourceKind
    value: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    id: str
    source: Source
    pools: tuple[str, ...]
    backend: str = "cpu"
    slots: int = 1
    ctx: int = 0
    min_replicas: int = 1
    max_replicas: int = 1
    warm_replicas: int = 0
    idle_ttl_s: int = 0  # 0: replicas are never stopped for being idle (FLT-061)


@dataclass(frozen=True, slots=True)
class Scaling:
    target_ttft_ms: int = _TTFT_DEFAULT_MS
    cooldown_s: int = _COOLDOWN_DEFAULT_S


@dataclass(frozen=True, slots=True)
class FleetSpec:
    models: tuple[ModelSpec, ...] = ()
    scaling: Scaling = Scaling()

    def model(self, model_id: str) -> ModelSpec | None:
        return next((m for m in self.models if m.id == model_id), None)

    def to_json(self) -> FleetJson:
        """The shape `GET /v2/fleet` returns and `PUT /v2/fleet` accepts (round-trips)."""
        models: dict[str, ModelJson] = {}
        for m in self.models:
            models[m.id] = {
                "source": str(m.source),
                "pools": list(m.pools),
                "backend": m.backend,
                "slots": m.slots,
                "ctx": m.ctx,
                "min_replicas": m.min_replicas,
                "max_replicas": m.max_replicas,
                "warm_replicas": m.warm_replicas,
                "idle_ttl_s": m.idle_ttl_s,
            }
        scaling = asdict(self.scaling)
        return {"models": models, "scaling": {k: int(v) for k, v in scaling.items()}}  # type: ignore[typeddict-item]


class ModelJson(TypedDict):
    source: str
    pools: list[str]
    backend: str
    slots: int
    ctx: int
    min_replicas: int
    max_replicas: int
    warm_replicas: int
    idle_ttl_s: int


class ScalingJson(TypedDict):
    target_ttft_ms: int
    cooldown_s: int


class FleetJson(TypedDict):
    models: dict[str, ModelJson]
    scaling: ScalingJson


def parse_source(text: str) -> Source:
    """`hf:REPO[@REV]:FILE|QUANT`, `file:/ABSOLUTE.gguf` or `catalog:ID`; ValueError otherwise."""
    kind, sep, value = text.partition(":")
    if not sep or not value:
        raise ValueError("must be hf:REPO:FILE.gguf, hf:REPO:QUANT, file:/PATH.gguf or catalog:ID")
    if kind == "hf":
        repo, sep, selector = value.partition(":")
        if not sep or not repo or not selector or ".." in repo:
            raise ValueError("a Hugging Face source is hf:REPO[@REVISION]:FILE.gguf or :QUANT")
        return Source("hf", value)
    if kind == "file":
        if not value.startswith("/") or not value.lower().endswith(".gguf"):
            raise ValueError("a file source is an absolute path to a .gguf file on the pool host")
        return Source("file", value)
    if kind == "catalog":
        if not CATALOG_ID.matches(value):
            raise ValueError(f"a catalog source names a catalog id: {CATALOG_ID.rule}")
        return Source("catalog", value)
    raise ValueError(f"unknown source kind {kind!r}: use hf:, file: or catalog:")


def _model(model_id: str, body: object, errors: list[FieldError]) -> ModelSpec | None:
    where = f"models.{model_id}"
    if not CATALOG_ID.matches(model_id):
        errors.append({"field": where, "message": f"a model id is a catalog id: {CATALOG_ID.rule}"})
    if not isinstance(body, Mapping):
        errors.append({"field": where, "message": "must be an object"})
        return None
    r = FieldReader(body, _MODEL_FIELDS)
    source_text = r.string("source", required=True, max_len=1024)
    source = None
    if source_text is not None:
        try:
            source = parse_source(source_text)
        except ValueError as e:
            r.fail("source", str(e))
    pools_value = body.get("pools")
    pools: tuple[str, ...] = ()
    if (
        not isinstance(pools_value, list)
        or not pools_value
        or not all(isinstance(p, str) and POOL_NAME.matches(p) for p in pools_value)
    ):
        r.fail("pools", "must be a non-empty list of pool names")
    elif len(set(pools_value)) != len(pools_value):
        r.fail("pools", "lists a pool twice")
    else:
        pools = tuple(pools_value)
    backend = r.choice("backend", "cpu", BACKENDS)
    slots = r.integer("slots", 1, 1, 256) or 1
    ctx = r.integer("ctx", 0, 0, 1 << 20) or 0
    lo = r.integer("min_replicas", 1, 0, MAX_REPLICAS)
    hi = r.integer("max_replicas", max(lo or 1, 1), 1, MAX_REPLICAS)
    warm = r.integer("warm_replicas", 0, 0, MAX_REPLICAS) or 0
    idle_ttl = r.integer("idle_ttl_s", 0, 0, MAX_IDLE_TTL_S) or 0
    lo, hi = lo or 0, hi or 1
    if lo > hi:
        r.fail("min_replicas", f"must not exceed max_replicas ({hi})")
    errors.extend({"field": f"{where}.{e['field']}", "message": e["message"]} for e in r.errors)
    if r.errors or source is None:
        return None
    return ModelSpec(model_id, source, pools, backend, slots, ctx, lo, hi, warm, idle_ttl)


def parse_fleet(body: object) -> FleetSpec:
    """Validate a desired state (the decoded file or request body); InvalidParams lists all."""
    top = FieldReader(body, {"models", "scaling"})
    errors: list[FieldError] = list(top.errors)
    assert isinstance(body, Mapping)
    scaling = Scaling()
    raw_scaling = body.get("scaling", {})
    if not isinstance(raw_scaling, Mapping):
        errors.append({"field": "scaling", "message": "must be an object"})
    else:
        s = FieldReader(raw_scaling, _SCALING_FIELDS)
        ttft = s.integer("target_ttft_ms", _TTFT_DEFAULT_MS, 1, 3_600_000)
        cooldown = s.integer("cooldown_s", _COOLDOWN_DEFAULT_S, 0, 86_400)
        errors.extend({"field": f"scaling.{e['field']}", "message": e["message"]} for e in s.errors)
        scaling = Scaling(ttft or _TTFT_DEFAULT_MS, cooldown or 0)
    raw_models: Any = body.get("models", {})
    models: list[ModelSpec] = []
    if not isinstance(raw_models, Mapping):
        errors.append({"field": "models", "message": "must be an object keyed by model id"})
    elif len(raw_models) > MAX_MODELS:
        errors.append({"field": "models", "message": f"at most {MAX_MODELS} models"})
    else:
        for model_id in sorted(raw_models):
            spec = _model(str(model_id), raw_models[model_id], errors)
            if spec is not None:
                models.append(spec)
    if errors:
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise InvalidParams(f"invalid fleet: {summary}", errors=errors)
    return FleetSpec(tuple(models), scaling)


def load_fleet_file(path: Path) -> FleetSpec:
    """Read and validate a fleet file: TOML, or JSON when it ends in .json."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidParams(f"cannot read the fleet file {path}: {e}") from None
    try:
        body = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise InvalidParams(f"fleet file {path} does not parse: {e}") from None
    return parse_fleet(body)
