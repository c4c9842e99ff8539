"""The client against the sandbox on loopback: real HTTP, real signatures, real verification."""

from __future__ import annotations

import asyncio
import io
import time
from datetime import datetime, timezone

import httpx
import pytest
from PIL import Image

from stablestudio_widgets import (
    AsyncStableStudio,
    BudgetExceeded,
    ConfirmationRequired,
    InvalidParams,
    JobFailed,
    JobNotFound,
    JobTimeout,
    PolicyViolation,
    StableStudio,
    StableStudioError,
    Wallet,
)
from stablestudio_widgets.catalog import load
from stablestudio_widgets.sandbox import Faults, Sandbox
from stablestudio_widgets.widgets.records import job_record

pytestmark = pytest.mark.anyio
CATALOG = load()


def png(tmp_path, name="in.png", colour=(200, 30, 30), size=(64, 48)):
    p = tmp_path / name
    Image.new("RGB", size, colour).save(p)
    return p


def valid_params(route, tmp_path):
    """Non-default allowed values for every parameter (short of 4K pictures, slow to render on two
    cores); local files for image inputs."""
    params = {}
    for p in route.params.values():
        if p.name == "prompt":
            params["prompt"] = f"a lighthouse in a storm for {route.id}"
        elif p.type == "enum":
            params[p.name] = [v for v in p.values if v not in ("4K", "4 MP")][-1]
        elif p.type == "boolean":
            params[p.name] = not p.default
        elif p.type == "integer":
            params[p.name] = p.maximum
        elif p.type == "url" and p.required:
            params[p.name] = png(tmp_path, f"{p.name}.png")
        elif p.type == "url_list":
            params[p.name] = [png(tmp_path, "a.png"), png(tmp_path, "b.png", (20, 20, 200))]
    return params


async def test_every_route_end_to_end(make_client, sandbox, tmp_path, transport):
    """All 27 routes, concurrently: uploads for image inputs, payment, polling, real media."""
    assert len(CATALOG.routes) == 27
    ss = make_client(max_usd_per_request=20)
    calls = {r.id: valid_params(r, tmp_path) for r in CATALOG.routes.values()}
    jobs = await asyncio.gather(*(ss.submit(rid, params, confirm=True) for rid, params in calls.items()))
    # ~15 s of video rendering on two cores: give a busy machine time (timeouts are tested elsewhere).
    results = await asyncio.gather(*(j.wait(timeout=180) for j in jobs))
    async with httpx.AsyncClient() as http:
        for job, res in zip(jobs, results, strict=True):
            body = (await http.get(res.url)).content
            if job.route.operation == "vectorize":
                assert body.startswith(b"<svg "), job.route.id
            elif job.route.media == "image":
                assert body[:8] == b"\x89PNG\r\n\x1a\n", job.route.id
            else:
                assert res.thumbnail_url and len(body) > 1000, job.route.id
            assert job.amount == job.route.price_atomic(job.params), job.route.id
    uploads = sum(len(v) if isinstance(v, list) else 1 for params in calls.values() for v in params.values()
                  if not isinstance(v, (str, bool, int)))
    assert sum(len(j.uploads) for j in jobs) == uploads  # every image listed on its job, paid or reused
    paid_uploads = [u for j in jobs for u in j.uploads if not u["reused"]]
    assert len(sandbox.settlements) == 27 + len(paid_uploads)
    assert all(u["cost_usd"] == paid_uploads[0]["cost_usd"] > 0 for u in paid_uploads)
    assert len({s["nonce"] for s in sandbox.settlements}) == len(sandbox.settlements)
    assert ss.ledger.spent_atomic() == sum(int(s["amount"]) for s in sandbox.settlements)
    assert sandbox.jobs[jobs[0].id].params["prompt"] == jobs[0].prompt


@pytest.mark.parametrize("route_id", sorted(CATALOG.routes))
async def test_every_route_quote_is_exact_and_free(make_client, sandbox, route_id, tmp_path):
    ss = make_client()
    route = CATALOG.route(route_id)
    q = await ss.quote(route_id, **valid_params(route, tmp_path))
    params = route.validate(valid_params(route, tmp_path), uploadable=True)
    assert q.amount == route.price_atomic(params) and q.network == "eip155:84532"
    assert sandbox.settlements == [] and ss.stats["signatures"] == 0


