"""The sandbox server over real HTTP on loopback, paid and signed-in with real signatures, in
spec mode (``router=False``: the protocol as written; tests/test_router.py covers router mode).

The payments and sign-ins here are made by this file's own helpers (eth-account directly, and
the reference ``x402`` SDK for interop), never by the package's client, so the sandbox is
checked against the protocol rather than against our own reading of it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import secrets
import signal
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from x402.extensions.sign_in_with_x.evm import format_siwe_message

from stablestudio_widgets.catalog import load
from stablestudio_widgets.sandbox import Faults, Sandbox, Timing
from stablestudio_widgets.sandbox.faults import JOB_ERRORS
from stablestudio_widgets.sandbox.signin import siwe_message
from stablestudio_widgets.sandbox.wire import iso

from .conftest import sandbox_process, until

NETWORK = "eip155:84532"
ASSET = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
BASE_MAINNET_USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
NANO = "/api/generate/nano-banana/generate"
SORA = "/api/generate/sora-2/generate"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TIME_SCALE = 0.002

# The reference SDK's SIWE helper imports web3, which imports a deprecated websockets module.
pytestmark = pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning")


# ------------------------------------------------------------------ the test's own signing helpers


def b64(obj: Any) -> str:
    return base64.b64encode(json.dumps(obj).encode()).decode()


def unb64(value: str) -> Any:
    return json.loads(base64.b64decode(value))


def sign_payment(account: Any, req: dict[str, Any], *, signer: Any = None, value: int | None = None,
                 to: str | None = None, valid_after: int = 0, valid_before: int | None = None,
                 nonce: str | None = None, accepted: dict[str, Any] | None = None,
                 version: int = 2) -> str:
    """A PAYMENT-SIGNATURE header: EIP-3009 TransferWithAuthorization signed with EIP-712."""
    accepted = {**req, **(accepted or {})}
    auth = {"from": account.address, "to": to or accepted["payTo"],
            "value": str(accepted["amount"] if value is None else value), "validAfter": str(valid_after),
            "validBefore": str(valid_before or int(time.time()) + 300),
            "nonce": nonce or "0x" + secrets.token_hex(32)}
    typed = {
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                             {"name": "chainId", "type": "uint256"},
                             {"name": "verifyingContract", "type": "address"}],
            "TransferWithAuthorization": [
                {"name": "from", "type": "address"}, {"name": "to", "type": "address"},
                {"name": "value", "type": "uint256"}, {"name": "validAfter", "type": "uint256"},
                {"name": "validBefore", "type": "uint256"}, {"name": "nonce", "type": "bytes32"}],
        },
        "primaryType": "TransferWithAuthorization",
        "domain": {"name": "USDC", "version": "2", "chainId": int(accepted["network"].split(":")[1]),
                   "verifyingContract": accepted["asset"]},
        "message": {**auth, "value": int(auth["value"]), "validAfter": int(auth["validAfter"]),
                    "validBefore": int(auth["validBefore"]), "nonce": bytes.fromhex(auth["nonce"][2:])},
    }
    signature = (signer or account).sign_typed_data(full_message=typed).signature
    return b64({"x402Version": version, "resource": {"url": "sandbox"}, "accepted": accepted,
                "payload": {"signature": "0x" + bytes(signature).hex(), "authorization": auth}})


def siwx_header(account: Any, url: str, *, signer: Any = None, builder: Any = format_siwe_message,
                **fields: Any) -> str:
    """A SIGN-IN-WITH-X header; the message text comes from the reference SDK (siwe) unless the
    fields are ones siwe refuses to format (then the sandbox's builder, proven identical below)."""
    now = time.time()
    info = {"domain": urlsplit(url).netloc, "uri": url, "version": "1", "chainId": NETWORK,
            "type": "eip191", "nonce": secrets.token_hex(8), "issuedAt": iso(now),
            "expirationTime": iso(now + 300)}
    info.update(fields)
    info = {k: v for k, v in info.items() if v is not None}
    message = builder(info, account.address)
    signature = (signer or account).sign_message(encode_defunct(text=message)).signature
    return b64({**info, "address": account.address, "signature": "0x" + bytes(signature).hex()})


class Payer:
    """A wallet talking to one sandbox: quotes, pays, signs in."""

    def __init__(self, sb: Sandbox, http: httpx.Client):
        self.sb, self.http, self.account = sb, http, Account.create()
        self.address = self.account.address

    def quote(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self.http.post(path, json=body)
        assert r.status_code == 402, r.text
        return unb64(r.headers["PAYMENT-REQUIRED"])["accepts"][0]

    def header(self, path: str, body: dict[str, Any], **kw: Any) -> str:
        return sign_payment(self.account, self.quote(path, body), **kw)

    def pay(self, path: str, body: dict[str, Any], **kw: Any) -> httpx.Response:
        return self.http.post(path, json=body, headers={"PAYMENT-SIGNATURE": self.header(path, body, **kw)})

    def generate(self, path: str = NANO, body: dict[str, Any] | None = None) -> str:
        r = self.pay(path, body or {"prompt": "a red fox"})
        assert r.status_code == 200, r.headers.get("PAYMENT-REQUIRED") or r.text
        return r.json()["jobId"]

    def signed(self, method: str, path: str, **kw: Any) -> httpx.Response:
        url = f"{self.sb.url}{path}"
        return self.http.request(method, path, headers={"SIGN-IN-WITH-X": siwx_header(self.account, url)}, **kw)

    def job(self, job_id: str) -> httpx.Response:
        return self.signed("GET", f"/api/jobs/{job_id}")

    def wait(self, job_id: str, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.job(job_id)
            if r.status_code == 200 and r.json()["status"] in ("complete", "failed"):
                return r.json()
            time.sleep(0.01)
        raise AssertionError(f"job {job_id} did not finish in {timeout}s")

    def settlements(self) -> list[dict[str, Any]]:
        return [s for s in self.sb.settlements if s["payer"] == self.address]

    def jobs(self) -> list[Any]:
        return [j for j in self.sb.jobs.values() if j.payer == self.address]


def refusal(r: httpx.Response) -> str:
    assert r.status_code == 402, (r.status_code, r.text)
    return unb64(r.headers["PAYMENT-REQUIRED"]).get("error", "")


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with Sandbox(time_scale=TIME_SCALE, router=False) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def http(sb: Sandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sb.url, timeout=10) as client:
        yield client


@pytest.fixture
def payer(sb: Sandbox, http: httpx.Client) -> Payer:
    return Payer(sb, http)


@contextmanager
def private_sandbox(**kw: Any) -> Iterator[tuple[Sandbox, httpx.Client]]:
    """A private sandbox (for faults and modes) with its own client."""
    kw.setdefault("time_scale", TIME_SCALE)
    kw.setdefault("router", False)
    with Sandbox(**kw) as s, httpx.Client(base_url=s.url, timeout=10) as client:
        yield s, client


# ------------------------------------------------------------------------ payment requirements


def test_unpaid_request_gets_402_with_requirements_in_header(sb: Sandbox, http: httpx.Client) -> None:
    r = http.post(NANO, json={"prompt": "a red fox"})
    assert r.status_code == 402 and r.json() == {}
    assert unb64(r.headers["PAYMENT-REQUIRED"]) == {
        "x402Version": 2,
        "resource": {"url": f"{sb.url}{NANO}", "description": "Nano Banana - generate",
                     "mimeType": "application/json"},
        "accepts": [{"scheme": "exact", "network": NETWORK, "amount": "67000", "asset": ASSET,
                     "payTo": sb.merchant, "maxTimeoutSeconds": 300,
                     "extra": {"name": "USDC", "version": "2"}}],
    }
    # The reference SDK parses it too.
    from x402.http.utils import decode_payment_required_header
    assert decode_payment_required_header(r.headers["PAYMENT-REQUIRED"]).accepts[0].amount == "67000"


def test_price_follows_the_params(http: httpx.Client) -> None:
    route = load().route("nano-banana-pro/generate")
    for size in ("1K", "4K"):
        body = {"prompt": "x", "imageSize": size}
        r = http.post("/api/generate/nano-banana-pro/generate", json=body)
        assert unb64(r.headers["PAYMENT-REQUIRED"])["accepts"][0]["amount"] == str(route.price_atomic(body))
    assert route.price_atomic({"prompt": "x", "imageSize": "4K"}) > route.price_atomic({"prompt": "x"})


def test_omit_extra_leaves_out_extra_and_timeout_and_still_accepts_payment() -> None:
    with private_sandbox(omit_extra=True) as (s, client):
        payer = Payer(s, client)
        req = payer.quote(NANO, {"prompt": "fox"})
        assert "extra" not in req and "maxTimeoutSeconds" not in req
        r = client.post(NANO, json={"prompt": "fox"},
                        headers={"PAYMENT-SIGNATURE": sign_payment(payer.account, req)})
        assert r.status_code == 200


@pytest.mark.parametrize("body, field", [
    ({"prompt": "x", "aspectRatio": "2:1"}, "aspectRatio"),
    ({"aspectRatio": "1:1"}, "prompt"),
    ({"prompt": "x", "colour": "red"}, "colour"),
])
def test_invalid_params_get_400_before_any_payment(sb: Sandbox, payer: Payer, body: dict, field: str) -> None:
    good = payer.header(NANO, {"prompt": "x"})
    for headers in ({}, {"PAYMENT-SIGNATURE": good}):
        r = payer.http.post(NANO, json=body, headers=headers)
        assert r.status_code == 400 and r.json()["field"] == field and r.json()["error"]
    assert payer.settlements() == [] and payer.jobs() == []


def test_bad_json_and_unknown_routes(http: httpx.Client) -> None:
    r = http.post(NANO, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    assert http.post(NANO, json=["prompt"]).status_code == 400
    r = http.post("/api/generate/nano-banana/dance", json={"prompt": "x"})
    assert r.status_code == 404 and "nano-banana/dance" in r.json()["error"]
    assert http.get("/nowhere").json() == {"error": "Not Found"}


# -------------------------------------------------------------------------------- paid jobs


def test_valid_payment_creates_one_job_and_one_settlement_and_a_png(sb: Sandbox, payer: Payer) -> None:
    r = payer.pay(NANO, {"prompt": "a red fox", "aspectRatio": "16:9"})
    assert r.status_code == 200
    body = r.json()
    assert body["type"] == "nano-banana-generate" and body["status"] == "pending" and body["success"] is True
    assert re.fullmatch(r"cm[a-z0-9]{23}", body["jobId"])
    receipt = unb64(r.headers["PAYMENT-RESPONSE"])
    assert receipt["success"] is True and receipt["network"] == NETWORK
    assert receipt["payer"] == payer.address and receipt["amount"] == "67000"
    assert re.fullmatch(r"0x[0-9a-f]{64}", receipt["transaction"])
    [settled] = payer.settlements()
    assert settled["job_id"] == body["jobId"] and settled["transaction"] == receipt["transaction"]
    assert settled["amount"] == "67000" and settled["payTo"] == sb.merchant and settled["asset"] == ASSET
    assert settled["route"] == "nano-banana/generate" and re.fullmatch(r"0x[0-9a-f]{64}", settled["nonce"])
    assert len(payer.jobs()) == 1

    job = payer.wait(body["jobId"])
    assert job["status"] == "complete" and job["id"] == job["jobId"] == body["jobId"]
    assert job["route"] == "nano-banana/generate" and job["type"] == "nano-banana-generate"
    assert job["params"] == {"prompt": "a red fox", "aspectRatio": "16:9"} and "error" not in job
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", job["createdAt"])
    assert job["updatedAt"] >= job["createdAt"]
    image = payer.http.get(job["result"]["imageUrl"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content.startswith(PNG_MAGIC)


def test_video_job_has_a_playable_video_and_a_thumbnail(payer: Payer) -> None:
    job_id = payer.generate("/api/generate/veo-3.1-fast/generate", {"prompt": "waves", "durationSeconds": "4"})
    job = payer.wait(job_id)
    assert job["status"] == "complete" and set(job["result"]) == {"videoUrl", "thumbnailUrl"}
    assert job["result"]["videoUrl"].endswith((".mp4", ".webm"))
    video = payer.http.get(job["result"]["videoUrl"])
    assert video.status_code == 200 and video.headers["content-type"].startswith("video/")
    assert b"ftyp" in video.content[:64] or video.content.startswith(b"\x1a\x45\xdf\xa3")
    thumb = payer.http.get(job["result"]["thumbnailUrl"])
    assert thumb.headers["content-type"] == "image/png" and thumb.content.startswith(PNG_MAGIC)


def _statuses(payer: Payer, job_id: str) -> list[tuple[str, Any]]:
    """Every (status, progress) a job shows, polled every 10 ms until it completes."""
    seen: list[tuple[str, Any]] = []
    deadline = time.monotonic() + 10
    while (not seen or seen[-1][0] != "complete") and time.monotonic() < deadline:
        job = payer.job(job_id).json()
        state = (job["status"], job.get("progress"))
        if not seen or seen[-1] != state:
            seen.append(state)
        time.sleep(0.01)
    return seen


def test_status_goes_pending_loading_with_progress_complete() -> None:
    with private_sandbox(time_scale=10) as (s, client):  # nano-banana: pending for seconds
        payer = Payer(s, client)
        job = payer.job(payer.generate()).json()
        assert job["status"] == "pending" and job["updatedAt"] == job["createdAt"] and "result" not in job
    # As the real service: "loading" with a progress percentage that counts the work, then holds at 99.
    with private_sandbox(time_scale=0.4, timing=Timing(spread=0), router=True) as (s, client):  # exactly 2 s
        payer = Payer(s, client)
        seen = _statuses(payer, payer.generate())
        statuses = [status for status, _ in seen]
        progress = [p for status, p in seen if status == "loading"]
        # The first poll may come after the short pending phase on a loaded machine.
        assert statuses[-1] == "complete" and set(statuses) <= {"pending", "loading", "complete"}
        assert len(progress) > 20 and progress == sorted(progress) and 0 <= progress[0] < 20 and progress[-1] == 99
        assert all(p is None for status, p in seen if status != "loading")


def test_status_in_spec_mode_says_processing_without_progress() -> None:
    with private_sandbox(time_scale=0.3) as (s, client):
        payer = Payer(s, client)
        seen = _statuses(payer, payer.generate())
        assert [status for status, _ in seen] in (["pending", "processing", "complete"], ["processing", "complete"])
        assert all(p is None for _, p in seen)
        assert payer.signed("GET", "/api/jobs?status=processing").status_code == 200


def test_job_durations_spread_around_their_centre_reproducibly() -> None:
    def durations(seed: int, spread: float = 0.2, params: dict | None = None) -> list[float]:
        with private_sandbox(time_scale=1.0, timing=Timing(spread=spread, seed=seed)) as (s, client):
            payer = Payer(s, client)
            ids = [payer.generate(SORA, {"prompt": f"p{i}", **(params or {})}) for i in range(12)]
            return [s.jobs[i].duration_s for i in ids]

    first = durations(1)
    assert first == durations(1) and first != durations(2)  # seeded
    assert 0.55 * 120 < min(first) < max(first) < 1.8 * 120 and max(first) / min(first) > 1.3
    assert statistics.median(first) == pytest.approx(120, rel=0.25)
    assert set(durations(1, spread=0)) == {120.0}
    # Longer outputs take longer: 12 s of video is sqrt(3) times the 4 s default.
    assert durations(1, spread=0, params={"seconds": "12"}) == [pytest.approx(120 * math.sqrt(3))] * 12


def test_timing_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="spread"):
        Timing(spread=2)


# ------------------------------------------------------------------------------ refusals


def _other() -> Any:
    return Account.create()


REFUSALS = {
    "forged signature": (lambda p: {"signer": _other()}, "invalid_signature: recovered"),
    "underpaid (accepted and value)": (lambda p: {"accepted": {"amount": "1000"}, "value": 1000},
                                       "amount_mismatch: expected 67000 got 1000"),
    "underpaid value": (lambda p: {"value": 1000}, "amount_mismatch: expected 67000 got 1000"),
    "expired": (lambda p: {"valid_before": int(time.time()) - 10}, "expired"),
    "too long": (lambda p: {"valid_before": int(time.time()) + 86400}, "valid_before_too_far"),
    "not yet valid": (lambda p: {"valid_after": int(time.time()) + 600}, "not_yet_valid"),
    "wrong network": (lambda p: {"accepted": {"network": "eip155:8453"}}, "wrong_network"),
    "wrong payTo": (lambda p: {"accepted": {"payTo": _other().address}, "to": None}, "wrong_payto"),
    "authorization to someone else": (lambda p: {"to": _other().address}, "wrong_payto"),
    "wrong asset": (lambda p: {"accepted": {"asset": BASE_MAINNET_USDC}}, "wrong_asset"),
    "x402 v1": (lambda p: {"version": 1}, "unsupported_x402_version"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_bad_payments_are_refused_without_job_or_settlement(sb: Sandbox, payer: Payer, case: str) -> None:
    make, reason = REFUSALS[case]
    r = payer.pay(NANO, {"prompt": "x"}, **make(payer))
    assert r.json() == {}
    assert refusal(r).startswith(reason.split(":")[0]) and reason in refusal(r)
    assert unb64(r.headers["PAYMENT-REQUIRED"])["accepts"][0]["amount"] == "67000"  # fresh terms
    assert payer.settlements() == [] and payer.jobs() == []


def test_garbage_payment_header_is_refused(payer: Payer) -> None:
    for header in ("not base64 at all!", b64([1, 2]), b64({"x402Version": 2})):
        r = payer.http.post(NANO, json={"prompt": "x"}, headers={"PAYMENT-SIGNATURE": header})
        assert refusal(r).startswith(("invalid_payment_header", "invalid_payload"))


def test_urlsafe_unpadded_payment_header_is_accepted(payer: Payer) -> None:
    header = payer.header(NANO, {"prompt": "x"})
    mangled = header.rstrip("=").replace("+", "-").replace("/", "_")
    assert payer.http.post(NANO, json={"prompt": "x"}, headers={"PAYMENT-SIGNATURE": mangled}).status_code == 200


def test_replayed_nonce_is_refused_by_default(payer: Payer) -> None:
    header = payer.header(NANO, {"prompt": "x"})
    first = payer.http.post(NANO, json={"prompt": "x"}, headers={"PAYMENT-SIGNATURE": header})
    assert first.status_code == 200
    again = payer.http.post(NANO, json={"prompt": "x"}, headers={"PAYMENT-SIGNATURE": header})
    assert refusal(again).startswith("nonce_already_used")
    assert len(payer.settlements()) == 1 and len(payer.jobs()) == 1


def test_replayed_nonce_answers_the_original_job_in_idempotent_mode() -> None:
    with private_sandbox(replay="idempotent") as (s, client):
        payer = Payer(s, client)
        req = payer.quote(NANO, {"prompt": "x"})
        nonce = "0x" + secrets.token_hex(32)
        header = sign_payment(payer.account, req, nonce=nonce)
        first = client.post(NANO, json={"prompt": "x"}, headers={"PAYMENT-SIGNATURE": header})
        again = client.post(NANO, json={"prompt": "x"}, headers={"PAYMENT-SIGNATURE": header})
        assert first.status_code == again.status_code == 200 and first.json() == again.json()
        assert first.headers["PAYMENT-RESPONSE"] == again.headers["PAYMENT-RESPONSE"]
        # The same nonce in a different authorization is still refused.
        other = sign_payment(payer.account, req, nonce=nonce, valid_before=int(time.time()) + 200)
        r = client.post(NANO, json={"prompt": "x"}, headers={"PAYMENT-SIGNATURE": other})
        assert refusal(r).startswith("nonce_already_used")
        assert len(payer.settlements()) == 1 and len(payer.jobs()) == 1


@pytest.mark.parametrize("replay", ["refuse", "idempotent"])
def test_twenty_concurrent_copies_of_one_payment_settle_once(replay: str) -> None:
    with private_sandbox(replay=replay) as (s, client):
        payer = Payer(s, client)
        header = payer.header(NANO, {"prompt": "x"})

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=s.url, timeout=10) as ac:
                return await asyncio.gather(*(ac.post(NANO, json={"prompt": "x"},
                                                      headers={"PAYMENT-SIGNATURE": header}) for _ in range(20)))

        answers = asyncio.run(burst())
        ok = [r for r in answers if r.status_code == 200]
        assert len(s.settlements) == 1 and len(s.jobs) == 1
        assert {r.json()["jobId"] for r in ok} == {s.settlements[0]["job_id"]}
        if replay == "refuse":
            assert len(ok) == 1
            assert all(refusal(r).startswith("nonce_already_used") for r in answers if r not in ok)
        else:
            assert len(ok) == 20


# ------------------------------------------------------------------------------------- SIWX


@pytest.mark.parametrize("extra", [
    {},
    {"statement": "Sign in to StableStudio sandbox"},
    {"notBefore": "2026-01-01T00:00:00.000Z", "requestId": "req-1",
     "resources": ["http://127.0.0.1:8402/api/jobs", "https://stablestudio.dev/x"]},
    {"statement": "Hi", "expirationTime": None, "requestId": ""},
])
def test_eip4361_message_matches_the_reference_sdk_byte_for_byte(extra: dict) -> None:
    fields = {"domain": "127.0.0.1:8402", "uri": "http://127.0.0.1:8402/api/jobs/cmabc", "version": "1",
              "chainId": NETWORK, "nonce": "a1B2c3D4e5", "issuedAt": "2026-04-06T06:01:19.123Z",
              "expirationTime": "2026-04-06T06:06:19.123Z", **extra}
    fields = {k: v for k, v in fields.items() if v is not None}
    address = Account.create().address
    assert siwe_message(fields, address) == format_siwe_message(fields, address)


def test_missing_siwx_gets_a_challenge(sb: Sandbox, http: httpx.Client) -> None:
    r = http.get("/api/jobs?limit=5")
    assert r.status_code == 402
    challenge = unb64(r.headers["PAYMENT-REQUIRED"])
    assert challenge == r.json()
    assert challenge["x402Version"] == 2 and challenge["accepts"] == [] and challenge["error"]
    assert challenge["resource"] == {"url": f"{sb.url}/api/jobs?limit=5"}
    ext = challenge["extensions"]["sign-in-with-x"]
    info = ext["info"]
    assert info["domain"] == urlsplit(sb.url).netloc and info["uri"] == f"{sb.url}/api/jobs"
    assert info["version"] == "1" and re.fullmatch(r"[A-Za-z0-9]{16,}", info["nonce"])
    assert info["statement"] == "Sign in to StableStudio sandbox"
    assert ext["supportedChains"] == [{"chainId": NETWORK, "type": "eip191"}]
    assert "signature" in ext["schema"]["required"]
    from stablestudio_widgets.sandbox.wire import parse_iso
    assert parse_iso(info["expirationTime"]) - parse_iso(info["issuedAt"]) == pytest.approx(300)


def test_signed_in_requests_ignore_the_query_string(payer: Payer) -> None:
    url = f"{payer.sb.url}/api/jobs"
    for uri in (url, url + "?limit=3"):
        r = payer.http.get("/api/jobs?limit=3", headers={"SIGN-IN-WITH-X": siwx_header(payer.account, uri)})
        assert r.status_code == 200 and r.json() == {"jobs": []}


SIWX_REFUSALS = {
    "wrong domain": ({"domain": "stablestudio.dev"}, "invalid_siwx_domain_mismatch"),
    "wrong uri": ({"uri": "http://127.0.0.1:1/api/jobs/other"}, "invalid_siwx_uri_mismatch"),
    "expired": ({"issuedAt": iso(time.time() - 120), "expirationTime": iso(time.time() - 60)},
                "invalid_siwx_expired"),
    "too old": ({"issuedAt": iso(time.time() - 3600), "expirationTime": iso(time.time() + 3600)},
                "invalid_siwx_issued_at_too_old"),
    "from the future": ({"issuedAt": iso(time.time() + 600)}, "invalid_siwx_issued_at_in_future"),
    "not yet valid": ({"notBefore": iso(time.time() + 600)}, "invalid_siwx_not_yet_valid"),
    "wrong chain": ({"chainId": "eip155:1"}, "invalid_siwx_unsupported_chain"),
    "short nonce": ({"nonce": "abc", "builder": siwe_message}, "invalid_siwx_nonce"),
    "bad signature": ({"signer": "other"}, "invalid_siwx_signature"),
}


@pytest.mark.parametrize("case", list(SIWX_REFUSALS))
def test_bad_sign_ins_are_refused(payer: Payer, case: str) -> None:
    job_id = payer.generate()
    fields, reason = SIWX_REFUSALS[case]
    fields = dict(fields)
    if fields.pop("signer", None):
        fields["signer"] = _other()
    url = f"{payer.sb.url}/api/jobs/{job_id}"
    r = payer.http.get(f"/api/jobs/{job_id}", headers={"SIGN-IN-WITH-X": siwx_header(payer.account, url, **fields)})
    assert refusal(r).startswith(reason)
    assert r.json()["extensions"]["sign-in-with-x"]["info"]["uri"] == url


def test_siwx_max_age_is_a_fault_setting() -> None:
    with private_sandbox(faults=Faults(siwx_max_age_s=2)) as (s, client):
        account, url = Account.create(), f"{s.url}/api/jobs"
        old = siwx_header(account, url, issuedAt=iso(time.time() - 5))
        assert refusal(client.get("/api/jobs", headers={"SIGN-IN-WITH-X": old})).startswith(
            "invalid_siwx_issued_at_too_old")
        assert client.get("/api/jobs", headers={"SIGN-IN-WITH-X": siwx_header(account, url)}).status_code == 200


# ----------------------------------------------------------------------- ownership and listing


def test_jobs_are_visible_only_to_their_payer(sb: Sandbox, http: httpx.Client) -> None:
    alice, bob = Payer(sb, http), Payer(sb, http)
    a_jobs = [alice.generate(body={"prompt": f"fox {i}"}) for i in range(3)]
    b_job = bob.generate()
    assert alice.job(b_job).status_code == 404 and bob.job(a_jobs[0]).status_code == 404
    assert bob.job(b_job).status_code == 200
    for job_id in a_jobs:
        alice.wait(job_id)
    listed = alice.signed("GET", "/api/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == a_jobs[::-1]  # newest first, only Alice's
    assert [j["id"] for j in alice.signed("GET", "/api/jobs?limit=2").json()["jobs"]] == a_jobs[:0:-1]
    assert len(alice.signed("GET", "/api/jobs?status=complete").json()["jobs"]) == 3
    assert alice.signed("GET", "/api/jobs?status=failed").json()["jobs"] == []
    assert alice.signed("GET", "/api/jobs?limit=0").status_code == 400
    assert alice.signed("GET", "/api/jobs?status=done").status_code == 400
    assert bob.signed("DELETE", f"/api/jobs/{a_jobs[0]}").status_code == 404


def test_delete_refuses_running_jobs_and_removes_finished_ones() -> None:
    with private_sandbox(time_scale=1.0) as (s, client):  # nano-banana stays running for 5 s
        payer = Payer(s, client)
        running = payer.generate()
        r = payer.signed("DELETE", f"/api/jobs/{running}")
        assert r.status_code == 409 and "still" in r.json()["error"]
    with private_sandbox() as (s, client):
        payer = Payer(s, client)
        job = payer.wait(payer.generate())
        assert payer.signed("DELETE", f"/api/jobs/{job['id']}").json() == {"success": True}
        assert payer.job(job["id"]).status_code == 404
        assert client.get(job["result"]["imageUrl"]).status_code == 404


# ------------------------------------------------------------------------------------ uploads


def _png(colour: tuple[int, int, int]) -> bytes:
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buf, "PNG")
    return buf.getvalue()


def _upload(payer: Payer, data: bytes, filename: str = "cat.png") -> tuple[dict[str, Any], str]:
    r = payer.pay("/api/upload", {"filename": filename, "contentType": "image/png"})
    assert r.status_code == 200, r.headers.get("PAYMENT-REQUIRED")
    up = r.json()
    put = payer.http.put(f"/api/blob/?pathname={up['pathname']}", content=data,
                         headers={"authorization": f"Bearer {up['clientToken']}", "x-content-type": "image/png",
                                  "x-api-version": "11"})
    assert put.status_code == 200, put.text
    return up, put.json()["url"]


def test_upload_flow_end_to_end_and_an_edit_using_the_blob(sb: Sandbox, payer: Payer,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    data = _png((200, 30, 30))
    r = payer.pay("/api/upload", {"filename": "cat.png", "contentType": "image/png"})
    assert r.status_code == 200 and set(r.json()) == {"uploadId", "clientToken", "pathname", "expiresAt"}
    up = r.json()
    uuid.UUID(up["uploadId"])
    assert up["clientToken"].startswith("vercel_blob_client_")
    assert up["pathname"] == f"uploads/{up['uploadId']}/cat.png"
    [settled] = payer.settlements()
    assert settled["upload_id"] == up["uploadId"] and settled["amount"] == "10000" and settled["route"] == "upload"

    blob_path = f"/api/blob/?pathname={up['pathname']}"
    headers = {"x-content-type": "image/png", "x-api-version": "11"}
    bad = payer.http.put(blob_path, content=data, headers={**headers, "authorization": "Bearer vercel_blob_x"})
    assert bad.status_code == 403
    put = payer.http.put(blob_path, content=data, headers={**headers, "authorization": f"Bearer {up['clientToken']}"})
    assert put.status_code == 200 and put.json()["url"] == f"{sb.url}/blob/{up['pathname']}"
    blob_url = put.json()["url"]
    assert payer.http.get(blob_url).content == data

    confirm_body = {"uploadId": up["uploadId"], "blobUrl": blob_url}
    stranger = Payer(sb, payer.http)
    assert stranger.signed("POST", "/api/upload/confirm", json=confirm_body).status_code == 404
    r = payer.signed("POST", "/api/upload/confirm", json=confirm_body)
    assert r.json() == {"success": True, "upload": {"id": up["uploadId"], "blobUrl": blob_url}}

    from stablestudio_widgets.sandbox import media
    seen: list[list[bytes]] = []
    original = media.render_image

    def spy(**kw: Any) -> bytes:
        seen.append(list(kw["inputs"]))
        return original(**kw)

    monkeypatch.setattr(media, "render_image", spy)
    job = payer.wait(payer.generate("/api/generate/nano-banana/edit", {"prompt": "make it blue",
                                                                        "images": [blob_url]}))
    assert job["status"] == "complete" and payer.http.get(job["result"]["imageUrl"]).content.startswith(PNG_MAGIC)
    external = payer.wait(payer.generate("/api/generate/nano-banana/edit", {
        "prompt": "x", "images": ["https://example.invalid/cat.png"]}))
    assert external["status"] == "complete"
    assert seen == [[data], []]  # own blobs are read, external URLs are never fetched


def test_upload_params_are_validated_and_blobs_are_size_limited() -> None:
    with private_sandbox(blob_limit_bytes=1000) as (s, client):
        payer = Payer(s, client)
        r = client.post("/api/upload", json={"filename": "cat.png", "contentType": "text/html"})
        assert r.status_code == 400 and r.json()["field"] == "contentType"
        r = client.post("/api/upload", json={"filename": "../etc/passwd", "contentType": "image/png"})
        assert r.status_code == 400 and r.json()["field"] == "filename"
        up = payer.pay("/api/upload", {"filename": "big.png", "contentType": "image/png"}).json()
        put = client.put(f"/api/blob/?pathname={up['pathname']}", content=b"x" * 1001,
                         headers={"authorization": f"Bearer {up['clientToken']}", "x-api-version": "11"})
        assert put.status_code == 413
        confirm = payer.signed("POST", "/api/upload/confirm",
                               json={"uploadId": up["uploadId"], "blobUrl": f"{s.url}/blob/{up['pathname']}"})
        assert confirm.status_code == 409  # nothing was uploaded


# ------------------------------------------------------------------------------------- faults


def test_new_jobs_answer_404_during_the_poll_404_window() -> None:
    with private_sandbox(faults=Faults(poll_404_s=0.3)) as (s, client):
        payer = Payer(s, client)
        started = time.monotonic()
        job_id = payer.generate()
        assert payer.job(job_id).status_code == 404
        assert payer.signed("GET", "/api/jobs").json()["jobs"] == []
        payer.wait(job_id)
        assert time.monotonic() - started >= 0.3


def test_fail_rate_one_fails_every_job_after_payment() -> None:
    with private_sandbox(faults=Faults(fail_rate=1.0)) as (s, client):
        payer = Payer(s, client)
        job = payer.wait(payer.generate())
        assert job["status"] == "failed" and job["error"] in JOB_ERRORS and "result" not in job
        assert len(payer.settlements()) == 1


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_injected_errors_come_before_payment_and_never_settle(status: int) -> None:
    with private_sandbox(faults=Faults(error_rate=1.0, error_status=status, retry_after_s=2)) as (s, client):
        payer = Payer(s, client)
        s.set_faults(error_rate=0.0)
        header = payer.header(NANO, {"prompt": "x"})
        s.set_faults(error_rate=1.0)
        r = client.post(NANO, json={"prompt": "x"}, headers={"PAYMENT-SIGNATURE": header})
        assert r.status_code == status and r.json()["error"]
        assert (r.headers.get("Retry-After") == "2") is (status in (429, 503))
        assert s.settlements == [] and s.jobs == {}
        s.set_faults(error_rate=0.0)  # the same signed payment is still good: it was never used
        assert client.post(NANO, json={"prompt": "x"}, headers={"PAYMENT-SIGNATURE": header}).status_code == 200


def test_reset_drops_the_connection_after_settling() -> None:
    with private_sandbox(faults=Faults(drop_after_settle_rate=1.0, drop_mode="reset")) as (s, client):
        payer = Payer(s, client)
        header = payer.header(NANO, {"prompt": "x"})
        with pytest.raises(httpx.TransportError):
            client.post(NANO, json={"prompt": "x"}, headers={"PAYMENT-SIGNATURE": header})
        [settled] = s.settlements
        assert settled["job_id"] in s.jobs
        s.set_faults(drop_after_settle_rate=0.0)
        retry = client.post(NANO, json={"prompt": "x"}, headers={"PAYMENT-SIGNATURE": header})
        assert refusal(retry).startswith("nonce_already_used")
        payer.wait(settled["job_id"])
        assert [j["id"] for j in payer.signed("GET", "/api/jobs").json()["jobs"]] == [settled["job_id"]]
        assert len(s.settlements) == 1


def test_reset_then_idempotent_retry_returns_the_job() -> None:
    faults = Faults(drop_after_settle_rate=1.0, drop_mode="reset")
    with private_sandbox(faults=faults, replay="idempotent") as (s, client):
        payer = Payer(s, client)
        header = payer.header(NANO, {"prompt": "x"})
        with pytest.raises(httpx.TransportError):
            client.post(NANO, json={"prompt": "x"}, headers={"PAYMENT-SIGNATURE": header})
        retry = client.post(NANO, json={"prompt": "x"}, headers={"PAYMENT-SIGNATURE": header})
        assert retry.status_code == 200 and retry.json()["jobId"] == s.settlements[0]["job_id"]
        assert len(s.settlements) == 1 and len(s.jobs) == 1


def test_5xx_and_delay_after_settle() -> None:
    with private_sandbox(faults=Faults(drop_after_settle_rate=1.0, drop_mode="5xx")) as (s, client):
        r = Payer(s, client).pay(NANO, {"prompt": "x"})
        assert r.status_code == 502 and "PAYMENT-RESPONSE" not in r.headers
        assert len(s.settlements) == 1 and len(s.jobs) == 1
    with private_sandbox(faults=Faults(drop_after_settle_rate=1.0, drop_mode="delay", delay_s=0.6)) as (s, client):
        payer = Payer(s, client)
        with pytest.raises(httpx.ReadTimeout):
            client.post(NANO, json={"prompt": "x"}, timeout=0.3,
                        headers={"PAYMENT-SIGNATURE": payer.header(NANO, {"prompt": "x"})})
        until(lambda: len(s.settlements) == 1)  # the server carries on after the client gave up
        started = time.monotonic()
        assert payer.pay(NANO, {"prompt": "y"}).status_code == 200
        assert time.monotonic() - started >= 0.6


def test_fault_dice_are_reproducible_with_a_seed() -> None:
    def fates() -> list[int]:
        with private_sandbox(faults=Faults(error_rate=0.5, seed=7)) as (_, client):
            return [client.post(NANO, json={"prompt": "x"}).status_code for _ in range(16)]

    first = fates()
    assert first == fates() and set(first) == {402, 503}


def test_admin_api() -> None:
    with private_sandbox() as (s, client):
        Payer(s, client).generate()
        assert client.get("/_sandbox/ledger").json() == {"settlements": s.settlements}
        state = client.get("/_sandbox/state").json()
        assert state["settlements"] == 1 and state["merchant"] == s.merchant and state["mode"]["replay"] == "refuse"
        r = client.post("/_sandbox/faults", json={"fail_rate": 1, "seed": 3})
        assert r.status_code == 200 and s.faults.fail_rate == 1 and s.faults.seed == 3
        assert client.post("/_sandbox/faults", json={"fail_rat": 1}).status_code == 400
        assert client.post("/_sandbox/faults", json={"drop_mode": "explode"}).status_code == 400
        assert client.get("/_sandbox/faults").json()["faults"]["fail_rate"] == 1


# ------------------------------------------------------------------------------------ interop


def test_reference_sdk_client_pays_and_signs_in(sb: Sandbox) -> None:
    from x402 import x402Client
    from x402.extensions.sign_in_with_x import create_siwx_client_hook
    from x402.http import x402HTTPClient
    from x402.http.clients.httpx import x402AsyncTransport
    from x402.http.utils import decode_payment_response_header
    from x402.mechanisms.evm.exact import register_exact_evm_client

    account = Account.create()

    async def run() -> tuple[httpx.Response, httpx.Response]:
        payments = register_exact_evm_client(x402Client(), account, networks=NETWORK)
        async with httpx.AsyncClient(transport=x402AsyncTransport(payments), timeout=10) as paying:
            paid = await paying.post(f"{sb.url}/api/generate/grok/generate", json={"prompt": "a lighthouse"})
        job_id = paid.json()["jobId"]
        signing = x402HTTPClient(x402Client()).on_payment_required(create_siwx_client_hook(account))
        async with httpx.AsyncClient(transport=x402AsyncTransport(signing), timeout=10) as signed:
            deadline = time.monotonic() + 15
            while True:
                polled = await signed.get(f"{sb.url}/api/jobs/{job_id}")
                if polled.json().get("status") == "complete" or time.monotonic() > deadline:
                    return paid, polled
                await asyncio.sleep(0.01)

    paid, polled = asyncio.run(run())
    assert paid.status_code == 200
    receipt = decode_payment_response_header(paid.headers["PAYMENT-RESPONSE"])
    assert receipt.success and receipt.payer == account.address
    assert [s["job_id"] for s in sb.settlements if s["payer"] == account.address] == [paid.json()["jobId"]]
    assert polled.status_code == 200 and polled.json()["status"] == "complete"


def test_in_process_asgi_app_works_without_a_server() -> None:
    sb = Sandbox(time_scale=TIME_SCALE, router=False)
    account = Account.create()

    async def run() -> None:
        transport = httpx.ASGITransport(app=sb.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            r = await client.post(NANO, json={"prompt": "x"})
            header = sign_payment(account, unb64(r.headers["PAYMENT-REQUIRED"])["accepts"][0])
            job_id = (await client.post(NANO, json={"prompt": "x"},
                                        headers={"PAYMENT-SIGNATURE": header})).json()["jobId"]
            url = f"http://testserver/api/jobs/{job_id}"
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                job = (await client.get(url, headers={"SIGN-IN-WITH-X": siwx_header(account, url)})).json()
                if job["status"] == "complete":
                    break
                await asyncio.sleep(0.01)
            assert job["result"]["imageUrl"].startswith("http://testserver/media/")
            sb.set_faults(drop_after_settle_rate=1.0)
            with pytest.raises(httpx.TransportError):
                await client.post(NANO, json={"prompt": "x"}, headers={
                    "PAYMENT-SIGNATURE": sign_payment(account, unb64(r.headers["PAYMENT-REQUIRED"])["accepts"][0])})

    asyncio.run(run())
    assert len(sb.settlements) == 2 and len(sb.jobs) == 2


# ---------------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_starts_serves_and_stops_cleanly(sig: signal.Signals) -> None:
    with sandbox_process("--time-scale", "0.01") as (proc, out, url):
        assert f"STABLESTUDIO_BASE_URL={url}" in out
        assert re.search(r"STABLESTUDIO_PRIVATE_KEY=0x[0-9a-f]{64}", out) and "worthless" in out
        assert re.search(r"address: 0x[0-9a-fA-F]{40}", out)
        assert httpx.post(url + NANO, json={"prompt": "x"}).status_code == 402
        proc.send_signal(sig)
        assert proc.wait(timeout=15) == 0
        assert "Traceback" not in proc.stderr.read()  # type: ignore[union-attr]
