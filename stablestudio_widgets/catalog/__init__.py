"""The route table (``routes.json``) and the validation that runs before anything is signed.

The data file is the single source of truth for routes, parameters, prices and timings: the
client validates and estimates with it, the sandbox prices and validates with it, and the widgets
build their forms from it (it is sent to the front end as-is).
"""

from __future__ import annotations

import difflib
import json
import math
import os
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from ..errors import InvalidParams

_DATA = "routes.json"


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # "string" | "enum" | "boolean" | "url" | "url_list"
    required: bool = False
    default: Any = None
    values: tuple[str, ...] = ()
    min_length: int = 0
    max_length: int | None = None
    min_items: int = 0
    max_items: int | None = None
    requires: str | None = None
    description: str = ""

    @property
    def is_media(self) -> bool:
        """Takes an uploaded image URL (so a local file or PIL image may be uploaded for it)."""
        return self.type in ("url", "url_list")


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
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def path(self) -> str:
        return f"/api/generate/{self.id}"

    def price_atomic(self, params: dict[str, Any]) -> int:
        """The price this route's pricing model gives for ``params`` (defaults fill the gaps).

        Used by the sandbox to set its price and by the client only as an estimate: the
        amount that is signed always comes from the server's 402.
        """
        factor = 1.0
        for name, table in self.price_factors.items():
            value = params.get(name, self.params[name].default)
            factor *= table.get(_wire(value), 1.0)
        return round(self.price_base * factor)

    def validate(self, params: dict[str, Any], *, uploadable: bool = False) -> dict[str, Any]:
        """Check ``params`` against the table and return them in wire form.

        ``uploadable=True`` lets image fields hold a local path, ``pathlib.Path``, bytes or a
        PIL image (the client uploads those first). Raises :class:`InvalidParams` naming the
        field and the allowed values; never touches the network.
        """
        unknown = [k for k in params if k not in self.params]
        if unknown:
            name = unknown[0]
            hint = difflib.get_close_matches(name, self.params, n=1)
            raise InvalidParams(
                f"{self.id} has no parameter {name!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; it takes {', '.join(self.params)}.",
                route=self.id, field=name, allowed=list(self.params),
            )
        out: dict[str, Any] = {}
        for p in self.params.values():
            if p.name not in params or params[p.name] is None:
                if p.required:
                    raise InvalidParams(f"{self.id} needs {p.name!r} ({p.description or p.type}).",
                                        route=self.id, field=p.name)
                continue
            out[p.name] = _check(self.id, p, params[p.name], uploadable)
        for p in self.params.values():
            if p.requires and p.name in out and p.requires not in out:
                raise InvalidParams(f"{self.id}: {p.name!r} needs {p.requires!r} as well.",
                                    route=self.id, field=p.name)
        return out

    def to_json(self) -> dict[str, Any]:
        """The route as the front end and ``routes()`` see it."""
        return self.raw