@pytest.mark.parametrize("route_id", sorted(CATALOG.routes))
async def test_every_route_invalid_input_sends_nothing(make_client, route_id, transport, tmp_path):
    ss = make_client()
    route = CATALOG.route(route_id)
    good = valid_params(route, tmp_path)
    enum = next(p for p in route.params.values() if p.type in ("enum", "boolean", "url_list"))
    bad_value = {"enum": "nope", "boolean": "yes", "url_list": [png(tmp_path)] * ((enum.max_items or 1) + 1)}
    needed = next(p.name for p in route.params.values() if p.required)
    cases = [
        ({**good, "colour": "red"}, "colour"),
        ({k: v for k, v in good.items() if k != needed}, needed),
        ({**good, enum.name: bad_value[enum.type]}, enum.name),
    ]
    if "prompt" in route.params:
        cases.append(({**good, "prompt": "   "}, "prompt"))
    number = next((p for p in route.params.values() if p.type == "integer"), None)
    if number is not None:
        cases.append(({**good, number.name: number.maximum + 1}, number.name))
    for params, field in cases:
        with pytest.raises(InvalidParams) as e:
            await ss.submit(route_id, params)
        assert e.value.field == field and field in str(e.value) and "Nothing was paid" in str(e.value)
    assert transport.total == 0 and ss.stats["signatures"] == 0


def test_invalid_messages_name_allowed_values():
    r = CATALOG.route("nano-banana-pro/edit")
    with pytest.raises(InvalidParams, match="at most 14 images") as e:
        r.validate({"prompt": "x", "images": ["https://x/1.png"] * 15})
    assert e.value.allowed == [14]
    with pytest.raises(InvalidParams, match=r"allowed: 1K, 2K, 4K") as e:
        r.validate({"prompt": "x", "images": ["https://x/1.png"], "imageSize": "8K"})
    assert e.value.allowed == ["1K", "2K", "4K"]
    with pytest.raises(InvalidParams, match="did you mean 'aspectRatio'"):
        CATALOG.route("nano-banana/generate").validate({"prompt": "x", "aspect_ratio": "1:1"})
    assert CATALOG.route("wan-2.6/t2v").validate({"prompt": "x", "duration": 5}) == {"prompt": "x", "duration": "5"}
    with pytest.raises(InvalidParams, match="did you mean 'nano-banana'"):
        CATALOG.generate_route("nano-bananna")


def test_service_job_types_map_to_routes():
    from stablestudio_widgets.tracker import route_from_type as _route_from_type
    assert _route_from_type(CATALOG, "nano-banana-pro-generate") == "nano-banana-pro/generate"
    assert _route_from_type(CATALOG, "sora-2-video") == "sora-2/generate"  # as the real service answered
    assert _route_from_type(CATALOG, "sora-2-pro-video") == "sora-2-pro/generate"
    assert _route_from_type(CATALOG, "seedance-video") is None  # two routes: ambiguous, so unknown
    assert _route_from_type(CATALOG, None) is None


def test_model_intent_picks_routes():
    assert CATALOG.generate_route("nano-banana").id == "nano-banana/generate"
    assert CATALOG.generate_route("wan-2.6").id == "wan-2.6/t2v"
    assert CATALOG.generate_route("seedance", with_image=True).id == "seedance/i2v"
    assert CATALOG.generate_route("veo-3.1", with_image=True).id == "veo-3.1/generate"
    assert CATALOG.edit_route("flux-2-pro").id == "flux-2-pro/edit"
    with pytest.raises(InvalidParams, match="use ss.edit"):
        CATALOG.generate_route("grok", with_image=True)
    with pytest.raises(InvalidParams, match="no edit route"):
        CATALOG.edit_route("sora-2")


