"""The live route table: ``refresh_routes()`` reads the service's ``/openapi.json`` (here: the
sandbox's, generated from a route table the test changes, or a hostile peer's), keeps it on disk,
falls back when it cannot, and the client, its validation and an open Studio follow it.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from typing import Any

import httpx
import pytest

from stablestudio_widgets import AsyncStableStudio, InvalidParams, StableStudio, Wallet
from stablestudio_widgets.catalog import MEDIA_TIMEOUT_S, UnknownParameterWarning, load
from stablestudio_widgets.catalog.live import MAX_DOC_BYTES, RouteTableWarning, cache_file
from stablestudio_widgets.catalog.openapi import guidance_table, price_of
from stablestudio_widgets.ledger import home
from stablestudio_widgets.sandbox import Sandbox

TIME_SCALE = 0.002
pytestmark = pytest.mark.anyio

AURORA = {
    "id": "aurora-1/generate", "model": "aurora-1", "operation": "generate", "label": "Aurora 1", "media": "image",
    "description": "A model the bundled table has never heard of",
    "params": {"prompt": {"type": "string", "required": True, "min_length": 1, "description": "What to generate"},
               "style": {"type": "enum", "values": ["ink", "oil", "neon"], "default": "ink"},
               "steps": {"type": "integer", "minimum": 1, "maximum": 50, "default": 20}},
    "price": {"base": 30000, "factors": {"style": {"ink": 1, "oil": 2, "neon": 3}}},
    "price_usd": [0.03, 0.09], "typical_s": 150, "typical_range_s": [60, 180], "poll": {"interval_s": 3},
}


def changed_table(*, add: dict[str, Any] | None = AURORA, drop: str | None = "grok",
                  grok_style: bool = False) -> dict[str, Any]:
    """The bundled route table with a model added, one removed, or a parameter added to grok."""
    data = copy.deepcopy(load().data)
    data["routes"] = [r for r in data["routes"] if r["model"] != drop] + ([copy.deepcopy(add)] if add else [])
    if grok_style:
        grok = next(r for r in data["routes"] if r["id"] == "grok/generate")
        grok["params"]["style"] = {"type": "enum", "values": ["photo", "anime"]}
    return data


def client(url: str, tmp_path, **kw: Any) -> AsyncStableStudio:
    return AsyncStableStudio(url, kw.pop("wallet", None) or Wallet.generate(), ledger=tmp_path / "l.db",
                             time_scale=TIME_SCALE, **kw)


# -------------------------------------------------------------------------- refresh and use


async def test_refresh_adds_and_removes_models_and_pays_for_a_new_one(tmp_path) -> None:
    with Sandbox(time_scale=TIME_SCALE, catalog=changed_table()) as sb:
        ss = client(sb.url, tmp_path)
        assert ss.catalog.source == "bundled" and "grok/generate" in ss.catalog.routes
        with pytest.raises(InvalidParams, match=r"refresh_routes\(\)"):
            await ss.generate("aurora-1", "a fox")
        cat = await ss.refresh_routes()
        assert cat is ss.catalog and cat.source == "live" and cat.age_s < 5
        assert "aurora-1/generate" in cat.routes and not any(r.startswith("grok/") for r in cat.routes)
        new = cat.route("aurora-1/generate")
        assert (new.label, new.media, new.price_usd, new.typical_s) == ("Aurora 1", "image", (0.03, 0.09), 120.0)
        assert new.poll_timeout_s >= 600  # "1-3min" in the service's table: minutes, not the 2-minute image default
        assert new.params["steps"].type == "integer" and new.params["style"].values == ("ink", "oil", "neon")
        with pytest.raises(InvalidParams, match="steps=99 is out of range"):
            await ss.generate("aurora-1", "a fox", steps=99)  # the live schema validates
        with pytest.raises(InvalidParams, match="Unknown model 'grok'"):
            await ss.generate("grok", "gone")
        q = await ss.quote("aurora-1", prompt="a fox", style="oil")
        assert q.amount == 60000
        job = await ss.generate("aurora-1", "a fox", style="neon", steps=5)  # an unknown price model: learns per body
        assert (await job.wait()).url.endswith(".png") and job.amount == 90000
        assert sb.jobs[job.id].params == {"prompt": "a fox", "style": "neon", "steps": 5}
        await ss.aclose()


async def test_the_copy_on_disk_outlives_the_service(tmp_path) -> None:
    with Sandbox(time_scale=TIME_SCALE, catalog=changed_table()) as sb:
        url = sb.url
        first = client(url, tmp_path)
        await first.refresh_routes()
        assert cache_file(home(), url).exists()
        await first.aclose()
        later = client(url, tmp_path)  # a restart: the service's table, from disk
        assert later.catalog.source == "cache" and "aurora-1/generate" in later.catalog.routes
        assert 0 <= later.catalog.age_s < 60
    with pytest.warns(RouteTableWarning, match=r"could not be reached.*the copy read 0\.0 h ago"):
        cat = await later.refresh_routes()  # offline now
    assert cat.source == "cache" and "aurora-1/generate" in cat.routes
    cache_file(home(), url).unlink()
    with pytest.warns(RouteTableWarning, match="the bundled route table"):
        cat = await later.refresh_routes()
    assert cat.source == "bundled" and "aurora-1/generate" not in cat.routes and "grok/generate" in cat.routes
    await later.aclose()


async def test_unknown_parameters_strict_and_not(tmp_path) -> None:
    with Sandbox(time_scale=TIME_SCALE, catalog=changed_table(add=None, drop=None, grok_style=True)) as sb:
        ss = client(sb.url, tmp_path)
        with pytest.raises(InvalidParams, match=r"no parameter 'style' in the bundled route table.*refresh_routes\(\)"):
            await ss.generate("grok", "a fox", style="anime")
        assert ss.stats["requests"] == 0
        with pytest.warns(UnknownParameterWarning, match="sending 'style' unchecked"):
            job = await ss.generate("grok", "a fox", style="anime", strict=False)
        assert sb.jobs[job.id].params["style"] == "anime"
        await ss.refresh_routes()
        job = await ss.generate("grok", "a fox", style="photo")  # the live table knows it: no warning
        with pytest.raises(InvalidParams, match="allowed: photo, anime"):
            await ss.generate("grok", "a fox", style="oil")
        await ss.aclose()
    with Sandbox(time_scale=TIME_SCALE) as sb:  # a service that does not know it refuses it: nothing is paid
        ss = client(sb.url, tmp_path, strict=False)
        with pytest.warns(UnknownParameterWarning), pytest.raises(InvalidParams, match="Validation failed"):
            await ss.generate("grok", "a fox", style="anime")
        assert sb.settlements == [] and ss.stats["signatures"] == 0
        await ss.aclose()


def test_a_studio_follows_a_refreshed_catalog_while_open(tmp_path) -> None:
    from stablestudio_widgets import Studio

    with Sandbox(time_scale=TIME_SCALE) as sb:
        ss = StableStudio(sb.url, Wallet.generate(), ledger=tmp_path / "s.db", time_scale=TIME_SCALE)
        studio = Studio(ss, model="grok")
        models = lambda: {r["model"] for r in studio.catalog["routes"]}  # noqa: E731
        assert "grok" in models() and "aurora-1" not in models()
        sb.set_catalog(changed_table())  # the service adds aurora-1 and drops grok
        ss.refresh_routes()
        assert "aurora-1" in models() and "grok" not in models()
        assert studio.model == "gpt-image-2" and studio.route_id == "gpt-image-2/generate"  # grok gave way
        studio.model, studio.route_id, studio.prompt = "aurora-1", "aurora-1/generate", "a fox"
        studio.params = {"style": "oil"}
        deadline = time.monotonic() + 20
        while not (studio.quote["status"] == "ok" and studio.quote["route_id"] == "aurora-1/generate"):
            assert time.monotonic() < deadline, studio.quote
            time.sleep(0.02)
        assert studio.quote["amount_usd"] == 0.06
        sb.set_catalog(load().data)  # and back: aurora-1 is removed while selected
        ss.refresh_routes()
        assert "aurora-1" not in models() and studio.route_id in ss.catalog.routes
        studio.close()
        ss.close()


def test_timeouts_follow_the_typical_time() -> None:
    cat = load()
    gpt2 = cat.route("gpt-image-2/generate")
    assert gpt2.media == "image" and gpt2.poll_timeout_s >= 600  # "can take minutes"
    assert cat.route("nano-banana/generate").poll_timeout_s == MEDIA_TIMEOUT_S["image"] == 120
    assert cat.route("veo-3.1-fast/generate").poll_timeout_s == MEDIA_TIMEOUT_S["video"] == 600
    assert cat.route("wan-2.6/t2v").poll_timeout_s == 4 * 300


# ------------------------------------------------------------------------- hostile documents


def peer(document: Any, *, raw: bytes | None = None, status: int = 200) -> httpx.MockTransport:
    """A service whose /openapi.json is whatever the test says."""
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path != "/openapi.json":
            return httpx.Response(404, json={"error": "no"})
        return httpx.Response(status, content=raw if raw is not None else json.dumps(document).encode(),
                              headers={"content-type": "application/json"})
    return httpx.MockTransport(answer)


def doc(paths: dict[str, Any], **info: Any) -> dict[str, Any]:
    return {"openapi": "3.1.0", "info": {"title": "x", "version": "1", **info}, "paths": paths}


def op(schema: Any, pay: Any = None, **extra: Any) -> dict[str, Any]:
    out = {"post": {"requestBody": {"content": {"application/json": {"schema": schema}}}, **extra}}
    if pay is not None:
        out["post"]["x-payment-info"] = pay
    return out


GOOD = {"type": "object", "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]}


async def refreshed(document: Any, tmp_path, **kw: Any) -> tuple[Any, list[str]]:
    ss = AsyncStableStudio("https://stablestudio.dev", Wallet.generate(), ledger=tmp_path / "h.db",
                           transport=peer(document, **kw))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cat = await ss.refresh_routes()
    await ss.aclose()
    return cat, [str(w.message) for w in caught if issubclass(w.category, RouteTableWarning)]


@pytest.mark.parametrize("case", ["too big", "not json", "nested too deep", "not openapi", "no routes"])
async def test_unusable_documents_leave_the_bundled_table(case: str, tmp_path) -> None:
    kw: dict[str, Any] = {}
    document: Any = doc({"/api/generate/x/generate": op(GOOD)})
    if case == "too big":
        kw["raw"] = b'{"openapi": "3.1.0", "pad": "' + b"x" * MAX_DOC_BYTES + b'"}'
    elif case == "not json":
        kw["raw"] = b"<html>hello</html>"
    elif case == "nested too deep":
        kw["raw"] = b"[" * 100_000 + b"]" * 100_000
    elif case == "not openapi":
        document = {"swagger": "2.0", "paths": {}}
    else:
        document = doc({"/api/jobs": {"get": {}}, "/api/generate/../../etc/generate": op(GOOD)})
    cat, said = await refreshed(document, tmp_path, **kw)
    assert cat.source == "bundled" and len(cat.routes) == len(load().routes)
    assert said and "Could not use the route table" in said[-1]


async def test_a_schema_we_cannot_read_falls_back_per_route(tmp_path) -> None:
    exotic = {"type": "object", "properties": {"prompt": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}}
    document = doc({
        "/api/generate/grok/generate": op(exotic),  # known: keeps its bundled parameters
        "/api/generate/mystery/generate": op(exotic),  # unknown: left out
        "/api/generate/odd-enum/generate": op({"type": "object", "properties": {
            "mode": {"type": "string", "enum": ["a", "b\u202eevil"]}}}),
        "/api/generate/fine/generate": op({"type": "object", "properties": {
            "prompt": {"type": "string", "maxLength": 500, "description": "say \u202ewhat\u0007 you want",
                       "x-unknown-keyword": {"deep": [1, 2]}},
            "images": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
            "quality": {"type": ["string", "null"], "enum": ["lo", "hi"], "default": "nope"},
            "n": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 4}, {"type": "null"}]}},
            "required": ["prompt", "images"]},
            {"price": {"mode": "dynamic", "currency": "USD", "min": "-1", "max": "NaN"}},
            summary="Fine Model - generate", servers=[{"url": "https://evil.example"}]),
    })
    cat, said = await refreshed(document, tmp_path)
    assert cat.source == "live" and set(cat.routes) == {"grok/generate", "fine/generate"}
    assert cat.route("grok/generate").params == load().route("grok/generate").params
    assert any("grok/generate" in s and "bundled parameters" in s for s in said)
    assert any("mystery/generate: left out" in s for s in said) and any("odd-enum" in s for s in said)
    fine = cat.route("fine/generate")
    assert fine.label == "Fine Model" and fine.params["images"].type == "url_list"
    assert fine.params["images"].max_items == 3 and fine.params["prompt"].max_length == 500
    assert fine.params["prompt"].description == "say  what  you want"  # no bidi or control characters
    assert fine.params["quality"].values == ("lo", "hi") and fine.params["quality"].default is None
    assert fine.params["n"].type == "integer" and fine.params["n"].maximum == 4
    assert fine.price_usd == (0.0, 0.0) and not fine.price_known  # nonsense prices are not believed
    assert cat.upload == load().upload  # no upload operation published: the bundled one stands


def test_the_routers_document_as_published_is_understood() -> None:
    """The excerpt of StableStudio's OpenAPI as its router writes it (notes/router.md §4)."""
    from stablestudio_widgets.catalog.openapi import catalog_data

    document = doc({
        "/api/generate/gpt-image-2/generate": {"post": {
            "operationId": "generate_gpt-image-2_generate", "summary": "generate with GPT Image 2",
            "tags": ["Generate"],
            "x-payment-info": {"price": {"mode": "dynamic", "currency": "USD", "min": "0", "max": "10.00"},
                               "protocols": [{"x402": {}}, {"mpp": {"method": "tempo", "intent": "charge",
                                                                    "currency": "0x20c0" + "0" * 37 + "1"}}]},
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object",
                "properties": {"prompt": {"type": "string", "minLength": 1, "description": "Text prompt"},
                               "quality": {"default": "high", "type": "string", "enum": ["low", "medium", "high"]},
                               "size": {"default": "auto", "type": "string",
                                        "enum": ["1024x1024", "1536x1024", "1024x1536", "auto"]},
                               "background": {"default": "auto", "type": "string", "enum": ["opaque", "auto"]},
                               "output_format": {"default": "png", "type": "string", "enum": ["png", "jpeg", "webp"]}},
                "required": ["prompt"]}}}},
            "responses": {"200": {"description": "Successful response"}, "402": {"description": "Payment Required"}}}},
        "/api/upload": {"post": {
            "x-payment-info": {"price": {"mode": "fixed", "currency": "USD", "amount": "0.01"}},
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object",
                "properties": {"filename": {"type": "string", "description": "Name of the file to upload"},
                               "contentType": {"type": "string", "enum": ["image/jpeg", "image/jpg", "image/png",
                                                                          "image/gif", "image/webp"]},
                               "size": {"type": "number", "description": "File size in bytes (optional)"}},
                "required": ["filename", "contentType"]}}}}}},
        "/api/jobs/{jobId}": {"get": {"operationId": "jobs_{jobId}", "security": [{"siwx": []}]}},
    }, **{"x-guidance": "## Routes\n| `/api/generate/gpt-image-2/generate`     | $0.005–$0.21  | can take minutes |"})
    data, notes = catalog_data(document, load())
    assert notes == [] and [r["id"] for r in data["routes"]] == ["gpt-image-2/generate"]
    (route,) = data["routes"]
    assert route["params"]["quality"] == {"type": "enum", "values": ["low", "medium", "high"], "default": "high"}
    assert route["params"]["output_format"]["default"] == "png" and route["price_usd"] == [0.005, 0.21]
    assert route["typical_s"] == 150 and data["upload"]["price"] == 10000
    assert data["upload"]["params"]["size"]["type"] == "number"