def _wire(value: Any) -> Any:
    """Numbers become the strings the service expects ("5", not 5); other values unchanged."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


def _is_uploadable(value: Any) -> bool:
    if isinstance(value, (bytes, bytearray, os.PathLike)):
        return True
    return type(value).__module__.startswith("PIL.")


def _check_url(route: str, p: Param, value: Any, uploadable: bool) -> Any:
    if isinstance(value, str) and value.startswith(("https://", "http://")):
        return value
    if uploadable:
        if isinstance(value, str) or isinstance(value, os.PathLike):
            if not os.path.isfile(value):
                raise InvalidParams(f"{route}: {p.name!r} is neither a URL nor an existing file: "
                                    f"{os.fspath(value)!r}.", route=route, field=p.name)
            return value
        if _is_uploadable(value):
            return value
        raise InvalidParams(f"{route}: {p.name!r} must be an image URL, a file path, bytes or a "
                            f"PIL image, not {type(value).__name__}.", route=route, field=p.name)
    raise InvalidParams(f"{route}: {p.name!r} must be an http(s) URL (upload local files first), "
                        f"got {value!r:.80}.", route=route, field=p.name)


def _check(route: str, p: Param, value: Any, uploadable: bool) -> Any:
    if p.type == "string":
        if not isinstance(value, str) or len(value.strip()) < max(p.min_length, 1 if p.required else 0):
            raise InvalidParams(f"{route}: {p.name!r} must be a non-empty string.", route=route, field=p.name)
        if p.max_length and len(value) > p.max_length:
            raise InvalidParams(f"{route}: {p.name!r} is {len(value)} characters; the limit is "
                                f"{p.max_length}.", route=route, field=p.name)
        return value
    if p.type == "enum":
        wire = _wire(value)
        if wire not in p.values:
            hint = difflib.get_close_matches(str(wire), p.values, n=1)
            raise InvalidParams(
                f"{route}: {p.name}={value!r} is not allowed"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; allowed: {', '.join(p.values)}.",
                route=route, field=p.name, allowed=list(p.values))
        return wire
    if p.type == "boolean":
        if not isinstance(value, bool):
            raise InvalidParams(f"{route}: {p.name!r} must be True or False, got {value!r}.",
                                route=route, field=p.name, allowed=[True, False])
        return value
    if p.type == "url":
        return _check_url(route, p, value, uploadable)
    if p.type == "url_list":
        if isinstance(value, (str, bytes, os.PathLike)) or _is_uploadable(value):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise InvalidParams(f"{route}: {p.name!r} must be a list of images.", route=route, field=p.name)
        if len(value) < max(p.min_items, 1):
            raise InvalidParams(f"{route}: {p.name!r} needs at least {max(p.min_items, 1)} image.",
                                route=route, field=p.name)
        if p.max_items is not None and len(value) > p.max_items:
            raise InvalidParams(f"{route} takes at most {p.max_items} images in {p.name!r}; got "
                                f"{len(value)}.", route=route, field=p.name, allowed=[p.max_items])
        return [_check_url(route, p, v, uploadable) for v in value]
    raise AssertionError(f"unknown parameter type {p.type!r} in {_DATA}")  # a data-file bug


def _param(name: str, d: dict[str, Any]) -> Param:
    return Param(name=name, type=d["type"], required=d.get("required", False), default=d.get("default"),
                 values=tuple(d.get("values", ())), min_length=d.get("min_length", 0),
                 max_length=d.get("max_length"), min_items=d.get("min_items", 0),
                 max_items=d.get("max_items"), requires=d.get("requires"),
                 description=d.get("description", ""))


class Catalog:
    """All routes, looked up by id or by model and intent."""

    def __init__(self, data: dict[str, Any]):
        self.data = data
        self.upload = data["upload"]
        self.routes: dict[str, Route] = {}
        for r in data["routes"]:
            self.routes[r["id"]] = Route(
                id=r["id"], model=r["model"], operation=r["operation"], label=r["label"],
                media=r["media"], description=r.get("description", ""),
                params={k: _param(k, v) for k, v in r["params"].items()},
                price_base=r["price"]["base"], price_factors=r["price"]["factors"],
                price_usd=tuple(r["price_usd"]), typical_s=r["typical_s"],
                typical_range_s=tuple(r["typical_range_s"]) if "typical_range_s" in r else None,
                poll_interval_s=r["poll"]["interval_s"], poll_timeout_s=r["poll"]["timeout_s"], raw=r)

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
                + " ss.routes() lists them all.", field="route", allowed=list(self.routes)) from None

    def _of_model(self, model: str) -> dict[str, Route]:
        found = {r.operation: r for r in self.routes.values() if r.model == model}
        if not found:
            hint = difflib.get_close_matches(model, self.models, n=3)
            raise InvalidParams(
                f"Unknown model {model!r}"
                + (f"; did you mean {' or '.join(map(repr, hint))}?" if hint else "")
                + f". Models: {', '.join(self.models)}.", field="model", allowed=self.models)
        return found

    def generate_route(self, model: str, *, with_image: bool = False) -> Route:
        """The model's text-to-X route, or its image-to-video route when an image is given."""
        ops = self._of_model(model)
        if with_image:
            if "i2v" in ops:
                return ops["i2v"]
            gen = ops.get("generate")
            if gen and "image" in gen.params:
                return gen
            raise InvalidParams(
                f"{model} cannot start from an image"
                + ("; use ss.edit() to edit images." if "edit" in ops else ".")
                + f" Image-to-video models: {', '.join(self.i2v_models)}.", field="image")
        for op in ("generate", "t2v"):
            if op in ops:
                return ops[op]
        raise InvalidParams(f"{model} has no generate route.", field="model")  # pragma: no cover

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
        """Cheapest and dearest price of a route in atomic units, from its pricing model."""
        r = self.route(route_id)
        lo = r.price_base * math.prod(min(t.values()) for t in r.price_factors.values())
        hi = r.price_base * math.prod(max(t.values()) for t in r.price_factors.values())
        return round(lo), round(hi)


@cache
def load() -> Catalog:
    """The packaged route table (parsed once per process)."""
    text = resources.files(__package__).joinpath(_DATA).read_text("utf-8")
    return Catalog(json.loads(text))