async def test_learned_terms_pay_in_one_round_trip(make_client, transport):
    ss = make_client()
    first = await ss.generate("nano-banana", "a red fox")
    n = transport.total
    second = await ss.generate("nano-banana", "a blue fox", aspectRatio="9:16")
    assert transport.total - n == 1 and transport.log[-1] == ("POST", "/api/generate/nano-banana/generate", True)
    assert first.id != second.id
    # A different price point of a route is learned separately (never signs a wrong amount).
    await ss.generate("nano-banana-pro", "x", imageSize="4K")
    n = transport.total
    await ss.generate("nano-banana-pro", "y", imageSize="1K")
    assert transport.total - n == 2


async def test_concurrent_first_requests_learn_terms_once(make_client, transport):
    ss = make_client()
    await asyncio.gather(*(ss.generate("grok", f"crowd {i}") for i in range(10)))
    unpaid = [p for m, p, paid in transport.log if m == "POST" and not paid]
    assert unpaid == ["/api/generate/grok/generate"] and len(transport.paid_posts()) == 10


async def test_fresh_402_means_sign_again_once(make_client, sandbox, transport):
    ss = make_client()
    await ss.generate("grok", "first")
    key = next(k for k in ss.payments.terms if k[0] == "grok/generate")
    stale = ss.payments.terms[key]
    # The price went up since we learned it: our cached terms are now wrong.
    from dataclasses import replace
    stale.requirement = replace(stale.requirement, amount=stale.requirement.amount - 1,
                                raw={**stale.requirement.raw, "amount": str(stale.requirement.amount - 1)})
    job = await ss.generate("grok", "second")
    assert job.amount == 70000
    statuses = [p["status"] for p in ss.ledger.payments()]
    assert statuses == ["settled", "refused", "settled"]
    assert len(sandbox.settlements) == 2
    # The refused authorization is still valid: it counts until it expires.
    assert ss.spending.held == 69999 and ss.ledger.spent_atomic() == 2 * 70000 + 69999


@pytest.mark.parametrize("mode", ["reset", "5xx", "delay"])
async def test_dropped_answer_after_settlement_never_pays_twice(make_client, sandbox, mode):
    sandbox.set_faults(drop_after_settle_rate=1.0, drop_mode=mode, delay_s=1.0)
    ss = make_client(timeout=0.3)
    job = await ss.generate("nano-banana", "dropped answer")
    sandbox.set_faults(drop_after_settle_rate=0.0)
    await job.wait()
    assert len(sandbox.settlements) == 1 and sandbox.settlements[0]["job_id"] == job.id
    (payment,) = ss.ledger.payments()
    assert payment["status"] == "settled" and payment["job_id"] == job.id
    assert ss.stats["signatures"] == 1


async def test_unanswered_paid_request_is_resumable_never_retryable(make_client, sandbox):
    """Every re-send of the signed payment gets no answer: the card must offer Resume, not Retry
    (a retry would sign a second payment for what may already be paid)."""
    ss = make_client(max_retries=1)
    await ss.quote("grok", prompt="x")  # terms learned while the service still answers
    sandbox.set_faults(error_rate=1.0, error_status=502)  # from now on nothing answers, nothing settles
    job = ss.tracker.new_job("grok/generate", {"prompt": "lost answer"})
    with pytest.raises(StableStudioError) as e:
        await ss.submit("grok/generate", {"prompt": "lost answer"}, job=job)
    assert "may have settled" in str(e.value) and e.value.paid_usd == 0.07
    rec = job_record(job)["error"]
    assert rec["resumable"] and not rec["retryable"]
    assert [p["status"] for p in ss.ledger.payments()] == ["uncertain"] and sandbox.settlements == []
    sandbox.set_faults(error_rate=0.0)
    await ss.resume()  # the authorization is still valid: re-sent with the same nonce, it settles once
    assert len(sandbox.settlements) == 1 and ss.ledger.payments()[0]["status"] == "settled"


