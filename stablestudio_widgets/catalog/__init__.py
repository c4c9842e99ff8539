"""The route table (``routes.json``, or the service's live ``/openapi.json``) and the validation
that runs before anything is signed.

The data is the single source of truth for routes, parameters, prices and timings: the client
validates and estimates with it, the sandbox prices and validates with it, and the widgets build
their forms from it (it is sent to the front end as-is). A client's :class:`Catalog` can be
replaced by a fresher one (``ss.refresh_routes()``); whoever shows it subscribes.
"""

from __future__ import annotations

import difflib
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from ..errors import InvalidParams
from .params import Param, to_wire

_DATA = "routes.json"
#: Default polling timeouts (the service's guidance): images 2 min, videos 10 min ...
MEDIA_TIMEOUT_S = {"image": 120.0, "video": 600.0}
#: ... or this many times the slow end of the route's typical time, if that is longer (a
#: minutes-long image model must not time out at 2 min).
TIMEOUT_FACTOR = 4
REFRESH_HINT = "ss.refresh_routes()"

__all__ = ["Catalog", "Param", "Route", "UnknownParameterWarning", "load", "timeout_for"]


class UnknownParameterWarning(UserWarning):
    """A parameter the route table does not know was sent unchecked (``strict=False``)."""


def timeout_for(media: str, typical_s: float, typical_range_s: tuple[float, float] | None = None) -> float:
    """How long to poll a job before calling it timed out: never less than the media's default."""
    slow = max(typical_range_s or (typical_s, typical_s))
    return max(MEDIA_TIMEOUT_S.get(media, MEDIA_TIMEOUT_S["video"]), TIMEOUT_FACTOR * slow)


@dataclass(frozen=True)
class Route:
    id: str
    model: str
    operation: str
    label: str
    media: str  # "image" | "video"
    description: str
    params: dict[str, Param]
    price_base: int
    price_factors: dict[str, dict[str, float]]
    price_usd: tuple[float, float]
    typical_s: float
    poll_interval_s: float
    poll_timeout_s: float
    typical_range_s: tuple[float, float] | None = None
    #: The price model is ours (bundled); False for a route only the live catalog knows, whose
    #: price may depend on any parameter.
    price_known: bool = True
    #: Where the parameters come from: "bundled" (routes.json) or "live" (the service's /openapi.json).
    source: str = "bundled"
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def path(self) -> str:
        return f"/api/generate/{self.id}"

    @classmethod
    def from_json(cls, r: dict[str, Any], source: str = "bundled") -> Route:
        typical_range = tuple(r["typical_range_s"]) if r.get("typical_range_s") else None
        timeout = r["poll"].get("timeout_s") or timeout_for(r["media"], r["typical_s"], typical_range)
        return cls(id=r["id"], model=r["model"], operation=r["operation"], label=r["label"], media=r["media"],
                   description=r.get("description", ""),
                   params={k: Param.from_json(k, v) for k, v in r["params"].items()},
                   price_base=r["price"]["base"], price_factors=r["price"]["factors"],
                   price_usd=tuple(r["price_usd"]), typical_s=r["typical_s"], typical_range_s=typical_range,
                   poll_interval_s=r["poll"]["interval_s"], poll_timeout_s=timeout,
                   price_known=r.get("price_known", True), source=r.get("source", source), raw=r)

    def price_atomic(self, params: dict[str, Any]) -> int:
        """The price this route's pricing model gives for ``params`` (defaults fill the gaps).

        Used by the sandbox to set its price and by the client only as an estimate: the
        amount that is signed always comes from the server's 402.
        """
        factor = 1.0
        for name, table in self.price_factors.items():
            value = params.get(name, self.params[name].default)
            factor *= table.get(to_wire(value), 1.0)
        return round(self.price_base * factor)

    def price_point(self, wire: dict[str, Any]) -> dict[str, str]:
        """The parameters that set this call's price, defaults filled in: they set how long it takes
        too (a 12 s video costs and takes more than a 4 s one)."""
        return {n: str(to_wire(wire.get(n, self.params[n].default))) for n in sorted(self.price_factors)}

    def validate(self, params: dict[str, Any], *, uploadable: bool = False, strict: bool = True) -> dict[str, Any]:
        """Check ``params`` against the table and return them in wire form.

        ``uploadable=True`` lets image fields hold a local path, ``pathlib.Path``, bytes or a
        PIL image (the client uploads those first). Raises :class:`InvalidParams` naming the
        field and the allowed values; never touches the network. ``strict=False`` sends a
        parameter the table does not know unchecked, with an :class:`UnknownParameterWarning`.
        """
        unknown = [k for k in params if k not in self.params]
        if unknown and strict:
            raise self._unknown(unknown[0])
        out: dict[str, Any] = {}
        for p in self.params.values():
            if p.name not in params or params[p.name] is None:
                if p.required:
                    raise InvalidParams(f"{self.id} needs {p.name!r} ({p.description or p.type}"
                                        + (f": {', '.join(p.values)}" if p.values else "") + ").",
                                        route=self.id, field=p.name, allowed=list(p.values) or None)
                continue
            out[p.name] = p.check(self.id, params[p.name], uploadable)
        for p in self.params.values():
            if p.requires and p.name in out and p.requires not in out:
                raise InvalidParams(f"{self.id}: {p.name!r} needs {p.requires!r} as well.",
                                    route=self.id, field=p.name)
        for name in unknown:
            warnings.warn(f"{self.id}: sending {name!r} unchecked (strict=False); the {self.source} route table "
                          "does not know it and the service may refuse it.", UnknownParameterWarning, stacklevel=3)
            out[name] = params[name]
        return out

    def _unknown(self, name: str) -> InvalidParams:
        hint = difflib.get_close_matches(name, self.params, n=1)
        where = ("the bundled route table" if self.source == "bundled" else "the service's route table")
        fix = (f" If the service added it, {REFRESH_HINT} reads its live route table"
               if self.source == "bundled" else "")
        return InvalidParams(
            f"{self.id} has no parameter {name!r} in {where}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + f"; it takes {', '.join(self.params)}.{fix}; strict=False sends it unchecked.",
            route=self.id, field=name, allowed=list(self.params))

    def to_json(self) -> dict[str, Any]:
        """The route as the front end and ``routes()`` see it."""
        return self.raw