def test_prices_and_times_in_every_published_form() -> None:
    assert price_of({"price": {"mode": "fixed", "currency": "USD", "amount": "0.01"}}) == (0.01, 0.01)
    assert price_of({"price": {"mode": "dynamic", "min": "0", "max": "10.00"}}) == (0.0, 10.0)
    assert price_of({"pricingMode": "fixed", "price": "0.039"}) == (0.039, 0.039)
    assert price_of({"pricingMode": "range", "minPrice": "0.13", "maxPrice": "0.24"}) == (0.13, 0.24)
    assert price_of({"pricingMode": "quote", "maxPrice": "20"}) == (0.0, 20.0)
    for hostile in ({"price": {"mode": "fixed", "amount": "1e400"}}, {"price": {"mode": "fixed", "amount": True}},
                    {"pricingMode": "fixed", "price": "-1"}, "0.5", {"price": {"mode": "dynamic", "max": "inf"}}):
        assert price_of(hostile) is None
    table = guidance_table("\n".join([
        "| `/api/generate/nano-banana/generate`     | $0.045–$0.151 | ~5s |",
        "| `/api/generate/nano-banana-pro/edit` | $0.13-0.24 | ~10s |",
        "| `/api/generate/wan-2.6/t2v` | $0.34-$1.02 | 2-5min |",
        "| `/api/generate/seedance/t2v` | up to $20 | ~1min |",
        "| POST /api/generate/x/vectorize | dynamic | — |"]))
    assert table["nano-banana/generate"] == {"price": (0.045, 0.151), "typical_s": 5.0}
    assert table["nano-banana-pro/edit"]["price"] == (0.13, 0.24)
    assert table["wan-2.6/t2v"] == {"price": (0.34, 1.02), "typical_s": 210.0, "typical_range_s": [120.0, 300.0]}
    assert table["seedance/t2v"] == {"typical_s": 60.0} and table["x/vectorize"] == {}