async def test_idempotent_replay_returns_the_original_job(tmp_path):
    with Sandbox(time_scale=0.002, replay="idempotent",
                 faults=Faults(drop_after_settle_rate=1.0, drop_mode="5xx")) as sb:
        ss = AsyncStableStudio(sb.url, Wallet.generate(), ledger=tmp_path / "l.db", time_scale=0.002)
        job = await ss.generate("grok", "replayed")
        assert job.receipt is None or job.receipt.success
        assert len(sb.settlements) == 1 and sb.settlements[0]["job_id"] == job.id
        await ss.aclose()


async def test_429_before_payment_is_retried_without_signing_twice(make_client, sandbox):
    sandbox.set_faults(error_rate=0.5, error_status=429, retry_after_s=0, seed=3)
    ss = make_client()
    jobs = [await ss.generate("grok", f"busy {i}") for i in range(6)]
    sandbox.set_faults(error_rate=0.0)
    await asyncio.gather(*(j.wait() for j in jobs))
    assert len(sandbox.settlements) == 6 == ss.stats["signatures"]


async def test_polls_through_404_grace_window(make_client, sandbox):
    sandbox.set_faults(poll_404_s=0.03)  # well within the 30 s × 0.01 = 300 ms grace, even on a busy machine
    ss = make_client(time_scale=0.01)
    job = await ss.generate("nano-banana", "late visibility")
    res = await job.wait()
    assert res.url.endswith(".png")


async def test_job_not_found_after_grace(make_client, sandbox):
    sandbox.set_faults(poll_404_s=10)
    ss = make_client()
    job = await ss.generate("nano-banana", "never visible")
    with pytest.raises(JobNotFound) as e:
        await job.wait()
    assert e.value.job_id == job.id and "ledger" in str(e.value) and "$0.067" in str(e.value)
    assert ss.ledger.job(job.id)["status"] == "lost"


async def test_failed_job_raises_with_id_and_cost(make_client, sandbox):
    sandbox.set_faults(fail_rate=1.0)
    ss = make_client()
    job = await ss.generate("grok", "doomed")
    with pytest.raises(JobFailed) as e:
        await job.wait()
    assert e.value.job_id == job.id and "$0.07" in str(e.value) and "Generation failed" in str(e.value)
    assert job_record(job)["error"]["retryable"] is True


async def test_timeout_keeps_job_resumable(make_client):
    ss = make_client()
    job = await ss.generate("wan-2.6", "slow video")
    with pytest.raises(JobTimeout) as e:
        await job.wait(timeout=0.01)
    assert e.value.job_id == job.id and "resume" in str(e.value)
    assert job_record(job)["error"]["resumable"]
    res = await job.wait()
    assert res.media == "video"


async def test_siwx_challenge_answered_when_our_proof_is_refused(tmp_path):
    """A spec-mode server that finds our own proof too old (it is backdated a few seconds) answers
    with a challenge: we check it, sign exactly it, and carry on: two signatures per request."""
    with Sandbox(time_scale=0.002, router=False, faults=Faults(siwx_max_age_s=2)) as sb:
        ss = AsyncStableStudio(sb.url, Wallet.generate(), ledger=tmp_path / "l.db", time_scale=0.002)
        await ss.generate("grok", "fresh sign-in please")
        assert len(await ss.jobs()) == 1 and ss.stats["siwx_signatures"] == 2
        signed = ss.service.siwx_signed[sb.url + "/api/jobs"]
        assert signed["statement"] == "Sign in to StableStudio sandbox"  # the challenge's, signed as sent
        await ss.aclose()


async def test_jobs_list_and_delete(make_client, sandbox):
    sandbox.set_faults(fail_rate=1.0)
    ss = make_client()
    job = await ss.generate("grok", "to delete")
    with pytest.raises(JobFailed):
        await job.wait()
    listed = await ss.jobs(limit=5, status="failed")
    assert [j.id for j in listed] == [job.id]
    await ss.delete_job(job.id)
    assert await ss.jobs() == []
    other = make_client()  # another wallet sees nothing
    assert await other.jobs() == []
    with pytest.raises(JobNotFound):
        await other.job(job.id)


