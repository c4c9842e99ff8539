"""Route parameters as JSON Schema and back.

The service's router publishes each route's body as the JSON Schema its validator converts to
(``zod`` in input mode: ``type``, ``enum``, ``default``, ``description``, ``minLength`` …, defaulted
fields not ``required``). :func:`object_schema` writes ours that way (the sandbox serves it);
:func:`params_from_schema` reads one back, as untrusted input: unknown keywords are ignored, and a
shape we cannot turn into a form and a check raises :class:`NotUnderstood` (the caller then keeps
the bundled route, or skips the route).
"""

from __future__ import annotations

import re
from typing import Any

from .params import Param

MAX_PARAMS = 64
MAX_ENUM = 256
MAX_TEXT = 300
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
#: Parameters that carry an image URL, by name: image, images, lastFrame, input_reference, referenceImages …
_MEDIA_NAME = re.compile(r"(?i)(image|frame|reference)s?(_?urls?)?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class NotUnderstood(ValueError):
    """A schema (or document) this client cannot turn into parameters it can check."""


# --- ours → JSON Schema -----------------------------------------------------------------------------
def param_schema(p: Param) -> dict[str, Any]:
    """One parameter as the router's OpenAPI shows it."""
    s: dict[str, Any]
    if p.type == "enum":
        s = {"type": "string", "enum": list(p.values)}
    elif p.type in ("boolean", "integer", "number"):
        s = {"type": p.type}
        s.update({k: v for k, v in (("minimum", p.minimum), ("maximum", p.maximum)) if v is not None})
    elif p.type == "url_list":
        s = {"type": "array", "items": {"type": "string", "format": "uri"}}
        s.update({k: v for k, v in (("minItems", p.min_items or None), ("maxItems", p.max_items)) if v is not None})
    else:
        s = {"type": "string", **({"format": "uri"} if p.type == "url" else {})}
        s.update({k: v for k, v in (("minLength", p.min_length or None), ("maxLength", p.max_length)) if v is not None})
    if p.default is not None:
        s["default"] = p.default
    if p.description:
        s["description"] = p.description
    return s


def object_schema(params: dict[str, Param], *, strict: bool = False) -> dict[str, Any]:
    """A route's body: defaulted fields are not required (input mode)."""
    out: dict[str, Any] = {"type": "object", "properties": {n: param_schema(p) for n, p in params.items()},
                           "required": [n for n, p in params.items() if p.required]}
    if strict:
        out["additionalProperties"] = False
    return out


# --- JSON Schema (untrusted) → ours ---------------------------------------------------------------
def text(value: Any, limit: int = MAX_TEXT) -> str:
    """A server-supplied string made safe to show: no control or bidi characters, bounded."""
    return _CONTROL.sub(" ", value)[:limit].strip() if isinstance(value, str) else ""


def params_from_schema(schema: Any, known: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Parameters (``routes.json`` form) of an object schema; ``known`` (the bundled route's
    parameters) fills what a schema cannot say: which strings take images, ``requires``."""
    if not isinstance(schema, dict) or _unwrap_type(schema) != "object" \
            or not isinstance(schema.get("properties"), dict):
        raise NotUnderstood("the request body is not a JSON object schema with properties")
    props = schema["properties"]
    if len(props) > MAX_PARAMS:
        raise NotUnderstood(f"{len(props)} parameters (more than {MAX_PARAMS})")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise NotUnderstood("'required' is not a list of names")
    out = {}
    for name, spec in props.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise NotUnderstood(f"parameter name {str(name)[:40]!r} is not a plain identifier")
        out[name] = _param(name, spec, name in required, (known or {}).get(name))
    return out


def _unwrap_type(spec: dict[str, Any]) -> str | None:
    """``type`` as one name: ``["string", "null"]`` (an optional, nullable field) reads as "string"."""
    t = spec.get("type")
    if isinstance(t, list):
        t = [x for x in t if x != "null"]
        t = t[0] if len(t) == 1 else None
    return t if isinstance(t, str) else None


def _nullable(spec: Any) -> Any:
    """``anyOf: [X, {type: null}]`` (zod's ``.nullable()``) reads as X; anything else stays as is."""
    options = spec.get("anyOf") if isinstance(spec, dict) else None
    if isinstance(options, list):
        real = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
        if len(real) == 1 and isinstance(real[0], dict):
            return {**{k: v for k, v in spec.items() if k != "anyOf"}, **real[0]}
    return spec


def _param(name: str, spec: Any, required: bool, known: dict[str, Any] | None) -> dict[str, Any]:
    spec = _nullable(spec)
    if not isinstance(spec, dict):
        raise NotUnderstood(f"{name}: not a schema")
    for composite in ("anyOf", "oneOf", "allOf", "$ref", "not", "if"):
        if composite in spec:
            raise NotUnderstood(f"{name}: uses {composite}")
    kind = _unwrap_type(spec)
    media_name = bool(_MEDIA_NAME.search(name)) or (known or {}).get("type") in ("url", "url_list")
    out: dict[str, Any]
    if "enum" in spec:
        values = spec["enum"]
        if not isinstance(values, list) or not values or len(values) > MAX_ENUM \
                or not all(isinstance(v, str) and v and len(v) <= 100 and text(v) == v for v in values):
            raise NotUnderstood(f"{name}: an enum of anything but short plain strings")
        out = {"type": "enum", "values": values}
    elif kind == "string":
        out = {"type": "url"} if media_name else {"type": "string", **_bounds(spec, "minLength", "maxLength",
                                                                                     "min_length", "max_length")}
    elif kind == "boolean":
        out = {"type": "boolean"}
    elif kind in ("integer", "number"):
        out = {"type": kind, **_bounds(spec, "minimum", "maximum", "minimum", "maximum", numbers=True)}
    elif kind == "array" and media_name and isinstance(spec.get("items"), dict) \
            and _unwrap_type(spec["items"]) == "string":
        out = {"type": "url_list", **_bounds(spec, "minItems", "maxItems", "min_items", "max_items")}
    else:
        raise NotUnderstood(f"{name}: type {kind or spec.get('type')!r} is not one this client can check")
    if required:
        out["required"] = True
    default = spec.get("default", (known or {}).get("default"))
    if default is not None and _fits(out, default):
        out["default"] = default
    description = text(spec.get("description")) or (known or {}).get("description")
    if description:
        out["description"] = description
    if known and known.get("requires") and known.get("type") == out["type"]:
        out["requires"] = known["requires"]
    return out


def _bounds(spec: dict[str, Any], lo: str, hi: str, lo_as: str, hi_as: str, *, numbers: bool = False) -> dict[str, Any]:
    out = {}
    for key, as_ in ((lo, lo_as), (hi, hi_as)):
        v = spec.get(key)
        ok = isinstance(v, (int, float)) if numbers else isinstance(v, int) and v >= 0
        if ok and not isinstance(v, bool) and abs(v) < 2**63:
            out[as_] = v
    return out


def _fits(param: dict[str, Any], value: Any) -> bool:
    """A default worth showing: of the parameter's type (and one of its values)."""
    kind = param["type"]
    if kind == "enum":
        return value in param["values"]
    if kind == "boolean":
        return isinstance(value, bool)
    if kind in ("integer", "number"):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and \
            param.get("minimum", value) <= value <= param.get("maximum", value)
    if kind == "string":
        return isinstance(value, str) and len(value) <= MAX_TEXT
    return False
