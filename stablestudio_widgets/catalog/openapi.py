"""The service's ``/openapi.json`` (as its x402 router generates it) → route table data.

The document is untrusted input: it is size-bounded by the caller, unknown keywords are ignored,
only ``/api/generate/<model>/<operation>`` POSTs become routes, a route whose schema this client
cannot understand keeps its bundled parameters (or is left out, if it has none), and nothing in it
is ever followed (``servers``, links). Prices come from ``x-payment-info`` in either form the
router has used — ``{"price": {"mode": …}}`` (≥ 1.3) or ``{"pricingMode": …}`` (older) — and,
where those say too little (a dynamic route publishes ``min: "0"``), from the routes table in the
guidance text (``info["x-guidance"]`` = the service's llms.txt).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from .schema import NotUnderstood, params_from_schema, text

MAX_ROUTES = 200
MAX_GUIDANCE = 200_000
MAX_PRICE_USD = Decimal(10_000)
DEFAULT_TYPICAL_S = {"image": 10.0, "video": 60.0}
POLL_INTERVAL_S = {"image": 3, "video": 10}
_PATH = re.compile(r"^/api/generate/([a-z0-9][a-z0-9._-]{0,62})/([a-z0-9][a-z0-9._-]{0,62})$")
_ROW = re.compile(r"^\s*\|\s*`?(?:POST\s+)?/api/generate/([a-z0-9._-]+)/([a-z0-9._-]+)`?\s*\|([^|]*)\|([^|]*)\|")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(?:[-–]\s*([0-9]+(?:\.[0-9]+)?))?\s*"
                       r"(s|sec|secs|seconds|m|min|mins|minutes)\b", re.I)
_VIDEO_OPS = ("t2v", "i2v")

__all__ = ["NotUnderstood", "catalog_data", "guidance_table", "price_of"]


def catalog_data(doc: Any, bundled: Any) -> tuple[dict[str, Any], list[str]]:
    """Route table data (``routes.json`` form) from an OpenAPI document, and notes on what fell
    back or was left out. ``bundled`` is the packaged :class:`~.Catalog` (metadata and fallbacks).
    Raises :class:`NotUnderstood` when the document has no usable generate route at all."""
    if not isinstance(doc, dict) or not str(doc.get("openapi", "")).startswith("3."):
        raise NotUnderstood("not an OpenAPI 3 document")
    paths = doc.get("paths")
    if not isinstance(paths, dict):
        raise NotUnderstood("the document has no paths")
    info = doc.get("info") if isinstance(doc.get("info"), dict) else {}
    guidance = info.get("x-guidance") or info.get("guidance")
    table = guidance_table(guidance if isinstance(guidance, str) else "")
    notes: list[str] = []
    routes = []
    for path, item in list(paths.items())[: MAX_ROUTES * 2]:
        m = _PATH.match(path) if isinstance(path, str) else None
        op = item.get("post") if m and isinstance(item, dict) else None
        if not isinstance(op, dict):
            continue
        route = _route(m.group(1), m.group(2), op, bundled, table.get(f"{m.group(1)}/{m.group(2)}"), notes)
        if route is not None and len(routes) < MAX_ROUTES:
            routes.append(route)
    if not routes:
        raise NotUnderstood("the document lists no generate route this client can use")
    upload = _upload(paths.get("/api/upload"), bundled.upload, notes)
    return {"service": bundled.data["service"], "upload": upload, "routes": routes}, notes


def _body_schema(op: dict[str, Any]) -> Any:
    body = op.get("requestBody")
    content = body.get("content") if isinstance(body, dict) else None
    json_body = content.get("application/json") if isinstance(content, dict) else None
    return json_body.get("schema") if isinstance(json_body, dict) else None


def _route(model: str, operation: str, op: dict[str, Any], bundled: Any, listed: dict[str, Any] | None,
           notes: list[str]) -> dict[str, Any] | None:
    rid = f"{model}/{operation}"
    known = bundled.routes.get(rid)
    known_raw = known.raw if known is not None else None
    try:
        params = params_from_schema(_body_schema(op), known_raw["params"] if known_raw else None)
    except NotUnderstood as e:
        if known_raw is None:
            notes.append(f"{rid}: left out ({e})")
            return None
        notes.append(f"{rid}: the service's schema is not understood ({e}); using the bundled parameters")
        params = known_raw["params"]
    published = price_of(op.get("x-payment-info"))
    listed = listed or {}
    if known_raw is not None:
        route = {k: v for k, v in known_raw.items() if k not in ("params", "sources")}
        route["price_usd"] = _display_price(published, listed.get("price"), known_raw["price_usd"])
    else:
        media = _media(model, operation, op, bundled)
        summary = text(op.get("summary"), 120)
        typical = listed.get("typical_s") or DEFAULT_TYPICAL_S[media]
        lo, hi = _display_price(published, listed.get("price"), None) or (0.0, 0.0)
        route = {"id": rid, "model": model, "operation": operation,
                 "label": _label(model, summary, bundled), "media": media,
                 "description": text(op.get("description"), 200) or summary or rid,
                 "price": {"base": round(lo * 1_000_000), "factors": {}}, "price_usd": [lo, hi],
                 "price_known": False, "typical_s": typical, "poll": {"interval_s": POLL_INTERVAL_S[media]}}
        if listed.get("typical_range_s"):
            route["typical_range_s"] = listed["typical_range_s"]
    route["params"] = params
    route["source"] = "live"
    return route


def _upload(item: Any, known: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    op = item.get("post") if isinstance(item, dict) else None
    if not isinstance(op, dict):
        return known
    try:
        params = params_from_schema(_body_schema(op), known["params"])
        if params.get("filename", {}).get("type") != "string" or params.get("contentType", {}).get("type") != "enum":
            raise NotUnderstood("filename/contentType are not a string and an enum")
    except NotUnderstood as e:
        notes.append(f"upload: the service's schema is not understood ({e}); using the bundled one")
        return known
    price = price_of(op.get("x-payment-info"))
    out = {**{k: v for k, v in known.items() if k != "sources"}, "params": params}
    if price and price[0] == price[1]:
        out.update(price=round(price[0] * 1_000_000), price_usd=[price[0], price[1]])
    return out


def _display_price(published: tuple[float, float] | None, listed: tuple[float, float] | None,
                   known: Any) -> list[float] | None:
    """What a picker shows: a fixed published price, else the service's own table, else a
    published range that says something (the router's default minimum is "0"), else ours."""
    if published and published[0] == published[1]:
        return list(published)
    if listed:
        return list(listed)
    if published and published[0] > 0:
        return list(published)
    if known is not None:
        return list(known)
    return list(published) if published else None


def price_of(info: Any) -> tuple[float, float] | None:
    """(min, max) USD from ``x-payment-info`` in the structured or the legacy form; None if absent."""
    if not isinstance(info, dict):
        return None
    price = info.get("price")
    if isinstance(price, dict):
        mode = price.get("mode")
        if mode == "fixed":
            amount = _usd(price.get("amount"))
            return (amount, amount) if amount is not None else None
        lo, hi = _usd(price.get("min")), _usd(price.get("max"))
    else:
        mode = info.get("pricingMode")
        if mode == "fixed":
            amount = _usd(price)
            return (amount, amount) if amount is not None else None
        lo, hi = _usd(info.get("minPrice")), _usd(info.get("maxPrice"))
    if hi is None:
        return None
    return (min(lo if lo is not None else 0.0, hi), hi)


def _usd(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    try:
        d = Decimal(str(value).strip().lstrip("$"))
    except InvalidOperation:
        return None
    return float(d) if d.is_finite() and 0 <= d <= MAX_PRICE_USD else None


def guidance_table(guidance: str) -> dict[str, dict[str, Any]]:
    """The llms.txt routes table (``| `/api/generate/m/op` | $0.045–$0.151 | ~5s |``): prices and
    typical times by route id. Both dash styles, ``$`` on one or both ends, and words ("can take
    minutes") are read; a cell that says nothing usable is skipped."""
    out: dict[str, dict[str, Any]] = {}
    for line in guidance[:MAX_GUIDANCE].splitlines():
        m = _ROW.match(line)
        if not m:
            continue
        row: dict[str, Any] = {}
        prices = [p for p in (_usd(x) for x in _NUMBER.findall(m.group(3))) if p is not None]
        if prices and "up to" not in m.group(3).lower():
            row["price"] = (min(prices), max(prices))
        row.update(_typical(m.group(4)))
        out[f"{m.group(1)}/{m.group(2)}"] = row
    return out


def _typical(cell: str) -> dict[str, Any]:
    m = _DURATION.search(cell)
    if m:
        scale = 60 if m.group(3).lower().startswith("m") else 1
        lo = float(m.group(1)) * scale
        hi = float(m.group(2)) * scale if m.group(2) else None
        if hi:
            return {"typical_s": (lo + hi) / 2, "typical_range_s": [lo, hi]}
        return {"typical_s": lo}
    if "minute" in cell.lower():  # "can take minutes"
        return {"typical_s": 150.0, "typical_range_s": [60.0, 180.0]}
    return {}


def _media(model: str, operation: str, op: dict[str, Any], bundled: Any) -> str:
    sibling = next((r for r in bundled.routes.values() if r.model == model), None)
    if sibling is not None:
        return sibling.media
    words = " ".join(str(x) for x in (op.get("summary"), op.get("description"), op.get("tags"))).lower()
    return "video" if operation in _VIDEO_OPS or "video" in words else "image"


def _label(model: str, summary: str, bundled: Any) -> str:
    sibling = next((r for r in bundled.routes.values() if r.model == model), None)
    if sibling is not None:
        return sibling.label
    head = summary.split(" - ")[0].strip() if " - " in summary else ""
    return head[:60] or model.replace("-", " ").title()