async def test_upload_pil_image_and_edit(make_client, sandbox):
    ss = make_client()
    img = Image.new("RGB", (80, 60), (10, 200, 10))
    job = await ss.edit("flux-2-pro", "make it blue", images=[img])
    assert job.params["images"][0].startswith(sandbox.url + "/blob/")
    res = await job.wait()
    assert Image.open(io.BytesIO(await res.aread())).size[0] > 0
    kinds = sorted(p["kind"] for p in ss.ledger.payments())
    assert kinds == ["generate", "upload"]


async def test_budget_and_confirmation_refuse_before_signing(make_client, sandbox, transport):
    ss = make_client(budget_usd=0.10)
    await ss.generate("grok", "fits")  # $0.07
    with pytest.raises(BudgetExceeded, match=r"only \$0.03 of the session budget") as e:
        await ss.generate("grok", "does not fit")
    assert e.value.limit == "budget_usd"
    ss2 = make_client()
    with pytest.raises(ConfirmationRequired, match="confirm=True"):
        await ss2.generate("veo-3.1", "pricey")
    ss3 = make_client(max_usd_per_request=0.5)
    with pytest.raises(BudgetExceeded, match="per-request cap"):
        await ss3.generate("veo-3.1", "too pricey", confirm=True)
    assert len(sandbox.settlements) == 1 and ss.stats["signatures"] == 1
    assert ss2.stats["signatures"] == ss3.stats["signatures"] == 0


async def test_quote_counts_uploads_of_local_images(make_client, tmp_path):
    ss = make_client()
    q = await ss.quote("flux-2-pro/edit", prompt="x", images=[png(tmp_path), "https://example.com/a.png",
                                                              png(tmp_path, "b.png")], resolution="2 MP")
    assert (q.amount, q.uploads, q.upload_amount) == (60000, 2, 10000)
    assert q.total_usd == pytest.approx(0.08) and "2 upload(s) = $0.08" in repr(q)


async def test_dry_run_shows_exact_costs_and_pays_nothing(make_client, sandbox, tmp_path):
    ss = make_client()
    q = await ss.generate("sora-2", "a dry run", seconds="12", dry_run=True)
    assert (q.route, q.amount) == ("sora-2/generate", 1_200_000)
    dry = make_client(dry_run=True)
    batch = [await dry.edit("grok", "x", images=[png(tmp_path)]), await dry.generate("veo-3.1", "y")]
    assert [b.total_usd for b in batch] == [pytest.approx(0.032), pytest.approx(3.2)]
    assert sandbox.settlements == [] and ss.stats["signatures"] == dry.stats["signatures"] == 0


async def test_service_style_402_without_extra_pays_end_to_end(tmp_path):
    """The real service omits extra and maxTimeoutSeconds: we fill the defaults and pay."""
    with Sandbox(time_scale=0.002, omit_extra=True) as sb:
        ss = AsyncStableStudio(sb.url, Wallet.generate(), ledger=tmp_path / "l.db", time_scale=0.002)
        job = await ss.generate("grok", "no extra")
        terms = next(iter(ss.payments.terms.values())).requirement
        assert terms.extra == {} and "maxTimeoutSeconds" not in terms.raw and terms.max_timeout_seconds == 300
        assert (await job.wait()).url and len(sb.settlements) == 1
        await ss.aclose()


async def test_sign_in_challenge_for_another_domain_is_refused(tmp_path):
    """A peer whose job route challenges us for evil.example gets no signature."""
    import base64
    import json as _json

    seen = []

    def peer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("sign-in-with-x"))
        body = {"x402Version": 2, "accepts": [], "extensions": {"sign-in-with-x": {
            "info": {"domain": "evil.example", "uri": "https://evil.example/api/jobs/cm1", "version": "1",
                     "nonce": "abcdefgh1234", "issuedAt": "2026-11-24T10:00:00.000Z"},
            "supportedChains": [{"chainId": "eip155:8453", "type": "eip191"}]}}}
        return httpx.Response(402, json=body,
                              headers={"PAYMENT-REQUIRED": base64.b64encode(_json.dumps(body).encode()).decode()})

    from stablestudio_widgets import AuthError
    ss = AsyncStableStudio("https://stablestudio.dev", Wallet.generate(), ledger=tmp_path / "l.db",
                           transport=httpx.MockTransport(peer))
    with pytest.raises(AuthError, match="evil.example"):
        await ss.jobs()
    assert len(seen) == 1  # our own sign-in for stablestudio.dev went out once; the challenge was not signed
    assert _json.loads(base64.b64decode(seen[0]))["domain"] == "stablestudio.dev"
    await ss.aclose()


