"""The sandbox in router mode (how the service's real server stack, ``@agentcash/router``, answers;
notes/router.md), and the client against it: single-use sign-ins, bare 402s, empty 402 bodies,
``accepted`` deep-compared, unknown fields echoed, discovery documents, removed routes.

The sandbox side is driven by tests/test_sandbox.py's own signing helpers (eth-account, not our
client); the client side by the real client over real HTTP, with a transport that only records
(or, to simulate a stale proof, replays) what goes on the wire.
"""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any

import httpx
import pytest
from PIL import Image

from stablestudio_widgets import AsyncStableStudio, InvalidParams, Wallet
from stablestudio_widgets.catalog import load
from stablestudio_widgets.sandbox import Sandbox
from stablestudio_widgets.sandbox.wire import iso
from stablestudio_widgets.siwx import challenge_info
from tests.conftest import sandbox_process
from tests.test_sandbox import NANO, NETWORK, Payer, b64, sign_payment, siwx_header, unb64

TIME_SCALE = 0.002
pytestmark = [pytest.mark.anyio,
              pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning")]


def router(**kw: Any) -> Sandbox:
    kw.setdefault("time_scale", TIME_SCALE)
    return Sandbox(**kw)


def bare(r: httpx.Response) -> dict[str, Any]:
    """A bare SIWX refusal: 402, ``{error, message}``, nothing to sign."""
    assert r.status_code == 402 and "payment-required" not in r.headers, (r.status_code, r.text)
    return r.json()


class Wire(httpx.AsyncHTTPTransport):
    """The real transport, keeping every request and answer; optionally re-sends a sign-in header
    once (a proxy or cache replaying a proof) so the server sees a used nonce."""

    def __init__(self, replay_siwx_on: str | None = None):
        super().__init__()
        self.sent: list[httpx.Request] = []
        self.answers: list[httpx.Response] = []
        self.replay_on = replay_siwx_on
        self._first: str | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        proof = request.headers.get("sign-in-with-x")
        if proof and self.replay_on and request.url.path == self.replay_on:
            if self._first is None:
                self._first = proof
            elif self._first != "used":
                request.headers["sign-in-with-x"], self._first = self._first, "used"
        self.sent.append(request)
        r = await super().handle_async_request(request)
        await r.aread()
        self.answers.append(r)
        return r

    def pairs(self, path: str | None = None) -> list[tuple[httpx.Request, httpx.Response]]:
        return [(q, a) for q, a in zip(self.sent, self.answers, strict=True) if path in (None, q.url.path)]

    def proofs(self, path: str) -> list[dict[str, Any]]:
        return [unb64(q.headers["sign-in-with-x"]) for q in self.sent
                if q.url.path == path and "sign-in-with-x" in q.headers]


@pytest.fixture
def client(tmp_path):
    made: list[AsyncStableStudio] = []

    def make(sb: Sandbox, **kw: Any) -> AsyncStableStudio:
        c = AsyncStableStudio(sb.url, kw.pop("wallet", None) or Wallet.generate(), ledger=tmp_path / f"l{len(made)}.db",
                              time_scale=TIME_SCALE, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.ledger.close()


# ------------------------------------------------------------------------------ the 402 itself


def test_paid_402_is_empty_and_carries_router_fields() -> None:
    with router() as sb, httpx.Client(base_url=sb.url) as http:
        r = http.post(NANO, json={"prompt": "a fox"})
        assert r.status_code == 402 and r.content == b"" and r.headers["content-type"] == "application/json"
        assert r.headers["cache-control"] == "no-store"
        required = unb64(r.headers["PAYMENT-REQUIRED"])
        assert "error" not in required
        assert required["resource"]["method"] == "POST" and required["resource"]["tags"] == ["Generate"]
        (req,) = required["accepts"]
        assert req["payTo"] == sb.merchant.lower() and req["maxTimeoutSeconds"] == 300 and req["extra"]
        body = required["extensions"]["bazaar"]["schema"]["properties"]["input"]["properties"]["body"]
        assert body["required"] == ["prompt", "aspectRatio", "imageSize"]  # output mode: defaults required too


@pytest.mark.parametrize("body_402, expected", [("json", {}), ("repeat", "header")])
def test_402_body_modes(body_402: str, expected: Any) -> None:
    with router(body_402=body_402) as sb, httpx.Client(base_url=sb.url) as http:
        r = http.post(NANO, json={"prompt": "a fox"})
        assert r.json() == (unb64(r.headers["PAYMENT-REQUIRED"]) if expected == "header" else expected)


def test_invalid_body_is_400_before_any_402_paid_or_not() -> None:
    with router() as sb, httpx.Client(base_url=sb.url) as http:
        payer = Payer(sb, http)
        good = payer.header(NANO, {"prompt": "x"})
        for headers in ({}, {"PAYMENT-SIGNATURE": good}):
            r = http.post(NANO, json={"prompt": "x", "imageSize": "8K"}, headers=headers)
            assert r.status_code == 400 and r.json()["error"] == "Validation failed"
            assert r.json()["issues"][0]["path"] == ["imageSize"]
        assert sb.settlements == []


ACCEPTED = {
    "verbatim": ({}, 200, None),
    "payee re-cased to EIP-55": ({"payTo": "checksum"}, 402, "requirements_mismatch"),
    "maxTimeoutSeconds left out": ({"maxTimeoutSeconds": None}, 402, "requirements_mismatch"),
    "a default added to extra": ({"extra": {"name": "USDC", "version": "2", "chainId": 84532}}, 402,
                                 "requirements_mismatch"),
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_accepted_is_deep_compared_with_what_was_sent(case: str) -> None:
    change, status, reason = ACCEPTED[case]
    with router() as sb, httpx.Client(base_url=sb.url) as http:
        payer = Payer(sb, http)
        req = payer.quote(NANO, {"prompt": "x"})
        echoed = {**req, **change}
        if change.get("payTo") == "checksum":
            echoed["payTo"] = sb.merchant  # EIP-55: the same address, another spelling
        echoed = {k: v for k, v in echoed.items() if v is not None}
        payload = unb64(sign_payment(payer.account, req))
        payload["accepted"] = echoed  # the signed authorization is unchanged; only the echo differs
        r = http.post(NANO, json={"prompt": "x"}, headers={"PAYMENT-SIGNATURE": b64(payload)})
        assert r.status_code == status, r.text
        if reason:
            assert r.json()["reason"] == reason and r.json()["error"].startswith(f"Payment rejected ({reason})")
            assert "error" not in unb64(r.headers["PAYMENT-REQUIRED"])  # a plain fresh challenge
            assert sb.settlements == []


def test_a_replayed_payment_is_refused_with_the_facilitators_reason() -> None:
    with router() as sb, httpx.Client(base_url=sb.url) as http:
        payer = Payer(sb, http)
        header = payer.header(NANO, {"prompt": "x"})
        assert http.post(NANO, json={"prompt": "x"}, headers={"PAYMENT-SIGNATURE": header}).status_code == 200
        again = http.post(NANO, json={"prompt": "x"}, headers={"PAYMENT-SIGNATURE": header})
        assert again.status_code == 402 and again.json()["reason"] == "invalid_exact_evm_nonce_already_used"
        assert len(sb.settlements) == 1 and len(sb.jobs) == 1


def test_the_reference_sdk_pays_the_router_mode_sandbox() -> None:
    """Deep-comparing ``accepted`` is not stricter than what the reference x402 client echoes."""
    import asyncio

    from eth_account import Account
    from x402 import x402Client
    from x402.http.clients.httpx import x402AsyncTransport
    from x402.mechanisms.evm.exact import register_exact_evm_client

    account = Account.create()

    async def pay(url: str) -> httpx.Response:
        sdk = register_exact_evm_client(x402Client(), account, networks=NETWORK)
        async with httpx.AsyncClient(transport=x402AsyncTransport(sdk), timeout=10) as paying:
            return await paying.post(f"{url}/api/generate/grok/generate", json={"prompt": "a lighthouse"})

    with router() as sb:
        paid = asyncio.run(pay(sb.url))
        assert paid.status_code == 200 and len(sb.settlements) == 1


# ------------------------------------------------------------------------------- sign-ins


def test_a_missing_sign_in_gets_the_routers_challenge() -> None:
    with router() as sb, httpx.Client(base_url=sb.url) as http:
        r = http.get("/api/jobs?limit=3")
        body = r.json()
        assert r.status_code == 402 and unb64(r.headers["PAYMENT-REQUIRED"]) == body
        assert body["error"] == "SIWX authentication required" and body["accepts"] == []
        ext = body["extensions"]["sign-in-with-x"]
        assert ext["info"]["domain"] == "127.0.0.1" and ext["info"]["uri"] == f"{sb.url}/api/jobs?limit=3"
        assert re.fullmatch(r"[0-9a-f]{32}", ext["info"]["nonce"])
        # The SDK's bare declaration sits nested under "schema": information, not a challenge.
        nested = ext["schema"]
        assert nested["sign-in-with-x"]["supportedChains"] == []
        assert challenge_info(nested, url=f"{sb.url}/api/jobs", chains=[NETWORK]) is None


@pytest.mark.parametrize("reuse", ["bare", "challenge", "allow"])
def test_a_re_sent_sign_in_is_refused_as_configured(reuse: str) -> None:
    with router(siwx_reuse=reuse) as sb, httpx.Client(base_url=sb.url) as http:
        payer = Payer(sb, http)
        job_id = payer.generate()
        url = f"{sb.url}/api/jobs/{job_id}"
        proof = siwx_header(payer.account, url)
        first = http.get(f"/api/jobs/{job_id}", headers={"SIGN-IN-WITH-X": proof})
        again = http.get(f"/api/jobs/{job_id}", headers={"SIGN-IN-WITH-X": proof})
        assert first.status_code == 200
        if reuse == "bare":
            assert bare(again) == {"error": "siwx_nonce_used",
                                   "message": "Nonce already used — request a new challenge"}
        elif reuse == "challenge":
            assert again.status_code == 402 and again.json()["extensions"]["sign-in-with-x"]["info"]["nonce"]
        else:
            assert again.status_code == 200


SIGN_INS = {
    "hostname as domain": ({"domain": "127.0.0.1"}, None),
    "host:port as domain": ({}, None),
    "another path, same origin": ({"uri": "{url}/api/jobs/somebody-else"}, None),
    "any EVM chain": ({"chainId": "eip155:1"}, None),
    "no expirationTime": ({"expirationTime": None}, None),
    "another origin": ({"uri": "http://127.0.0.1:1/api/jobs"}, "siwx_malformed"),
    "another domain": ({"domain": "stablestudio.dev"}, "siwx_malformed"),
    "issued in the future": ({"issuedAt": "+2"}, "siwx_malformed"),
    "issued over 5 minutes ago": ({"issuedAt": "-301"}, "siwx_expired"),
    "expired": ({"expirationTime": "-1"}, "siwx_expired"),
    "forged": ({"signer": "other"}, "siwx_invalid_signature"),
}


@pytest.mark.parametrize("case", list(SIGN_INS))
def test_sign_ins_are_checked_as_the_router_checks_them(case: str) -> None:
    from eth_account import Account

    fields, code = SIGN_INS[case]
    with router() as sb, httpx.Client(base_url=sb.url) as http:
        payer = Payer(sb, http)
        url = f"{sb.url}/api/jobs"
        now = time.time()
        fields = {k: (iso(now + float(v)) if k in ("issuedAt", "expirationTime") and isinstance(v, str) else v)
                  for k, v in fields.items()}
        fields = {k: (v.format(url=sb.url) if isinstance(v, str) and "{url}" in v else v) for k, v in fields.items()}
        if fields.get("signer") == "other":
            fields["signer"] = Account.create()
        r = http.get("/api/jobs", headers={"SIGN-IN-WITH-X": siwx_header(payer.account, url, **fields)})
        if code is None:
            assert r.status_code == 200, r.text
        else:
            assert bare(r)["error"] == code


def test_a_bad_signature_burns_its_nonce_as_in_the_router() -> None:
    from eth_account import Account

    with router() as sb, httpx.Client(base_url=sb.url) as http:
        payer = Payer(sb, http)
        url = f"{sb.url}/api/jobs"
        forged = siwx_header(payer.account, url, nonce="abcdef123456", signer=Account.create())
        good = siwx_header(payer.account, url, nonce="abcdef123456")
        assert bare(http.get("/api/jobs", headers={"SIGN-IN-WITH-X": forged}))["error"] == "siwx_invalid_signature"
        assert bare(http.get("/api/jobs", headers={"SIGN-IN-WITH-X": good}))["error"] == "siwx_nonce_used"


def test_jobs_say_loading_with_progress_as_the_service_does() -> None:
    with router(time_scale=0.3) as sb, httpx.Client(base_url=sb.url) as http:  # a 1.5 s image job
        payer = Payer(sb, http)
        job_id = payer.generate()
        seen: list[tuple[str, Any]] = []
        deadline = time.monotonic() + 15
        while (not seen or seen[-1][0] != "complete") and time.monotonic() < deadline:
            view = payer.job(job_id).json()
            seen.append((view["status"], view.get("progress")))
            time.sleep(0.02)
        statuses = list(dict.fromkeys(s for s, _ in seen))
        assert statuses in (["pending", "loading", "complete"], ["loading", "complete"])
        progress = [p for s, p in seen if s == "loading"]
        assert progress == sorted(progress) and all(0 <= p <= 99 for p in progress)
        listed = payer.signed("GET", "/api/jobs?status=complete").json()["jobs"]
        assert [j["id"] for j in listed] == [job_id]


# ------------------------------------------------------------------- the client against it


async def test_a_job_polled_ten_times_signs_in_ten_times(client) -> None:
    with router() as sb:
        wire = Wire()
        ss = client(sb, transport=wire)
        job = await ss.generate("grok", "polled ten times")
        for _ in range(10):
            r, signed = await ss.tracker.poll(job.id)
            assert r.status_code == 200 and signed["nonce"]
        proofs = wire.proofs(f"/api/jobs/{job.id}")
        assert len(proofs) == 10 and len({p["nonce"] for p in proofs}) == 10  # one fresh proof per request
        assert all(a.status_code == 200 for q, a in wire.pairs() if "sign-in-with-x" in q.headers)
        assert ss.stats["siwx_signatures"] == 10
        issued = [time.time() - (datetime_of(p["issuedAt"])) for p in proofs]
        assert all(3 < age < 60 for age in issued)  # backdated a few seconds: a fast clock still signs in
        assert (await job.wait()).url
        await ss.aclose()


async def test_a_loading_job_shows_its_progress(client) -> None:
    with router(time_scale=0.3) as sb:
        ss = client(sb)
        job = await ss.generate("grok", "slow enough to watch")  # ~1 s
        deadline = time.monotonic() + 15
        while job.status != "loading":
            assert time.monotonic() < deadline, job.status
            r, _ = await ss.tracker.poll(job.id)
            job.apply(r.json())
        assert job.detail.endswith("% done") and not job.done
        assert (await job.wait()).url and job.status == "complete" and job.detail == ""
        await ss.aclose()


def datetime_of(text: str) -> float:
    from stablestudio_widgets.sandbox.wire import parse_iso
    return parse_iso(text)


async def test_three_uploads_confirmed_in_a_row(client, tmp_path) -> None:
    with router() as sb:
        wire = Wire()
        ss = client(sb, transport=wire)
        urls = [await ss.upload(Image.new("RGB", (40, 30), (i * 80, 20, 200))) for i in range(3)]
        assert len(set(urls)) == 3 and all(u.startswith(sb.url + "/blob/") for u in urls)
        confirms = wire.pairs("/api/upload/confirm")
        assert [a.status_code for _, a in confirms] == [200, 200, 200]  # each confirmed on its first try
        assert len({unb64(q.headers["sign-in-with-x"])["nonce"] for q, _ in confirms}) == 3
        assert len(sb.settlements) == 3 and all(u.confirmed for u in sb.uploads.values())
        assert json.loads(confirms[0][0].content) == {"uploadId": next(iter(sb.uploads)), "blobUrl": urls[0]}
        await ss.aclose()


@pytest.mark.parametrize("reuse", ["bare", "challenge"])
async def test_a_refused_proof_is_signed_afresh_in_both_reuse_modes(client, reuse: str) -> None:
    """A proof the server has seen (replayed on the way) is refused; the client signs afresh (a
    bare 402) or signs the challenge (a challenge), retries once, and never calls it 'payment
    required'."""
    with router(siwx_reuse=reuse) as sb:
        probe = client(sb)
        job = await probe.generate("grok", "replayed proof")
        path = f"/api/jobs/{job.id}"
        wire = Wire(replay_siwx_on=path)
        ss = client(sb, transport=wire, wallet=probe.wallet)
        for _ in range(2):
            assert (await ss.job(job.id)).status  # the second one is replayed, refused, then signed again
            ss.tracker.jobs.pop(job.id)
        answers = [a for _, a in wire.pairs(path)]
        assert [a.status_code for a in answers] == [200, 402, 200]
        if reuse == "bare":
            assert answers[1].json()["error"] == "siwx_nonce_used" and "payment-required" not in answers[1].headers
            assert wire.proofs(path)[2]["domain"] == f"127.0.0.1:{sb.port}"  # our own fresh proof
        else:
            challenge = answers[1].json()["extensions"]["sign-in-with-x"]["info"]
            signed = wire.proofs(path)[2]
            assert (signed["nonce"], signed["domain"]) == (challenge["nonce"], "127.0.0.1")  # the challenge, as sent
        assert ss.stats["siwx_signatures"] == 3
        await ss.aclose()
        await probe.aclose()


async def test_unknown_fields_in_accepts_are_echoed_byte_for_byte(client) -> None:
    with router(extra_fields=True) as sb:
        wire = Wire()
        ss = client(sb, transport=wire)
        job = await ss.generate("grok", "echo everything")
        offered = next(a for a in wire.answers if a.status_code == 402).headers["payment-required"]
        offered_text = base64.b64decode(offered).decode()
        entry = json.loads(offered_text)["accepts"][0]
        assert entry["x-sandbox-terms"]["alpha"][2] == "ünïcødé ✓" and entry["extra"]["x-sandbox-hint"]
        exact = json.dumps(entry, separators=(",", ":"), ensure_ascii=False)
        assert exact in offered_text  # these are the server's own bytes for the entry
        paid = next(q for q in wire.sent if "payment-signature" in q.headers)
        received = base64.b64decode(paid.headers["payment-signature"]).decode()
        assert exact in received  # ... and what the server received back, byte for byte
        assert json.loads(received)["accepted"] == entry
        assert job.id and len(sb.settlements) == 1
        await ss.aclose()


async def test_a_removed_route_is_refused_before_paying_and_names_refresh_routes(client) -> None:
    data = json.loads(json.dumps(load().data))
    data["routes"] = [r for r in data["routes"] if r["model"] != "grok"]
    with router(catalog=data) as sb:
        ss = client(sb)
        with pytest.raises(InvalidParams, match=r"route_not_found.*refresh_routes\(\)"):
            await ss.generate("grok", "gone")
        assert sb.settlements == [] and ss.stats["signatures"] == 0
        await ss.aclose()


# ----------------------------------------------------------------------------- discovery


def test_discovery_documents_describe_the_routes_served() -> None:
    with router() as sb, httpx.Client(base_url=sb.url) as http:
        doc = http.get("/openapi.json").json()
        assert http.get("/api/openapi.json").json() == doc
        assert doc["openapi"] == "3.1.0" and doc["info"]["x-guidance"] == http.get("/llms.txt").text
        assert "| `/api/generate/gpt-image-2/generate` | $0.005–$0.21 | 1-3min |" in doc["info"]["x-guidance"]
        op = doc["paths"]["/api/generate/gpt-image-2/generate"]["post"]
        assert (op["operationId"], op["tags"], op["summary"]) == (
            "generate_gpt-image-2_generate", ["Generate"], "GPT Image 2 - generate")
        assert op["x-payment-info"]["price"] == {"mode": "dynamic", "currency": "USD", "min": "0.005", "max": "0.21"}
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        assert schema["required"] == ["prompt"]
        assert schema["properties"]["quality"] == {"type": "string", "enum": ["low", "medium", "high"],
                                                   "default": "high"}
        seedance = doc["paths"]["/api/generate/seedance/t2v"]["post"]["requestBody"]["content"]["application/json"]
        assert seedance["schema"]["additionalProperties"] is False
        assert doc["paths"]["/api/upload"]["post"]["x-payment-info"]["price"] == {
            "mode": "fixed", "currency": "USD", "amount": "0.01"}
        jobs = doc["paths"]["/api/jobs/{jobId}"]
        assert jobs["get"]["security"] == jobs["delete"]["security"] == [{"siwx": []}]
        assert jobs["get"]["operationId"] == "jobs_{jobId}"
        assert doc["components"]["securitySchemes"]["siwx"]["name"] == "SIGN-IN-WITH-X"
        assert len([p for p in doc["paths"] if p.startswith("/api/generate/")]) == len(load().routes)


def test_legacy_pricing_format_and_404_envelope() -> None:
    with router(pricing_format="pricingMode") as sb, httpx.Client(base_url=sb.url) as http:
        doc = http.get("/openapi.json").json()
        assert doc["paths"]["/api/generate/grok/generate"]["post"]["x-payment-info"]["pricingMode"] == "fixed"
        info = doc["paths"]["/api/generate/sora-2/generate"]["post"]["x-payment-info"]
        assert (info["pricingMode"], info["minPrice"], info["maxPrice"]) == ("quote", "0.4", "1.2")
        assert doc["info"]["guidance"] == doc["info"]["x-guidance"]
        r = http.post("/api/generate/gpt-image-1/edit", json={"prompt": "x"})
        assert r.status_code == 404 and r.json()["code"] == "route_not_found"
        assert r.json()["discovery"] == {"openapi": f"{sb.url}/openapi.json", "llmsTxt": f"{sb.url}/llms.txt"}


# ---------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("reuse", ["bare", "challenge"])
def test_cli_switches_router_behaviours(reuse: str) -> None:
    with sandbox_process("--time-scale", "0.01", "--siwx-reuse", reuse, "--402-body", "repeat",
                         "--extra-fields", "--pricing-format", "pricingMode") as (proc, out, url):
        assert "the real router" in out and f"re-sent sign-ins {reuse}" in out
        with httpx.Client(base_url=url) as http:
            r = http.post(NANO, json={"prompt": "x"})
            assert r.json() == unb64(r.headers["PAYMENT-REQUIRED"]) and "x-sandbox-terms" in r.json()["accepts"][0]
            assert "pricingMode" in http.get("/openapi.json").json()["paths"][NANO]["post"]["x-payment-info"]
            from eth_account import Account
            proof = siwx_header(Account.create(), url + "/api/jobs")
            assert http.get("/api/jobs", headers={"SIGN-IN-WITH-X": proof}).status_code == 200
            again = http.get("/api/jobs", headers={"SIGN-IN-WITH-X": proof})
            assert again.status_code == 402
            assert ("payment-required" in again.headers) == (reuse == "challenge")
    assert proc.returncode == 0
