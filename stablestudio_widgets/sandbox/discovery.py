"""The discovery documents the service's x402 router serves, generated from the sandbox's own
route table: ``/openapi.json`` (OpenAPI 3.1, one operation per route with its request schema,
``x-payment-info`` prices and ``security`` for sign-in routes) and ``/llms.txt`` (the guidance
text, which the router also puts in ``info["x-guidance"]``).

Shapes follow ``@agentcash/router`` (notes/router.md §4–5): ``operationId`` is the route key with
``/`` → ``_``, ``tags`` the first path segment title-cased, dynamic prices as ``{"mode": "dynamic",
"min", "max"}`` (or the older flat ``pricingMode`` form, switchable), SIWX routes with
``security: [{"siwx": []}]`` and a 402 "Authentication Required".
"""

from __future__ import annotations

from typing import Any

from ..catalog import Catalog, Param, Route
from ..catalog.schema import object_schema

TITLE = "StableStudio (sandbox)"
PRICING_FORMATS = ("price", "pricingMode")
PROTOCOLS = [{"x402": {}}]
_SIWX = {"siwx": []}
_JOBS_QUERY = [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
               {"name": "status", "in": "query",
                "schema": {"type": "string", "enum": ["pending", "processing", "complete", "failed"]}}]


def _usd(atomic: float) -> str:
    return f"{atomic / 1e6:.6f}".rstrip("0").rstrip(".") if atomic else "0"


def payment_info(lo: int, hi: int, pricing_format: str) -> dict[str, Any]:
    """``x-payment-info`` for a route whose price runs from ``lo`` to ``hi`` atomic units."""
    if pricing_format == "pricingMode":  # @agentcash/router ≤ 1.1
        price: dict[str, Any] = ({"pricingMode": "fixed", "price": _usd(lo)} if lo == hi else
                                 {"pricingMode": "quote", "minPrice": _usd(lo), "maxPrice": _usd(hi)})
        return {**price, "protocols": ["x402"]}
    if lo == hi:
        return {"price": {"mode": "fixed", "currency": "USD", "amount": _usd(lo)}, "protocols": PROTOCOLS}
    return {"price": {"mode": "dynamic", "currency": "USD", "min": _usd(lo), "max": _usd(hi)}, "protocols": PROTOCOLS}


def _operation(key: str, summary: str, *, body: dict[str, Any] | None = None, pay: dict[str, Any] | None = None,
               siwx: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": key.replace("/", "_"), "summary": summary,
                          "tags": [key.split("/", 1)[0].title()]}
    if pay is not None:
        op["x-payment-info"] = pay
    if siwx:
        op["security"] = [_SIWX]
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    op["responses"] = {"200": {"description": "Successful response"},
                       "402": {"description": "Authentication Required" if siwx else "Payment Required"}}
    return op


def openapi(catalog: Catalog, base_url: str, *, pricing_format: str = "price") -> dict[str, Any]:
    """The document, as the router would generate it for these routes."""
    paths: dict[str, Any] = {}
    for r in catalog.routes.values():
        lo, hi = catalog.price_range(r.id)
        body = object_schema(r.params, strict=bool(r.raw.get("strict")))
        paths[r.path] = {"post": _operation(f"generate/{r.id}", f"{r.label} - {r.operation}", body=body,
                                            pay=payment_info(lo, hi, pricing_format))}
    upload = catalog.upload
    up_params = {n: Param.from_json(n, p) for n, p in upload["params"].items()}
    paths["/api/upload"] = {"post": _operation(
        "upload", "Get a client token for direct upload to Vercel Blob", body=object_schema(up_params),
        pay=payment_info(upload["price"], upload["price"], pricing_format))}
    confirm = {"type": "object", "properties": {"uploadId": {"type": "string"}, "blobUrl": {"type": "string"}},
               "required": ["uploadId", "blobUrl"]}
    paths["/api/upload/confirm"] = {"post": _operation("upload/confirm", "Confirm an upload", body=confirm, siwx=True)}
    paths["/api/jobs"] = {"get": {**_operation("jobs", "List your jobs", siwx=True), "parameters": _JOBS_QUERY}}
    paths["/api/jobs/{jobId}"] = {
        "get": _operation("jobs/{jobId}", "Poll job status and retrieve results", siwx=True),
        "delete": _operation("jobs/{jobId}", "Delete a failed or finished job", siwx=True)}
    guidance = llms_txt(catalog, base_url)
    info: dict[str, Any] = {"title": TITLE, "description": "Pay-per-generation images and videos (local sandbox, "
                            "testnet terms).", "version": "1.0.0", "x-guidance": guidance}
    if pricing_format == "pricingMode":
        info["guidance"] = guidance  # older routers wrote both
    return {"openapi": "3.1.0", "info": info, "servers": [{"url": base_url}],
            "tags": [{"name": t} for t in ("Generate", "Jobs", "Upload")],
            "components": {"securitySchemes": {"siwx": {"type": "apiKey", "in": "header", "name": "SIGN-IN-WITH-X"}}},
            "paths": paths}


def _time(r: Route) -> str:
    """``~5s``, ``~2.5min`` or ``1-3min``, as the service's table writes times."""
    lo, hi = r.typical_range_s or (r.typical_s, r.typical_s)
    minutes = lo >= 60 and lo % 30 == 0 and hi % 30 == 0
    unit, f = ("min", 60) if minutes else ("s", 1)
    return f"~{lo / f:g}{unit}" if lo == hi else f"{lo / f:g}-{hi / f:g}{unit}"


def llms_txt(catalog: Catalog, base_url: str) -> str:
    """The guidance markdown, in the layout of the service's own llms.txt (routes table included)."""
    def cost(r: Route) -> str:
        lo, hi = catalog.price_range(r.id)
        return f"${_usd(lo)}" if lo == hi else f"${_usd(lo)}–${_usd(hi)}"
    rows = [f"| `{r.path}` | {cost(r)} | {_time(r)} |" for r in catalog.routes.values()]
    rec = catalog.data.get("service", {}).get("recommended", {})
    return "\n".join([
        "# StableStudio API (sandbox)", "",
        "> AI image/video generation via micropayments. Local sandbox: USDC on Base Sepolia test terms, "
        "no real money. No API keys.", "",
        f"Base URL: `{base_url}`", "",
        "## Recommended Defaults",
        *(f"- **{k.replace('_', ' ').capitalize()}:** `{v}`" for k, v in rec.items()), "",
        "## Payment Flow",
        "1. `POST /api/generate/{model}/{operation}` without payment header",
        "   - Returns `402` with `PAYMENT-REQUIRED` header (base64 JSON)",
        "2. Decode requirements, sign USDC authorization, POST with `PAYMENT-SIGNATURE` header",
        "   - Returns `200` with `{jobId, status:\"pending\"}` and `PAYMENT-RESPONSE` header",
        "3. Poll `GET /api/jobs/{jobId}` with `SIGN-IN-WITH-X` header until complete "
        "(a fresh sign-in for every request: each nonce is accepted once)", "",
        "## Routes",
        "| Endpoint | Cost | Time |",
        "| --- | --- | --- |",
        *rows,
        f"| `{catalog.upload['path']}` | ${_usd(catalog.upload['price'])} | instant |", "",
        "## Input Schemas",
        "See `/openapi.json`: every route's request body, with allowed values and defaults.", "",
        "## Job Polling",
        "`GET /api/jobs/{jobId}`: `pending` → `processing` → `complete` (`result.imageUrl`, or `result.videoUrl` "
        "and `result.thumbnailUrl`) or `failed` (`error`).", ""])