async def test_edit_budget_counts_uploads_before_paying_for_them(make_client, sandbox, tmp_path):
    ss = make_client(budget_usd=0.05)
    with pytest.raises(BudgetExceeded):  # $0.05 generation + 2 × $0.01 uploads
        await ss.edit("flux-2-pro", "x", images=[png(tmp_path), png(tmp_path, "b.png")])
    assert sandbox.settlements == []


async def test_testnet_terms_refused_from_non_loopback_host():
    from stablestudio_widgets.policy import SpendingPolicy
    from stablestudio_widgets.x402 import parse_requirement

    req = parse_requirement({"scheme": "exact", "network": "eip155:84532", "amount": "1",
                             "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
                             "payTo": "0x" + "1" * 40}, 0)
    p = SpendingPolicy()
    assert "only accepted from a local sandbox" in p.refuse_terms(req, "https://stablestudio.dev/api")
    assert p.refuse_terms(req, "http://127.0.0.1:9/api") is None
    main = parse_requirement({**req.raw, "network": "eip155:8453",
                              "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"}, 0)
    assert p.refuse_terms(main, "https://stablestudio.dev/api") is None
    assert "not allowed" in p.refuse_terms(main, "https://evil.example/api")
    odd = parse_requirement({**main.raw, "asset": "0x" + "2" * 40}, 0)
    assert "not a known USDC" in p.refuse_terms(odd, "https://stablestudio.dev/api")


async def test_policy_violation_names_what_was_offered(make_client):
    from stablestudio_widgets import SpendingPolicy
    ss = make_client(policy=SpendingPolicy(allowed_networks=frozenset({"eip155:8453"})))
    with pytest.raises(Exception) as e:
        await ss.generate("grok", "x")
    assert "Offered: exact $0.07 on Base Sepolia" in str(e.value) and "Nothing was signed" in str(e.value)
    assert isinstance(e.value, (PolicyViolation, __import__("stablestudio_widgets").PaymentRequiredError))


def test_sync_facade_inside_a_running_event_loop(sandbox, tmp_path):
    """The sync client works where a notebook already runs an event loop."""
    async def notebook_cell():
        ss = StableStudio(sandbox.url, Wallet.generate(), ledger=tmp_path / "s.db", time_scale=0.002)
        job = ss.generate("nano-banana", "sync inside async")
        res = job.wait()
        ss.close()
        return job, res

    job, res = asyncio.run(notebook_cell())
    assert job.status == "complete" and res.url.endswith(".png") and job.cost_usd == 0.067


def test_sandbox_classmethod_needs_no_setup(tmp_path):
    t = time.monotonic()
    with StableStudio.sandbox(time_scale=0.002) as ss:
        assert ss.is_sandbox and ss.wallet.sandbox
        res = ss.generate("grok", "hello sandbox").wait()
        assert res.image().size == (1024, 1024)
        path = res.save(tmp_path)
        assert path.exists() and path.suffix == ".png"
    assert time.monotonic() - t < 30


def test_no_wallet_error_names_the_options(monkeypatch):
    from stablestudio_widgets import WalletError
    with pytest.raises(WalletError, match="STABLESTUDIO_PRIVATE_KEY.*STABLESTUDIO_KEYSTORE.*sandbox"):
        StableStudio("https://stablestudio.dev")


async def test_a_lost_job_is_looked_at_again(make_client, sandbox):
    """JobNotFound says resume() will look again: it does, and a job that shows up later completes."""
    sandbox.set_faults(poll_404_s=1.0)
    ss = make_client()
    job = await ss.generate("grok", "shows up late")
    with pytest.raises(JobNotFound):
        await job.wait()
    sandbox.set_faults(poll_404_s=0.0)
    (resumed,) = await ss.resume()
    assert resumed is job and job.status == "complete" and job.error is None
    assert ss.ledger.job(job.id)["status"] == "complete" and job_record(job)["error"] is None