class Catalog:
    """All routes, looked up by id or by model and intent.

    ``source`` says where they come from: "bundled" (routes.json), "live" (the service's
    ``/openapi.json``, just read) or "cache" (read earlier, from disk); ``fetched_at`` when.
    """

    def __init__(self, data: dict[str, Any], *, source: str = "bundled", fetched_at: float | None = None,
                 notes: list[str] | None = None):
        self._listeners: list[Callable[[Catalog, list[str], list[str]], None]] = []
        self._set(data, source, fetched_at, notes or [])

    def _set(self, data: dict[str, Any], source: str, fetched_at: float | None, notes: list[str]) -> None:
        route_source = "bundled" if source == "bundled" else "live"
        routes = {r["id"]: Route.from_json(r, route_source) for r in data["routes"]}
        self.data, self.upload, self.routes = data, data["upload"], routes
        self.source, self.fetched_at, self.notes = source, fetched_at, notes

    @property
    def age_s(self) -> float | None:
        """Seconds since the service's table was read (None for the bundled one)."""
        return None if self.fetched_at is None else max(time.time() - self.fetched_at, 0.0)

    def replace(self, other: Catalog) -> tuple[list[str], list[str]]:
        """Take ``other``'s routes in place (jobs keep the Route they were made with); tell the
        subscribers. Returns the route ids added and removed."""
        before = set(self.routes)
        self._set(other.data, other.source, other.fetched_at, other.notes)
        added = [r for r in self.routes if r not in before]
        removed = sorted(before - set(self.routes))
        for listener in list(self._listeners):
            listener(self, added, removed)
        return added, removed

    def subscribe(self, listener: Callable[[Catalog, list[str], list[str]], None]) -> Callable[[], None]:
        """Call ``listener(catalog, added, removed)`` after every :meth:`replace`; returns an unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def __repr__(self) -> str:
        age = f", {self.age_s / 60:.0f} min old" if self.age_s is not None else ""
        return f"<Catalog {len(self.routes)} routes, {len(self.models)} models, {self.source}{age}>"

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(r.model for r in self.routes.values()))

    def route(self, route_id: str) -> Route:
        try:
            return self.routes[route_id]
        except KeyError:
            hint = difflib.get_close_matches(route_id, self.routes, n=3)
            raise InvalidParams(
                f"Unknown route {route_id!r}"
                + (f"; did you mean {' or '.join(map(repr, hint))}?" if hint else ".")
                + " ss.routes() lists them all" + self._refresh_hint() + ".", field="route",
                allowed=list(self.routes)) from None

    def _refresh_hint(self) -> str:
        if self.source != "bundled":
            return ""
        return f"; if the service added it, {REFRESH_HINT} reads its live route table"

    def _of_model(self, model: str) -> dict[str, Route]:
        found = {r.operation: r for r in self.routes.values() if r.model == model}
        if not found:
            hint = difflib.get_close_matches(model, self.models, n=3)
            raise InvalidParams(
                f"Unknown model {model!r}"
                + (f"; did you mean {' or '.join(map(repr, hint))}?" if hint else "")
                + f". Models: {', '.join(self.models)}{self._refresh_hint()}.", field="model", allowed=self.models)
        return found

    def generate_route(self, model: str, *, with_image: bool = False) -> Route:
        """The model's text-to-X route, its image-to-video route when an image is given, or its one
        other route (e.g. ``arrow-1.1/vectorize``)."""
        ops = self._of_model(model)
        others = [r for op, r in ops.items() if op not in ("generate", "t2v", "edit", "i2v")]
        if with_image:
            found = ops.get("i2v") or next((r for r in (ops.get("generate"), *others) if r and "image" in r.params),
                                           None)
            if found is not None:
                return found
            raise InvalidParams(
                f"{model} cannot start from an image"
                + ("; use ss.edit() to edit images." if "edit" in ops else ".")
                + f" Image-to-video models: {', '.join(self.i2v_models)}.", field="image")
        found = ops.get("generate") or ops.get("t2v") or (others[0] if len(others) == 1 else None)
        if found is None:
            raise InvalidParams(f"{model} has no generate route; its routes: {', '.join(r.id for r in ops.values())}.",
                                field="model", allowed=[r.id for r in ops.values()])
        return found

    def edit_route(self, model: str) -> Route:
        ops = self._of_model(model)
        if "edit" not in ops:
            editable = [m for m in self.models if "edit" in self._of_model(m)]
            raise InvalidParams(f"{model} has no edit route. Models that edit: {', '.join(editable)}.",
                                field="model", allowed=editable)
        return ops["edit"]

    @property
    def i2v_models(self) -> list[str]:
        return [m for m in self.models
                if any(r.operation == "i2v" or (r.media == "video" and "image" in r.params)
                       for r in self._of_model(m).values())]

    def price_range(self, route_id: str) -> tuple[int, int]:
        """Cheapest and dearest price of a route in atomic units, from its pricing model (an
        optional parameter left out counts at factor 1)."""
        r = self.route(route_id)

        def options(name: str, table: dict[str, float]) -> list[float]:
            p = r.params[name]
            return [*table.values(), *([1.0] if not p.required and p.default is None else [])]

        lo = r.price_base * math.prod(min(options(n, t)) for n, t in r.price_factors.items())
        hi = r.price_base * math.prod(max(options(n, t)) for n, t in r.price_factors.items())
        return round(lo), round(hi)


@cache
def _bundled_data() -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath(_DATA).read_text("utf-8"))


@cache
def load() -> Catalog:
    """The packaged route table, shared and never replaced (the sandbox and media use it)."""
    return Catalog(_bundled_data())


def bundled() -> Catalog:
    """A client's own catalog, starting from the packaged table (it may be replaced later)."""
    return Catalog(_bundled_data())