async def test_cancelled_paid_request_is_recorded_as_possibly_paid(make_client, sandbox):
    """A task cancelled while its payment is in flight leaves it 'uncertain' (counted as spent), and
    resume() finds the job it bought."""
    sandbox.set_faults(drop_after_settle_rate=1.0, drop_mode="delay", delay_s=5)
    ss = make_client(budget_usd=1.0)
    task = asyncio.ensure_future(ss.generate("grok", "cancelled in flight"))
    end = time.monotonic() + 30
    while not sandbox.settlements:  # the payment settled; its answer is held back
        assert time.monotonic() < end
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (p,) = ss.ledger.payments()
    assert p["status"] == "uncertain" and ss.spending.spent == 70000 and ss.spending.reserved == 0
    sandbox.set_faults(drop_after_settle_rate=0.0)
    (job,) = await ss.resume()
    assert job.status == "complete" and job.id == sandbox.settlements[0]["job_id"] and len(sandbox.settlements) == 1


async def test_an_upload_is_paid_once_per_kernel(make_client, sandbox, tmp_path):
    """The same file to the same service within the blob's lifetime is reused, not paid again;
    the job lists its uploads and what each cost; the quote no longer counts a reused one."""
    ss = make_client()
    cat = png(tmp_path, "cat.png")
    first = await ss.submit("grok/edit", {"prompt": "make it blue", "images": [cat]})
    assert [(u["name"], u["cost_usd"], u["reused"]) for u in first.uploads] == [("cat.png", 0.01, False)]
    assert (await ss.quote("grok/edit", prompt="again", images=[cat])).uploads == 0
    second = await ss.submit("grok/edit", {"prompt": "make it green", "images": [cat]})
    assert [(u["cost_usd"], u["reused"]) for u in second.uploads] == [(0.0, True)]
    assert second.params["images"] == first.params["images"]  # the same blob URL
    other = png(tmp_path, "dog.png", (10, 200, 10))
    third = await ss.submit("grok/edit", {"prompt": "a dog", "images": [other, cat]})
    assert [u["reused"] for u in third.uploads] == [False, True]
    kinds = [p["kind"] for p in ss.ledger.payments()]
    assert kinds.count("upload") == 2 and kinds.count("generate") == 3
    await asyncio.gather(*(j.wait() for j in (first, second, third)))


def test_upload_reuse_honours_expires_at_and_distrusts_it():
    from stablestudio_widgets.uploads import REUSE_MARGIN_S, REUSE_MAX_S, _usable_until

    now = time.time()
    soon = _usable_until(datetime.fromtimestamp(now + 600, timezone.utc).isoformat().replace("+00:00", "Z"))
    assert soon == pytest.approx(now + 600 - REUSE_MARGIN_S, abs=2)
    assert _usable_until("2999-01-01T00:00:00Z") <= time.time() + REUSE_MAX_S  # a hostile far future is capped
    assert _usable_until("2000-01-01T00:00:00Z") < now  # already expired: not reused
    assert _usable_until("not a date") is None and _usable_until(None) is None and _usable_until(12) is None


async def test_inspector_times_are_steps_of_this_job(make_client):
    """Terms learned by an earlier price check are a step of this job that took no time, at the time
    it was paid: not a duration as long as the terms' age, not a time before the job existed."""
    ss = make_client()
    await ss.quote("grok", prompt="checking the price first")
    paying = time.time()
    job = await ss.generate("grok", "then paying")
    terms = job.events[0]
    assert terms.kind == "terms" and terms.data["cached"] and not terms.data["reused"]
    assert terms.duration_ms == 0 and terms.at >= paying
    fresh = await ss.generate("nano-banana", "a route not priced yet")
    assert not fresh.events[0].data["cached"] and fresh.events[0].duration_ms > 0
    await asyncio.gather(job.wait(), fresh.wait())
