"""Widgets, kernel side, against the sandbox: what the front end sees and what its messages do.
(The browser tier in tests/browser drives the same widgets in real Chromium.)"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import textwrap
import threading
import time

import httpx
import pytest
from PIL import Image

from stablestudio_widgets import (
    BudgetExceeded,
    Compare,
    ConfirmationRequired,
    Gallery,
    InvalidParams,
    JobCard,
    JobNotFound,
    StableStudio,
    StableStudioError,
    Studio,
    Wallet,
)
from stablestudio_widgets.ledger import Ledger
from stablestudio_widgets.networks import SOLANA_DEVNET, TEMPO_TESTNET
from stablestudio_widgets.recovery import ledger_receipt, lost_answer_error
from stablestudio_widgets.widgets.records import for_card, ledger_records

from .conftest import TIME_SCALE, until

MODEL_NAMES = ("nano-banana", "grok", "flux-2-pro", "Nano Banana", "Grok Imagine", "FLUX.2")


@pytest.fixture
def ss(sandbox, tmp_path):
    client = StableStudio(sandbox.url, Wallet.generate(), ledger=tmp_path / "w.db", time_scale=TIME_SCALE)
    yield client
    client.close()


class Replies:
    """The replies a widget sends to the front end, captured from its ``send`` (its public output)."""

    def __init__(self, widget):
        self.widget, self.sent, self._send = widget, [], widget.send
        widget.send = self._capture

    def _capture(self, content, buffers=None):
        if content.get("type") == "reply":
            self.sent.append(content)
        self._send(content, buffers)

    def request(self, content: dict, buffers: list | None = None) -> dict:
        """What the front end does: send a request (with a fresh id); its one reply, when it comes."""
        rid = f"r{len(self.sent)}-{time.monotonic_ns()}"
        self.widget._on_msg(self.widget, {**content, "request_id": rid}, buffers or [])
        until(lambda: self.to(rid))
        return self.to(rid)[0]

    def to(self, request_id: str) -> list[dict]:
        return [r for r in self.sent if r["request_id"] == request_id]


def shown_quote(st) -> dict:
    """The price the front end shows for the Studio's form now (once the kernel has priced it)."""
    until(lambda: st.quote["status"] in ("ok", "error") and st.quote["for"] == st._form())
    return {"for": st.quote["for"], "amount_usd": st.quote["amount_usd"]}


def generate(replies, st) -> dict:
    """Press Generate as the front end does: with the quote on screen."""
    return replies.request({"type": "generate", "quote": shown_quote(st)})


def png_bytes(colour=(255, 0, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (120, 80), colour).save(buf, "PNG")
    return buf.getvalue()


def test_studio_quote_generate_and_state(ss):
    st = Studio(ss, model="grok")
    assert st.route_id == "grok/generate" and len(st.catalog["routes"]) == 27
    until(lambda: st.quote["status"] == "ok")
    assert st.quote["amount_usd"] == 0.07 and st.sandbox  # loopback + a generated key: sandbox terms
    st.prompt = "a fox from the studio"
    replies = Replies(st)
    assert generate(replies, st)["ok"]
    assert len(st.jobs) == 1  # the card exists when the reply says so; the job goes on without it
    until(lambda: st.jobs and st.jobs[0]["status"] == "complete")
    assert len(replies.sent) == 1  # one reply, not another when the job finished
    card = st.jobs[0]
    assert card["result"]["url"].endswith(".png") and card["cost_usd"] == 0.07
    assert card["receipt"]["network_name"] == "Base Sepolia" and card["receipt"]["transaction"].startswith("0x")
    assert card["receipt"]["explorer_url"] is None  # a sandbox settlement is not on any chain explorer
    assert [s["step"] for s in card["inspector"]][:3] == ["402 Payment Required", "Signed authorization", "Settlement"]
    assert st.total_spent_usd == 0.07 and st.budget["spent_usd"] == 0.07


def test_studio_confirmation_above_threshold(ss):
    st = Studio(ss, model="veo-3.1")
    st.prompt, st.params = "an expensive wave", {"durationSeconds": "8"}
    until(lambda: st.quote.get("amount_usd") == 3.2)
    replies = Replies(st)
    assert generate(replies, st)["ok"]
    until(lambda: st.pending_confirmation is not None)
    assert st.pending_confirmation["price_usd"] == 3.2 and "confirm" in st.pending_confirmation["message"]
    until(lambda: st.jobs and st.jobs[0]["status"] == "awaiting_confirmation")
    assert ss.stats["signatures"] == 0
    confirm = {"type": "confirm", "confirmation_id": st.pending_confirmation["id"], "accept": True}
    assert replies.request(confirm)["ok"]
    until(lambda: st.jobs[0]["status"] == "complete")
    assert st.jobs[0]["result"]["thumbnail_url"] and st.pending_confirmation is None
    again = replies.request(confirm)  # answered already: refused, nothing paid twice
    assert not again["ok"] and again["error"]["field"] == "confirmation_id"
    assert len(ss.ledger.payments()) == 1


def test_studio_declined_confirmation_signs_nothing(ss):
    st = Studio(ss, model="sora-2-pro")
    st.prompt = "too much"
    replies = Replies(st)
    generate(replies, st)
    until(lambda: st.pending_confirmation is not None)
    answer = replies.request({"type": "confirm", "confirmation_id": st.pending_confirmation["id"], "accept": False})
    assert answer["ok"] and st.jobs[0]["status"] == "cancelled" and st.pending_confirmation is None
    assert ss.stats["signatures"] == 0 and ss.ledger.payments() == []


def test_studio_asks_for_each_waiting_payment_in_turn(ss):
    """A second Generate while the first waits for its OK: both are asked, one after the other."""
    st = Studio(ss, model="sora-2-pro")
    st.prompt = "first"
    replies = Replies(st)
    generate(replies, st)
    until(lambda: st.pending_confirmation is not None)
    first = st.pending_confirmation["id"]
    st.prompt = "second"
    generate(replies, st)
    until(lambda: len(st._awaiting) == 2)
    assert st.pending_confirmation["id"] == first
    replies.request({"type": "confirm", "confirmation_id": first, "accept": False})
    assert st.pending_confirmation["id"] != first
    replies.request({"type": "confirm", "confirmation_id": st.pending_confirmation["id"], "accept": False})
    assert st.pending_confirmation is None and sorted(j["status"] for j in st.jobs) == ["cancelled", "cancelled"]


def test_studio_uploads_stay_in_the_kernel(ss, sandbox):
    st = Studio(ss, model="seedance-fast")
    st.mode, st.route_id, st.prompt = "i2v", "seedance-fast/i2v", "animate the red square"
    st.params = {"duration": "4", "aspectRatio": "16:9", "outputResolution": "480p"}  # required, no defaults
    data = png_bytes()
    replies = Replies(st)
    assert replies.request({"type": "upload", "name": "red.png", "mime": "image/png", "param": "image"},
                           [memoryview(data)])["ok"]
    assert st.inputs  # listed before the reply
    state = json.dumps(st.get_state(), default=str)
    assert st.inputs[0]["thumb"].startswith("data:image/jpeg;base64,") and len(st.inputs[0]["thumb"]) < 6000
    assert len(state) < 200_000 and data.hex()[:64] not in state
    until(lambda: st.quote["status"] == "ok" and st.quote["route_id"] == "seedance-fast/i2v")
    assert "1 upload" in st.quote["message"]
    generate(replies, st)
    until(lambda: st.jobs and st.jobs[0]["status"] == "complete")
    assert st.jobs[0]["params"]["image"].startswith(sandbox.url + "/blob/")
    assert sorted(p["kind"] for p in ss.ledger.payments()) == ["generate", "upload"]


def test_studio_attachments_never_carry_over_between_modes_or_models(ss):
    """Veo's one route does text and image to video: images attached in i2v mode are sent; a switch
    of mode or model takes them off the form, and says so."""
    st = Studio(ss, model="veo-3.1-fast")
    st.mode = "i2v"
    replies = Replies(st)
    upload = {"type": "upload", "name": "a.png", "mime": "image/png", "param": "image"}
    replies.request(upload, [memoryview(png_bytes())])
    replies.request({"type": "upload", "name": "b.png", "mime": "image/png", "param": "lastFrame"},
                    [memoryview(png_bytes((0, 0, 255)))])
    assert len(st.inputs) == 2 and st.inputs_note == ""
    st.prompt = "x"
    params = st._call_params()
    assert params["image"] == png_bytes() and params["lastFrame"] == png_bytes((0, 0, 255))
    assert replies.request({"type": "remove_input", "index": 0})["ok"]
    assert len(st.inputs) == 1
    assert "image" not in st._call_params() and "lastFrame" in st._call_params()
    gone = replies.request({"type": "remove_input", "index": 5})
    assert not gone["ok"] and gone["error"]["field"] == "index" and len(st.inputs) == 1
    empty = replies.request({"type": "upload", "name": "c.png", "mime": "image/png", "param": "image"})
    assert not empty["ok"] and "No file data" in empty["error"]["message"] and len(st.inputs) == 1
    st.mode = "generate"  # the same route: still never sent where it was not attached
    assert st.inputs == [] and "image" not in st._call_params() and "lastFrame" not in st._call_params()
    assert "1 attached image was removed" in st.inputs_note
    st.mode = "i2v"
    replies.request(upload, [memoryview(png_bytes())])
    assert st.inputs_note == ""
    st.model, st.mode, st.route_id = "seedance-fast", "i2v", "seedance-fast/i2v"
    assert st.inputs == [] and "removed" in st.inputs_note


def test_studio_pays_only_the_price_on_screen(ss):
    """Seedance Fast 4 s/480p is $0.04, 12 s/720p $0.24: a Generate sent with the old price (or
    before the new one arrived) is refused and signs nothing; with the new one it pays $0.24."""
    st = Studio(ss, model="seedance-fast")
    st.prompt = "a slow wave"
    st.params = {**st.params, "aspectRatio": "16:9", "duration": "4", "outputResolution": "480p"}
    old = shown_quote(st)
    assert old["amount_usd"] == 0.04
    replies = Replies(st)
    st.params = {**st.params, "duration": "12", "outputResolution": "720p"}  # and Generate at once
    stale = replies.request({"type": "generate", "quote": old})
    assert not stale["ok"] and stale["error"]["field"] == "quote" and "Nothing was signed" in stale["error"]["message"]
    new = shown_quote(st)
    assert new["amount_usd"] == 0.24
    lower = replies.request({"type": "generate", "quote": {**new, "amount_usd": 0.04}})
    assert not lower["ok"] and "now $0.24" in lower["error"]["message"]
    assert ss.stats["signatures"] == 0 and st.jobs == []
    assert replies.request({"type": "generate", "quote": new})["ok"]
    until(lambda: st.jobs and st.jobs[0]["cost_usd"] is not None)
    assert st.jobs[0]["cost_usd"] == 0.24 and [p["amount"] for p in ss.ledger.payments()] == [240_000]


def test_studio_bad_generate_is_refused_in_its_reply_and_signs_nothing(ss):
    st = Studio(ss, model="grok")
    st.prompt = "   "
    reply = generate(Replies(st), st)
    assert reply["ok"] is False and reply["error"]["type"] == "InvalidParams"
    assert reply["error"]["field"] == "prompt" and "prompt" in reply["error"]["message"]
    assert "Nothing was paid" in reply["error"]["message"]
    assert ss.stats["signatures"] == 0 and st.jobs == [] and not hasattr(st, "error")


def test_every_request_gets_exactly_one_reply_with_its_id(ss, sandbox):
    """Every message type of every widget, many in flight at once, answered once each — done or
    refused — and never again when the work they started ends."""
    sandbox.set_faults(fail_rate=1.0)
    failed = ss.generate("grok", "fails once")
    with pytest.raises(StableStudioError):
        failed.wait()
    sandbox.set_faults(fail_rate=0.0)
    st, g, card = Studio(ss, model="grok"), Gallery(ss), JobCard(failed)
    c = Compare(["a fox"], ["grok", "nano-banana"], client=ss, blind=True, seed=1)
    st.prompt = "a fox"
    until(lambda: st.quote["status"] == "ok" and c.state == "ready")
    a, b = (x["key"] for x in c.cells)
    cases = [
        (st, {"type": "generate", "quote": shown_quote(st)}, []),
        (st, {"type": "upload", "name": "a.png", "mime": "image/png", "param": "image"}, [memoryview(png_bytes())]),
        (st, {"type": "remove_input", "index": 0}, []),
        (st, {"type": "confirm", "confirmation_id": "none", "accept": True}, []),
        (st, {"type": "retry", "key": "none"}, []),
        (st, {"type": "resume", "key": "none"}, []),
        (st, {"type": "no-such-request"}, []),
        (g, {"type": "retry", "key": failed.aio.key}, []),
        (g, {"type": "resume", "key": failed.aio.key}, []),
        (card, {"type": "retry", "key": card.job["key"]}, []),
        (card, {"type": "resume", "key": card.job["key"]}, []),
        (c, {"type": "run"}, []),
        (c, {"type": "retry", "key": a}, []),
        (c, {"type": "resume", "key": b}, []),
        (c, {"type": "vote", "prompt_index": 0, "a": a, "b": b, "choice": "tie"}, []),
        (c, {"type": "rate", "key": a, "rating": 4}, []),
        (c, {"type": "vote", "prompt_index": 0}, []),  # malformed: refused, still answered
        (c, {"type": "reveal"}, []),
    ]
    replies = {w: Replies(w) for w in (st, g, card, c)}
    ids = []
    for i, (widget, content, buffers) in enumerate(cases):
        ids.append((widget, f"req-{i}"))
        widget._on_msg(widget, {**content, "request_id": f"req-{i}"}, buffers)  # all in flight at once
    until(lambda: all(replies[w].to(rid) for w, rid in ids))
    until(lambda: c.state == "done" and all(j["status"] in ("complete", "failed") for j in st.jobs + g.jobs))
    assert all(len(replies[w].to(rid)) == 1 for w, rid in ids)
    assert sum(len(r.sent) for r in replies.values()) == len(cases)
    answers = {rid: replies[w].to(rid)[0] for w, rid in ids}
    assert answers["req-0"]["ok"] and answers["req-11"]["ok"]  # generate, run
    assert answers["req-6"]["error"]["message"] == "Unknown request 'no-such-request'. Nothing was paid."
    assert answers["req-16"]["error"]["type"] == "KeyError"
    assert all(set(r) <= {"type", "request_id", "ok", "error"} for r in answers.values())
    assert all(r["ok"] or set(r["error"]) <= {"type", "message", "field"} for r in answers.values())


def test_sandbox_studio_says_so(tmp_path):
    with StableStudio.sandbox(time_scale=TIME_SCALE) as ss:
        st = Studio(ss)
        assert st.sandbox and "no real money" in st.banner and st.network_name == "Base Sepolia (sandbox)"


# What each payment network's cards, inspector and ledger show (Base Sepolia: the tests above).
NETWORKS = {
    "solana-devnet": ("Solana Devnet", SOLANA_DEVNET, "solana_address", {
        "Signed transaction": "Solana transaction: TransferChecked",
        "Sign-In-With-X": "Solana sign-in message, Ed25519 signature"}),
    "tempo-testnet": ("Tempo testnet", TEMPO_TESTNET, "address", {
        "402 Payment Required": "WWW-Authenticate: Payment challenge (MPP)",
        "Signed credential": "MPP credential: a Tempo 0x76 transaction",
        "Settlement": "Payment-Receipt: 0x",
        "Sign-In-With-X": "EIP-4361 message, EIP-191 signature"}),
}


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_studio_cards_inspector_and_ledger_show_the_network(network, tmp_path):
    name, chain, payer, steps = NETWORKS[network]
    ss = StableStudio.sandbox(network=["base-sepolia", network], prefer_network=network, time_scale=TIME_SCALE,
                              ledger=tmp_path / "w.db")
    st = Studio(ss, model="grok")
    until(lambda: st.quote["status"] == "ok")
    assert st.network_name == f"{name} (sandbox)" and st.quote["message"].endswith(f"on {name} (sandbox)")
    st.prompt = f"a fox paid on {name}"
    assert generate(Replies(st), st)["ok"]  # the price on screen
    until(lambda: st.jobs and st.jobs[0]["status"] == "complete"
          and any(s["step"] == "Sign-In-With-X" for s in st.jobs[0]["inspector"]))
    card = st.jobs[0]
    receipt = card["receipt"]
    assert receipt["network_name"] == name and receipt["payer"] == getattr(ss.wallet, payer)
    assert receipt["transaction"] == ss.ledger.payments()[0]["tx"]
    assert receipt["explorer_url"] is None  # a sandbox settlement is on no explorer
    shown = {s["step"]: s["summary"] for s in card["inspector"]}
    assert {step: words in shown.get(step, "") for step, words in steps.items()} == dict.fromkeys(steps, True)
    history = ledger_records(ss.ledger, ss.aio.catalog, ss.base_url)
    assert history[card["id"]]["receipt"]["network"] == chain
    assert [r["network_name"] for r in ss.ledger.receipts()] == [name]
    st.close()
    ss.close()


def test_jobcard_is_live_and_retries_a_failed_job(ss, sandbox):
    sandbox.set_faults(fail_rate=1.0)
    job = ss.generate("grok", "doomed at first")
    card = JobCard(job)  # polls the job itself
    until(lambda: card.job.get("status") == "failed")
    assert card.job["error"]["retryable"] and "Generation failed" in card.job["error"]["message"]
    # Written for the card: its Retry button says what a retry costs, no job.retry() advice beside it.
    assert card.job["error"]["retry_usd"] == 0.07 and "job.retry()" not in card.job["error"]["message"]
    assert "Retry pays again" in card.job["error"]["message"]
    sandbox.set_faults(fail_rate=0.0)
    replies = Replies(card)
    failed_key = card.job["key"]
    assert replies.request({"type": "retry", "key": failed_key, "amount_usd": 0.07})["ok"]
    assert card.job["key"] != failed_key  # the reply comes once the new card exists
    until(lambda: card.job.get("status") == "complete" and card.job["id"] != job.id)
    assert len(sandbox.settlements) == 2  # the retry was a new payment, at the user's request
    # The failed attempt is kept as history, its Retry done: pressing it again pays nothing.
    old = next(r for r in card._records if r["key"] == failed_key)
    assert old["status"] == "failed" and not old["error"]["retryable"] and old["error"]["retry_usd"] is None
    twice = replies.request({"type": "retry", "key": failed_key, "amount_usd": 0.07})
    assert not twice["ok"] and "retried already" in twice["error"]["message"]
    done = replies.request({"type": "retry", "key": card.job["key"], "amount_usd": 0.07})
    assert not done["ok"] and "is complete: nothing to retry" in done["error"]["message"]
    assert len(sandbox.settlements) == 2 and len(replies.sent) == 3


def test_a_job_shown_in_two_widgets_is_retried_once(ss, sandbox):
    """The same failed job on a JobCard and in a Gallery: Retry in one is a new payment at the
    user's request; Retry in the other is the same request again, and pays nothing."""
    sandbox.set_faults(fail_rate=1.0)
    job = ss.generate("grok", "doomed, shown twice")
    card, gallery = JobCard(job), Gallery(ss)
    until(lambda: card.job.get("status") == "failed" and any(j["status"] == "failed" for j in gallery.jobs))
    sandbox.set_faults(fail_rate=0.0)
    key = card.job["key"]
    assert Replies(card).request({"type": "retry", "key": key, "amount_usd": 0.07})["ok"]
    again = Replies(gallery).request({"type": "retry", "key": key, "amount_usd": 0.07})
    assert not again["ok"] and "retried already" in again["error"]["message"]
    until(lambda: card.job.get("status") == "complete")
    assert len(sandbox.settlements) == 2  # the failed attempt and one retry
    until(lambda: not next(j for j in gallery.jobs if j["key"] == key)["error"]["retryable"])  # history there too


def test_gallery_session_jobs_ledger_and_total(ss):
    first = ss.generate("grok", "one")
    first.wait()
    g = Gallery(ss)
    second = ss.generate("nano-banana", "two")
    second.wait()
    until(lambda: len(g.jobs) == 2 and all(j["status"] == "complete" for j in g.jobs))
    assert [j["id"] for j in g.jobs] == [second.id, first.id]  # newest first
    assert g.total_spent_usd == pytest.approx(0.137) and all(j["inspector"] == [] for j in g.jobs)
    past = StableStudio(ss.base_url, Wallet.generate(), ledger=ss.ledger, time_scale=TIME_SCALE)
    g2 = Gallery(past)
    assert g2.jobs == []
    g2.show_ledger = True
    until(lambda: len(g2.jobs) == 2)
    assert {j["detail"] for j in g2.jobs} == {"from the ledger"} and g2.jobs[0]["result"]["url"]
    past.close()


def test_a_gallery_made_with_show_ledger_shows_the_ledger_at_once(ss):
    """``Gallery(client, show_ledger=True)``, as README writes it, is the box ticked from the start."""
    ss.generate("grok", "from an earlier kernel").wait()
    later = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE)
    g = Gallery(later, show_ledger=True)
    until(lambda: len(g.jobs) == 1)
    assert g.show_ledger and g.jobs[0]["detail"] == "from the ledger" and g.jobs[0]["status"] == "complete"
    later.close()


def test_gallery_follows_jobs_a_dead_kernel_left_running(ss, sandbox):
    """A job paid in an earlier kernel that was still running when it died: a new kernel's gallery
    shows it from the ledger and follows it live, as it does the session's own jobs (no button)."""
    sandbox.set_faults(poll_404_s=5)
    job = ss.generate("grok", "left behind")  # paid; nobody polls it (the kernel 'restarted')
    sandbox.set_faults(poll_404_s=0)
    later = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE)
    g = Gallery(later)
    g.show_ledger = True
    until(lambda: g.jobs and g.jobs[0]["status"] == "complete")
    assert g.jobs[0]["id"] == job.id and g.jobs[0]["result"]["url"] and g.jobs[0]["error"] is None
    assert ss.ledger.job(job.id)["status"] == "complete" and len(sandbox.settlements) == 1
    followed = later.aio.tracker.jobs[job.id]  # it carries its payment's receipt, as the ledger knows it
    assert followed.receipt is not None and followed.receipt.transaction == job.receipt.transaction
    assert g.jobs[0]["receipt"]["network_name"] == "Base Sepolia"
    g.show_ledger = False
    g.show_ledger = True  # the ledger's rows again: the live job keeps its one card
    g._feed.flush()  # what the next flush shows, now
    assert job.id in g._feed.extra and [(j["id"], j["status"]) for j in g.jobs] == [(job.id, "complete")]
    nothing = Replies(g).request({"type": "resume", "key": job.id})  # a stale Resume: every paid job finished
    assert not nothing["ok"] and "Nothing to resume" in nothing["error"]["message"]
    later.close()


class Wire(httpx.AsyncHTTPTransport):
    """The real transport with two switches a test flips, as a network would misbehave: ``trip``
    raises an error nobody expects on the next request it matches; ``hold`` keeps the requests it
    matches waiting until ``release()``."""

    def __init__(self):
        super().__init__()
        self.trip = self.hold = None
        self.released = threading.Event()
        self.waiting = 0

    def release(self):
        self.released.set()

    async def handle_async_request(self, request):
        if self.trip is not None and self.trip(request):
            self.trip = None
            raise RuntimeError("the network card caught fire")
        if self.hold is not None and self.hold(request) and not self.released.is_set():
            self.waiting += 1
            while not self.released.is_set():  # a stalled network, not the test's synchronisation
                await asyncio.sleep(0.005)
            self.waiting -= 1
        return await super().handle_async_request(request)


def paid_post(r) -> bool:
    return r.method == "POST" and "payment-signature" in r.headers


def poll(r) -> bool:
    return r.method == "GET" and r.url.path.startswith("/api/jobs/")


def test_resume_answers_at_once_and_the_cards_follow_live(ss, sandbox):
    """Resume on a ledger card is answered as soon as the resume starts: the job takes its card at
    once and shows live while it is polled (here a stalled network holds the polls)."""
    sandbox.set_faults(poll_404_s=60)
    job = ss.generate("grok", "lost for a while")
    with pytest.raises(JobNotFound):
        job.wait()  # 'not found' in the ledger: a Resume looks again (a new kernel does not, by itself)
    sandbox.set_faults(poll_404_s=0)
    wire = Wire()
    wire.hold = poll
    later = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE, transport=wire)
    g = Gallery(later)
    g.show_ledger = True
    until(lambda: g.jobs and g.jobs[0]["error"])
    card = g.jobs[0]
    assert card["status"] == "lost" and card["error"]["resumable"] and not card["error"]["retryable"]
    replies = Replies(g)
    assert replies.request({"type": "resume", "key": job.id})["ok"]  # answered while its polls are held
    until(lambda: g.jobs[0]["detail"] == "Checking on it again")  # the live job has its card
    assert g.jobs[0]["error"] is None and wire.waiting and len(g.jobs) == 1
    wire.release()
    until(lambda: g.jobs[0]["status"] == "complete")
    assert ss.ledger.job(job.id)["status"] == "complete" and len(sandbox.settlements) == 1
    later.close()


def test_an_unexpected_error_after_signing_is_on_the_card_and_resume_finds_that_job(ss, sandbox, caplog):
    """An error nobody expected while the payment goes out: the card does not stay at "paying"; it
    says the payment may have gone through, what it cost and to press Resume, and the error is
    logged. Resume re-sends the same signed payment: the same card gets the job, paid once."""
    wire = Wire()
    client = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE, transport=wire)
    st = Studio(client, model="grok")
    st.prompt = "paid into the void"
    replies = Replies(st)
    wire.trip = paid_post
    assert generate(replies, st)["ok"]
    until(lambda: st.jobs and st.jobs[0]["status"] == "failed")
    card = st.jobs[0]
    assert card["error"]["type"] == "JobInterrupted" and card["error"]["resumable"] and not card["error"]["retryable"]
    message = card["error"]["message"]
    assert "RuntimeError: the network card caught fire" in message and "$0.07" in message
    assert "may have gone through" in message and "Resume" in message and "ss.resume" not in message
    until(lambda: "the network card caught fire" in caplog.text)
    assert "Traceback" in caplog.text or any(r.exc_info for r in caplog.records)
    assert ss.ledger.payments()[0]["status"] == "uncertain"
    assert replies.request({"type": "resume", "key": card["key"]})["ok"]
    until(lambda: st.jobs[0]["status"] == "complete")
    assert [j["key"] for j in st.jobs] == [card["key"]]  # the same card, not a second one
    assert len(sandbox.settlements) == 1 and ss.ledger.payments()[0]["status"] == "settled"
    client.close()


def test_an_unexpected_error_while_polling_is_on_the_card_and_resume_polls_again(ss, sandbox, caplog):
    wire = Wire()
    client = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE, transport=wire)
    wire.trip = poll
    card = JobCard(client.generate("grok", "watched closely"))
    until(lambda: card.job["status"] == "interrupted")
    err = card.job["error"]
    assert err["type"] == "JobInterrupted" and err["resumable"] and not err["retryable"]
    assert "RuntimeError: the network card caught fire" in err["message"] and "paid ($0.07)" in err["message"]
    assert "Resume checks on it again" in err["message"] and "the network card caught fire" in caplog.text
    assert ss.ledger.job(card.job["id"])["status"] == "interrupted"  # resume() in a new kernel picks it up
    assert Replies(card).request({"type": "resume", "key": card.job["key"]})["ok"]
    until(lambda: card.job["status"] == "complete")
    assert len(sandbox.settlements) == 1
    client.close()


def clock(ts: float) -> str:
    """A time of day as cards say it (HH:MM, the kernel's local time)."""
    return time.strftime("%H:%M", time.localtime(ts))


def lose_answers(ss, sandbox, prompts: list[str], *, settle: bool) -> list[dict]:
    """A kernel that stops between signing a payment and reading its answer (``settle``: after the
    service settled it and made the job, else before the payment reached the service); the ledger
    keeps the payment rows (no job rows), returned as they are after the kernel is gone."""
    wire = Wire()
    gone = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE, transport=wire)
    for prompt in prompts:
        settled = len(sandbox.settlements)
        if settle:  # the answer is lost after settling; the kernel stops before its resend is answered
            sandbox.set_faults(drop_after_settle_rate=1.0, drop_mode="reset")
            wire.trip = lambda r, n=settled: paid_post(r) and len(sandbox.settlements) > n
        else:
            wire.trip = paid_post
        with pytest.raises(RuntimeError, match="caught fire"):  # what stops the kernel
            gone.generate("grok", prompt)
        sandbox.set_faults(drop_after_settle_rate=0.0)
    gone.close()
    rows = ss.ledger.payments()
    assert [p["job_id"] for p in rows] == [None] * len(prompts) and {p["status"] for p in rows} == {"uncertain"}
    return rows


def test_a_gallery_from_the_ledger_shows_a_payment_whose_answer_a_gone_kernel_lost(ss, sandbox):
    """The service settled a payment, and the kernel that sent it stopped before its answer came:
    the next kernel's Gallery shows that payment as a card (it may have been paid; until when its
    authorization stays valid), whose Resume gives it the job it bought, never paying again."""
    (p,) = lose_answers(ss, sandbox, ["paid, then the kernel stopped"], settle=True)
    assert len(sandbox.settlements) == 1
    later = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE)
    g = Gallery(later)
    assert g.jobs == []  # the session's own jobs: none yet
    g.show_ledger = True
    until(lambda: g.jobs)  # its card, once flushed
    (card,) = g.jobs
    err = card["error"]
    assert card["status"] == "failed" and card["prompt"] == "paid, then the kernel stopped"
    assert f"may have been paid — the authorization stays valid until {clock(p['valid_before'])}" in err["message"]
    assert err["resumable"] and not err["retryable"] and not err["dismissable"] and "$0.07" in err["message"]
    assert "ss.resume" not in err["message"] and "Resume" in err["message"]
    assert card["created_at"] == int(p["signed_at"] * 1000)  # where it happened in the history
    replies = Replies(g)
    refused = replies.request({"type": "retry", "key": card["key"], "amount_usd": 0.07})  # never paid twice:
    assert refused["ok"]  # a Retry of a card that may be paid looks for the job instead
    until(lambda: g.jobs[0]["status"] == "complete")
    assert [j["key"] for j in g.jobs] == [card["key"]], g.jobs  # the same card got the job
    assert g.jobs[0]["id"] == sandbox.settlements[0]["job_id"] and g.jobs[0]["result"]["url"]
    assert len(sandbox.settlements) == 1 and later.stats["signatures"] == 0
    assert ss.ledger.payment(p["nonce"])["job_id"] == g.jobs[0]["id"]
    assert ss.ledger.job(g.jobs[0]["id"])["session"] == p["session"] != later.aio.session  # paid by the gone kernel
    # The job found for the payment carries that payment's receipt, as the ledger knows it: the card
    # and job.receipt say what a later kernel's card of the same job says.
    job = later.aio.tracker.jobs[g.jobs[0]["id"]]
    from_ledger = ledger_records(ss.ledger, later.aio.catalog, later.aio.base_url)[job.id]
    assert g.jobs[0]["receipt"] == from_ledger["receipt"] and g.jobs[0]["cost_usd"] == from_ledger["cost_usd"] == 0.07
    assert job.receipt.network == p["network"] and job.receipt.payer == p["payer"] and job.receipt.amount == 70000
    assert g.jobs[0]["receipt"]["network_name"] and g.jobs[0]["receipt"]["success"]
    # The header says what was spent this session ($0) apart from what the ledger's cards shown cost.
    until(lambda: g.ledger_total_usd == 0.07)
    assert g.total_spent_usd == 0.0
    assert "This session: $0.00" in g.static_html() and "Paid earlier (shown from the ledger): $0.07" in g.static_html()
    later.close()


def test_a_lost_answer_whose_ledger_amount_was_zeroed_is_still_never_paid_again(ss, sandbox):
    """The ledger is read back as wire data: a lost answer whose row says it cost $0 still may have
    been paid, so its card offers Resume only, and a Retry looks for the job instead of signing."""
    (p,) = lose_answers(ss, sandbox, ["tampered amount"], settle=True)
    ss.ledger.update_payment(p["nonce"], amount=0)
    later = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE)
    g = Gallery(later, show_ledger=True)
    until(lambda: g.jobs)
    (card,) = g.jobs
    assert card["error"]["resumable"] and not card["error"]["retryable"] and not card["error"]["unpaid"]
    assert Replies(g).request({"type": "retry", "key": card["key"], "amount_usd": 5.0})["ok"]
    until(lambda: g.jobs[0]["status"] == "complete")
    assert later.stats["signatures"] == 0 and len(sandbox.settlements) == 1
    later.close()


@pytest.mark.parametrize("recorded", [float("inf"), "soon", 10**400, -1e300, 4e9])
def test_a_lost_answers_deadline_read_back_from_the_ledger_is_checked(ss, sandbox, recorded):
    """A validBefore the ledger no longer holds as a sensible number (not a number, one no clock can
    show, past the longest window this client signs) counts as the end of that window: the Gallery
    still shows the card, and it is not called expired (which would offer a second payment)."""
    (p,) = lose_answers(ss, sandbox, ["deadline tampered"], settle=False)
    with ss.ledger._tx() as db:
        db.execute("UPDATE payments SET valid_before=? WHERE nonce=?",
                   (str(recorded) if isinstance(recorded, int) and recorded > 2**63 else recorded, p["nonce"]))
    later = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE)
    g = Gallery(later, show_ledger=True)
    until(lambda: g.jobs)
    (card,) = g.jobs
    assert card["error"]["resumable"] and not card["error"]["retryable"]
    assert f"stays valid until {clock(p['signed_at'] + 660)}" in card["error"]["message"]
    later.close()


def test_a_gallery_says_a_lost_payment_expired_unsettled_and_offers_retry_or_dismiss(ss, sandbox):
    """Payments whose answers were lost before they reached the service, seen by a kernel that
    starts after their authorizations expired: their cards say they may have been paid until
    then; Resume checks (no job: expired unsettled, nothing paid), then Retry pays anew at the
    price shown or Dismiss closes the card, and a later kernel shows neither again."""
    rows = lose_answers(ss, sandbox, ["never arrived", "never arrived either"], settle=False)
    expired_at = int(time.time()) - 60
    for p in rows:  # the next kernel starts after they expired (the ledger's clock, moved on)
        ss.ledger.update_payment(p["nonce"], valid_before=expired_at)
    later = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE)
    g = Gallery(later)
    g.show_ledger = True
    until(lambda: len(g.jobs) == 2)
    for card in g.jobs:
        assert card["error"]["resumable"] and not card["error"]["retryable"]
        assert f"may have been paid before its authorization expired at {clock(expired_at)}" in card["error"]["message"]
    replies = Replies(g)
    assert replies.request({"type": "resume", "key": g.jobs[0]["key"]})["ok"]
    until(lambda: all(j["error"]["retryable"] for j in g.jobs))  # checked: no job for either
    for card in g.jobs:
        err = card["error"]
        assert err["type"] == "PaymentExpired" and "expired unsettled" in err["message"]
        assert "Nothing was paid" in err["message"] and not err["resumable"]
        assert err["dismissable"] and err["retry_usd"] == 0.07
    assert {p["status"] for p in ss.ledger.payments()} == {"expired"} and sandbox.settlements == []
    retried, dismissed = g.jobs
    assert replies.request({"type": "retry", "key": retried["key"], "amount_usd": 0.07})["ok"]
    assert replies.request({"type": "dismiss", "key": dismissed["key"]})["ok"]
    until(lambda: any(j["status"] == "complete" for j in g.jobs))
    assert dismissed["key"] not in [j["key"] for j in g.jobs] and len(sandbox.settlements) == 1
    history = next(j for j in g.jobs if j["key"] == retried["key"])
    assert not history["error"]["retryable"] and "Retried" in history["detail"]
    again = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE)
    g2 = Gallery(again)
    g2.show_ledger = True
    g2._feed.flush()  # what it shows, now
    assert [(j["prompt"], j["status"]) for j in g2.jobs] == [(retried["prompt"], "complete")]
    later.close()
    again.close()


def test_earlier_kernels_lost_answers_do_not_push_this_sessions_jobs_out_of_full_inspectors(ss, sandbox):
    """Finished jobs keep their whole inspector while they are among the latest few. Cards built
    for an earlier kernel's lost answers are finished too; they must not take those places."""
    lose_answers(ss, sandbox, [f"lost {i}" for i in range(3)], settle=False)
    later = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE)
    later.aio.tracker.full_inspectors = 2
    mine = [later.generate("grok", f"this session {i}") for i in range(2)]
    for job in mine:
        job.wait()
    g = Gallery(later, show_ledger=True)
    until(lambda: sum(1 for j in g.jobs if j["status"] == "failed") == 3)
    assert not any(job.aio.events_compacted for job in mine)
    later.close()


def test_lost_answers_go_when_the_ledger_is_hidden_and_come_back_with_it(ss, sandbox):
    lose_answers(ss, sandbox, ["lost, then hidden"], settle=False)
    later = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE)
    mine = later.generate("grok", "this session's")
    mine.wait()
    g = Gallery(later, show_ledger=True)
    until(lambda: {j["prompt"] for j in g.jobs} == {"lost, then hidden", "this session's"})
    g.show_ledger = False
    until(lambda: [j["prompt"] for j in g.jobs] == ["this session's"])
    g.show_ledger = True
    until(lambda: {j["prompt"] for j in g.jobs} == {"lost, then hidden", "this session's"})
    later.close()


def test_an_expired_lost_payments_retry_never_consents_to_more_than_the_route_table_price(ss, sandbox):
    """The price a lost payment's Retry button shows (and consents to) is read back from the ledger:
    an amount there above the route table's price for its parameters is not believed."""
    (p,) = lose_answers(ss, sandbox, ["tampered amount"], settle=False)
    ss.ledger.update_payment(p["nonce"], valid_before=int(time.time()) - 60, amount=5_000_000)  # "$5.00"
    later = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE)
    g = Gallery(later, show_ledger=True)
    until(lambda: g.jobs)
    assert Replies(g).request({"type": "resume", "key": g.jobs[0]["key"]})["ok"]
    until(lambda: g.jobs[0]["error"]["retryable"])  # looked for: no job, expired unsettled
    assert g.jobs[0]["error"]["retry_usd"] == 0.07
    later.close()


def a_past_job_and_a_lost_answer(ss) -> None:
    """A ledger with a finished job and, from a kernel that stopped at the paid request, a payment
    whose answer was lost: the two kinds of row a Gallery of the ledger reads back."""
    ss.generate("grok", "a past job").wait()
    wire = Wire()
    gone = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE, transport=wire)
    wire.trip = paid_post
    with pytest.raises(RuntimeError, match="caught fire"):
        gone.generate("grok", "a lost answer")
    gone.close()


@pytest.mark.parametrize("amount", ["abc", "9" * 400, -70000, 2.5, 10**15])
def test_amounts_read_back_from_the_ledger_are_checked(ss, sandbox, amount):
    """A ledger file edited by hand (or by anything else): amounts that are not a whole, plausible
    number of atomic units neither break a Gallery of the ledger nor show as prices."""
    a_past_job_and_a_lost_answer(ss)
    with ss.ledger._tx() as db:
        db.execute("UPDATE payments SET amount=?", (amount,))
        db.execute("UPDATE jobs SET amount=?", (amount,))
    later = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE)
    g = Gallery(later, show_ledger=True)
    until(lambda: {j["prompt"] for j in g.jobs} == {"a past job", "a lost answer"})
    past = next(j for j in g.jobs if j["prompt"] == "a past job")
    lost = next(j for j in g.jobs if j["prompt"] == "a lost answer")
    assert past["cost_usd"] is None
    assert "an amount the ledger does not show" in lost["error"]["message"] and lost["error"]["resumable"]
    assert later.ledger.spent_atomic() >= 0  # a negative amount never gives budget back
    later.close()


TAMPERED = [("jobs", "id", "../../startup"), ("jobs", "created_at", "abc"), ("jobs", "finished_at", "x"),
            ("jobs", "params", "{not json"), ("jobs", "params", '"a string"'), ("jobs", "status", 5),
            ("jobs", "status", "loading"), ("jobs", "prompt", 7), ("jobs", "result_url", 5), ("jobs", "error", 12),
            ("jobs", "local_path", 3), ("jobs", "payer", 9), ("jobs", "nonce", 5), ("jobs", "base_url", 5),
            ("payments", "signed_at", "abc"), ("payments", "valid_before", "x"), ("payments", "url", 5),
            ("payments", "body", "{bad"), ("payments", "status", 5), ("payments", "route", 5),
            ("payments", "session", 5), ("payments", "ref", 5), ("payments", "payer", 5), ("payments", "network", 5)]


@pytest.mark.parametrize(("table", "column", "value"), TAMPERED)
def test_a_gallery_of_a_tampered_ledger_shows_what_it_can_and_never_breaks(ss, sandbox, table, column, value):
    """Every ledger field a Gallery of the ledger reads back (a past job's row, a lost answer's
    payment row) set to what no client writes: the Gallery still builds, and Resume answers."""
    a_past_job_and_a_lost_answer(ss)
    with ss.ledger._tx() as db:
        db.execute(f"UPDATE {table} SET {column}=?", (value,))
    later = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE)
    g = Gallery(later, show_ledger=True)
    g._feed.flush()
    assert all(isinstance(card["created_at"], int) for card in g.jobs)
    resumed = Replies(g).request({"type": "resume", "key": g.jobs[0]["key"]}) if g.jobs else {"ok": True}
    assert resumed["ok"] or resumed["error"]["message"]
    later.close()


def test_looking_for_a_lost_answers_job_adds_no_other_jobs_to_the_session(ss, sandbox, tmp_path):
    """Resume reads the wallet's job list to find the job a lost answer bought. The other jobs on
    that list (made elsewhere with the same wallet) are not this session's: no card, no polling."""
    elsewhere = StableStudio(ss.base_url, ss.wallet, ledger=tmp_path / "elsewhere.db", time_scale=TIME_SCALE)
    for i in range(3):
        elsewhere.generate("grok", f"made elsewhere {i}").wait()
    elsewhere.close()
    wire = Wire()
    mine = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE, transport=wire)
    g = Gallery(mine)
    settled = len(sandbox.settlements)
    sandbox.set_faults(drop_after_settle_rate=1.0, drop_mode="reset")  # settled, then the answer is lost
    wire.trip = lambda r: paid_post(r) and len(sandbox.settlements) > settled  # and the resend never leaves
    with pytest.raises(RuntimeError, match="caught fire"):
        mine.generate("grok", "answer lost after settling")
    sandbox.set_faults(drop_after_settle_rate=0.0)
    (found,) = mine.resume()
    until(lambda: [j["status"] for j in g.jobs] == ["complete"])
    assert g.jobs[0]["id"] == found.id and found.id in mine.aio.tracker.jobs
    assert not [j for j in mine.aio.live_jobs() if j.prompt and j.prompt.startswith("made elsewhere")]
    mine.close()


def test_a_lost_answers_card_says_when_its_authorization_ran_out(ss, sandbox):
    """A card that says the payment may have been paid until HH:MM does not go on saying so after
    HH:MM: it says the authorization expired and that Resume checks whether it settled."""
    (p,) = lose_answers(ss, sandbox, ["runs out soon"], settle=False)
    ends = int(time.time()) + 3
    ss.ledger.update_payment(p["nonce"], valid_before=ends)  # a short validity window
    later = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE)
    g = Gallery(later)
    g.show_ledger = True
    until(lambda: g.jobs and "stays valid until" in g.jobs[0]["error"]["message"])
    until(lambda: f"before its authorization expired at {clock(ends)}" in g.jobs[0]["error"]["message"], 10)
    assert g.jobs[0]["error"]["resumable"] and not g.jobs[0]["error"]["retryable"]
    assert ss.ledger.payment(p["nonce"])["status"] == "uncertain"  # nothing looked: a Resume does
    later.close()


def test_a_lost_answer_card_says_what_the_ledger_knows_of_its_payment():
    now = time.time()
    p = {"nonce": "n", "amount": 70000, "valid_before": now + 120}

    def words(**row) -> str:
        return for_card(str(lost_answer_error("grok/generate", {**p, **row})))

    assert f"may have been paid — the authorization stays valid until {clock(now + 120)}" in words(status="sent")
    past = words(status="uncertain", valid_before=now - 60)
    assert f"before its authorization expired at {clock(now - 60)}" in past and "not known yet" in past
    assert "It was paid: the payment settled" in words(status="settled")
    for status in ("sent", "uncertain", "settled"):
        assert "$0.07" in words(status=status) and "Resume looks for the job it bought" in words(status=status)
    expired = words(status="expired", valid_before=now - 3 * 86400)
    assert "expired unsettled at " + time.strftime("%Y-%m-%d %H:%M", time.localtime(now - 3 * 86400)) in expired
    assert "Nothing was paid" in expired and "Retry pays again" in expired and "Resume" not in expired


def test_a_found_jobs_receipt_from_the_ledger_is_checked(tmp_path):
    """The receipt a job found for a lost answer gets is read back from the ledger file: what is not
    a short printable string (or a whole amount) is left out, never shown or linked."""
    ledger = Ledger(tmp_path / "l.db")
    ledger.record_payment(nonce="n", kind="generate", route="grok/generate", method="POST", url="https://x/y",
                          body={}, amount=70000, asset="usdc", network="eip155:84532", pay_to="0xto", payer="0xme",
                          valid_before=0, payload="", session="s")
    ledger.update_payment("n", status="settled")
    fine = ledger_receipt(ledger, "n")
    assert (fine.network, fine.payer, fine.amount, fine.transaction, fine.success) == \
        ("eip155:84532", "0xme", 70000, None, True)
    assert fine.network_name == "Base Sepolia" and fine.explorer_url is None  # no receipt said it is on chain
    ledger.update_payment("n", tx="0xabc\x1b[2J", network="eip155:8453\n<b>", payer="0x" + "a" * 300, amount=-1,
                          receipt='{"explorer_url": "https://evil"}')
    hostile = ledger_receipt(ledger, "n")
    assert (hostile.transaction, hostile.network, hostile.payer, hostile.amount) == (None, None, None, None)
    assert hostile.explorer_url is None and ledger_receipt(ledger, "unknown") is None


def test_studio_pays_with_the_parameters_its_job_holds(ss, sandbox):
    """One set of parameters: the validated wire form the job holds is what is paid for and what the
    service gets (a form's digit string for an integer is sent as the number), also after a confirmation."""
    st = Studio(ss, model="flux-2-pro")
    st.prompt, st.params = "a seeded fox", {**st.params, "seed": "42"}
    replies = Replies(st)
    generate(replies, st)
    until(lambda: st.jobs and st.jobs[0]["status"] == "complete")
    job = ss.aio.tracker.jobs[st.jobs[0]["id"]]
    assert job.params["seed"] == 42 and sandbox.jobs[job.id].params == job.params
    assert json.loads(ss.ledger.job(job.id)["params"]) == job.params


def make_compare(ss, **kw) -> Compare:
    kw.setdefault("params", {"aspectRatio": "1:1", "aspect_ratio": "1:1"})
    return Compare(["a red fox", "a blue whale"], ["nano-banana", "grok", "flux-2-pro"], client=ss, seed=5, **kw)


def test_compare_blind_grid_hides_models_until_reveal(ss, sandbox):
    c = make_compare(ss)
    until(lambda: c.state == "ready")
    assert c.quote["total_usd"] == pytest.approx(2 * (0.067 + 0.07 + 0.03)) and sandbox.settlements == []
    replies = Replies(c)
    assert replies.request({"type": "run"})["ok"] and c.state == "running"
    until(lambda: c.state == "done" and all(x["job"] and x["job"]["status"] == "complete" for x in c.cells))
    shown = json.dumps({k: v for k, v in c.get_state().items() if k not in ("_esm", "_css")}, default=str)
    for name in MODEL_NAMES:
        assert name not in shown
    assert {x["label"] for x in c.cells} == {"Model A", "Model B", "Model C"} and c.summary == []
    assert all(x["job"]["cost_usd"] is None and x["job"]["receipt"] is None for x in c.cells)
    # The tables a notebook prints stay blind too: letters, no route, no price (Run All prints them).
    tables = json.dumps([c.result_rows(), c.summary_rows()], default=str) + c.results().to_string()
    tables += c.summary_table().to_string() + c.static_html()
    assert not any(name in tables for name in MODEL_NAMES) and "$0.0" not in c.static_html()
    assert {r["model"] for r in c.result_rows()} == {"Model A", "Model B", "Model C"}
    assert all(r["cost_usd"] is None and r["route"] == "" for r in c.result_rows())
    assert "rating" not in c.results().columns and "mean_rating" not in c.summary_table().columns  # pairwise
    letters = {x["key"]: x["label"] for x in c.cells}
    row = sorted((x for x in c.cells if x["prompt_index"] == 0), key=lambda x: x["col"])
    vote = {"type": "vote", "prompt_index": 0, "a": row[0]["key"], "b": row[1]["key"], "choice": "a"}
    assert replies.request(vote)["ok"]
    assert replies.request({"type": "reveal"})["ok"]
    assert c.revealed and c.cells[0]["job"]["model"]  # revealed with the reply
    # The letters stay, beside the names: the votes given to "Model B" read as votes for its model.
    assert {x["label"].split(" · ")[1] for x in c.cells} == {"Nano Banana", "Grok Imagine", "FLUX.2 [pro]"}
    assert all(x["label"].split(" · ")[0] == letters[x["key"]][6:] for x in c.cells)
    assert {r["model"] for r in c.result_rows()} == {"nano-banana", "grok", "flux-2-pro"}
    assert len(c.summary) == 3 and sum(r["wins"] for r in c.summary) == 1
    assert len(sandbox.settlements) == 6
    with pytest.raises(InvalidParams, match="would not be blind"):
        c.vote(0, row[0]["key"], row[2]["key"], "b")
    late = replies.request({"type": "vote", "prompt_index": 0, "a": row[0]["key"], "b": row[2]["key"], "choice": "b"})
    assert not late["ok"] and "would not be blind" in late["error"]["message"]
    assert len(c.votes) == 1
    again = replies.request({"type": "run"})
    assert not again["ok"] and "done already" in again["error"]["message"] and len(sandbox.settlements) == 6


def test_compare_results_votes_and_persistence_across_a_restart(ss, tmp_path):
    c = make_compare(ss, blind=False, vote_mode="pairwise")
    c.run().wait()
    cells = {(x["prompt_index"], x["col"]): x["key"] for x in c.cells}
    c.vote(0, cells[0, 0], cells[0, 1], "a")
    c.vote(1, cells[1, 0], cells[1, 2], "tie")
    c.vote(1, cells[1, 1], cells[1, 2], "b")
    with pytest.raises(InvalidParams, match="same prompt"):
        c.vote(0, cells[0, 0], cells[1, 1], "a")
    with pytest.raises(InvalidParams, match="choice"):
        c.vote(0, cells[0, 0], cells[0, 1], "maybe")
    df = c.results()
    assert list(df.columns[:8]) == ["cell", "model", "route", "prompt_index", "prompt", "repeat", "cost_usd", "status"]
    assert set(df["status"]) == {"complete"} and df["time_to_result_s"].notna().all()
    summary = {r["model"]: r for r in c.summary_rows()}
    assert summary["nano-banana"]["wins"] == 1 and summary["nano-banana"]["ties"] == 1
    assert summary["nano-banana"]["win_rate"] == pytest.approx(0.75)
    assert summary["nano-banana"]["cost_per_win"] == pytest.approx(0.134)
    assert summary["flux-2-pro"]["wins"] == 1 and summary["grok"]["losses"] == 2
    csv = (tmp_path / "r.csv")
    c.to_csv(str(csv))
    assert "nano-banana" in csv.read_text()
    ss.close()
    # A new kernel: a fresh process with the same ledger file restores the grid and the votes.
    script = textwrap.dedent(f"""
        from stablestudio_widgets import Compare, StableStudio, Wallet
        ss = StableStudio({ss.base_url!r}, Wallet.generate(), ledger={str(ss.ledger.path)!r})
        c = Compare.load({c.comparison_id!r}, client=ss)
        print(c.state, len(c.votes), sorted((r["model"], r["wins"], r["ties"]) for r in c.summary_rows()))
        print(sorted(set(c.results()["status"])))
        ss.close()
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "done 3 [('flux-2-pro', 1, 1), ('grok', 0, 0), ('nano-banana', 1, 1)]", "['complete']"]


def test_compare_ratings_transpose_and_validation(ss):
    with pytest.raises(InvalidParams, match="imageSize"):
        Compare(["x"], ["nano-banana-pro"], {"imageSize": "9K"}, client=ss)
    c = make_compare(ss, blind=False, transpose=True, vote_mode="rating", repeats=2)
    assert len(c.cells) == 12 and [col["label"] for col in c.columns] == ["a red fox", "a blue whale"]
    assert {x["col"] for x in c.cells} == {0, 1} and {x["row"] for x in c.cells} == {0, 1, 2}
    c.run().wait()
    key = c.cells[0]["key"]
    with pytest.raises(InvalidParams, match="is complete: nothing to retry"):
        c.retry(key)  # complete: running it again would pay twice
    c.rate(key, 5)
    with pytest.raises(InvalidParams, match="1 to 5"):
        c.rate(key, 6)
    rated = {r["model"]: r["mean_rating"] for r in c.summary_rows()}
    assert rated[c._cells[0].model] == 5
    assert Ledger(ss.ledger.path).votes(c.comparison_id)[0]["rating"] == 5


def test_compare_refuses_a_total_over_budget(sandbox, tmp_path):
    ss = StableStudio(sandbox.url, Wallet.generate(), ledger=tmp_path / "b.db", time_scale=TIME_SCALE, budget_usd=0.1)
    c = make_compare(ss)
    until(lambda: c.state == "ready")
    assert "more than the $0.10 left" in c.quote["message"]
    reply = Replies(c).request({"type": "run"})
    assert not reply["ok"] and reply["error"]["type"] == "BudgetExceeded" and "$0.10" in reply["error"]["message"]
    assert c.state == "ready" and ss.stats["signatures"] == 0
    with pytest.raises(BudgetExceeded):
        c.run()  # from code, the same refusal is raised by run() itself (no wait() needed) …
    assert "$0.10" in c.run_error and c.state == "ready" and ss.stats["signatures"] == 0  # … and shown
    ss.close()


def test_compare_run_from_code_never_loses_a_refusal(sandbox, tmp_path):
    """A total above the confirmation threshold, run from code without consent: with the quotes in,
    run() raises it before anything is signed; with the quotes still coming, the widget shows it
    when it is known and wait() raises it."""
    ss = StableStudio(sandbox.url, Wallet.generate(), ledger=tmp_path / "c.db", time_scale=TIME_SCALE,
                      confirm_above_usd=0.05)
    c = make_compare(ss)
    until(lambda: c.state == "ready")
    with pytest.raises(ConfirmationRequired):
        c.run()
    assert "confirm" in c.run_error and c.state == "ready"
    slow = Wire()
    slow.hold = lambda r: r.method == "POST" and not paid_post(r)  # the quotes are slow to come
    fresh = StableStudio(sandbox.url, ss.wallet, ledger=tmp_path / "c.db", time_scale=TIME_SCALE,
                         confirm_above_usd=0.05, transport=slow)  # a new client: no price known yet
    late = make_compare(fresh)
    assert late.run() is late and late.state == "quoting"  # not known yet: nothing to raise
    slow.release()
    until(lambda: late.run_error)
    assert "confirm" in late.run_error and late.state == "ready"
    with pytest.raises(ConfirmationRequired):
        late.wait()
    assert ss.stats["signatures"] == 0 and sandbox.settlements == []
    c.run(confirm=True).wait()  # consent given: it runs, and the refusal it showed is gone
    assert c.state == "done" and c.run_error == "" and len(sandbox.settlements) == 6
    fresh.close()
    ss.close()


def test_compare_run_from_code_hears_of_a_cell_refused_before_paying(sandbox, tmp_path):
    """A cell above the per-request limit is refused when it would pay: its card says so, and
    run() from code hears of it from wait() (and beside Run); the other cell is paid."""
    ss = StableStudio(sandbox.url, Wallet.generate(), ledger=tmp_path / "c.db", time_scale=TIME_SCALE,
                      max_usd_per_request=0.05)
    c = Compare(["a fox"], ["grok", "flux-2-pro"], client=ss, blind=False)
    until(lambda: c.state == "ready")
    prices = sorted(c.quote["per_cell_usd"].values())
    assert prices[0] <= 0.05 < prices[1]
    with pytest.raises(BudgetExceeded) as refused:
        c.run().wait()
    assert "Nothing was signed" in str(refused.value) and str(refused.value) in c.run_error
    until(lambda: sorted((x["job"] or {}).get("status", "") for x in c.cells) == ["complete", "failed"])
    assert len(sandbox.settlements) == 1
    card = next(x["job"] for x in c.cells if x["job"]["status"] == "failed")
    assert card["error"]["type"] == "BudgetExceeded" and "per-request cap" in card["error"]["message"]
    assert card["error"]["retryable"] and not card["error"]["resumable"]
    ss.close()


def test_compare_never_pays_again_for_a_paid_cell(ss, sandbox):
    """A lost cell was paid: its Retry and Resume both look for it again (as on every job card), and
    neither pays again; only a failed cell is paid again."""
    sandbox.set_faults(poll_404_s=60)
    c = Compare(["a fox"], ["grok", "nano-banana"], client=ss, blind=False)
    c.run().wait()
    until(lambda: all(x["job"] and x["job"]["status"] == "lost" for x in c.cells))
    assert all(x["job"]["error"]["resumable"] and not x["job"]["error"]["retryable"] for x in c.cells)
    sandbox.set_faults(poll_404_s=0)
    replies = Replies(c)
    a, b = (x["key"] for x in c.cells)
    assert replies.request({"type": "retry", "key": a, "amount_usd": 0.07})["ok"]
    assert replies.request({"type": "resume", "key": b})["ok"]
    until(lambda: all(x["job"]["status"] == "complete" for x in c.cells))
    assert len(sandbox.settlements) == 2


def test_compare_cell_whose_answer_was_lost_gets_the_job_it_paid_for(ss, sandbox):
    wire = Wire()
    client = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE, transport=wire)
    c = Compare(["a fox"], ["grok", "nano-banana"], client=client, blind=False)
    until(lambda: c.state == "ready")
    wire.trip = paid_post  # one cell's payment goes out and its answer never comes back
    c.run().wait()
    until(lambda: any((x["job"] or {}).get("status") == "failed" for x in c.cells))  # the cards, once flushed
    lost = next(x for x in c.cells if x["job"]["status"] == "failed")
    assert lost["job"]["error"]["resumable"] and not lost["job"]["error"]["retryable"]
    c.retry(lost["key"])  # from code too: looked for, never paid again
    until(lambda: all(x["job"]["status"] == "complete" for x in c.cells))
    assert len(sandbox.settlements) == 2
    saved = {x["key"]: x["job_id"] for x in ss.ledger.comparison(c.comparison_id)["cells"]}
    assert saved == {x["key"]: x["job"]["id"] for x in c.cells}  # linked to its cell: a restart restores it
    client.close()


def a_cell_loses_its_answer(ss, models: list[str], **kw) -> tuple[StableStudio, Compare, dict]:
    """A grid run by a kernel in which one cell's payment is signed and never reaches the service
    (as if that kernel stopped there): that kernel's client, the grid, and the lost cell as saved."""
    wire = Wire()
    first = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE, transport=wire)
    c = Compare(["a fox"], models, client=first, **kw)
    until(lambda: c.state == "ready")
    wire.trip = paid_post
    c.run().wait()

    def lost() -> list[dict]:
        return [x for x in ss.ledger.comparison(c.comparison_id)["cells"] if not x["job_id"]]

    until(lambda: len(lost()) == 1 and lost()[0]["payment"])  # the others have their jobs; it, its payment
    return first, c, lost()[0]


def expire(ss, first: StableStudio, nonce: str) -> None:
    """Later (its authorization ran out), the first kernel looks for the payment's job: none, so
    the payment expired unsettled."""
    ss.ledger.update_payment(nonce, valid_before=int(time.time()) - 60)
    first.resume()
    assert ss.ledger.payment(nonce)["status"] == "expired"
    first.close()


def saved_links(ss, c: Compare) -> dict:
    until(lambda: all(x["job_id"] for x in ss.ledger.comparison(c.comparison_id)["cells"]))
    return {x["key"]: x["job_id"] for x in ss.ledger.comparison(c.comparison_id)["cells"]}


def test_a_restored_compare_resumes_a_cell_whose_answer_its_kernel_lost(ss, sandbox):
    """The kernel stopped between a cell's payment and its answer: the restored grid knows that
    cell may be paid (Resume, never Retry), and its Resume gives the cell the job it bought."""
    first, c, lost = a_cell_loses_its_answer(ss, ["grok", "nano-banana"], blind=False)
    lost_key = lost["key"]
    first.close()
    later = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE)
    restored = Compare.load(c.comparison_id, client=later)
    until(lambda: next(x for x in restored.cells if x["key"] == lost_key)["job"])  # its card, once flushed
    cell = next(x for x in restored.cells if x["key"] == lost_key)
    assert cell["job"]["error"]["resumable"] and not cell["job"]["error"]["retryable"]
    assert "may have been paid — the authorization stays valid until" in cell["job"]["error"]["message"]
    replies = Replies(restored)
    assert replies.request({"type": "resume", "key": lost_key})["ok"]
    until(lambda: all(x["job"] and x["job"]["status"] == "complete" for x in restored.cells))
    assert len(sandbox.settlements) == 2  # the lost payment settled once, nothing paid again
    assert saved_links(ss, c) == {x["key"]: x["job"]["id"] for x in restored.cells}
    later.close()


def test_a_restored_compare_cell_whose_lost_payment_expired_unsettled_offers_retry(ss, sandbox):
    """A cell's payment lost its answer and expired unsettled before the grid was reloaded: the
    cell says so (nothing was paid) and its Retry pays anew, at the price it shows."""
    first, c, lost = a_cell_loses_its_answer(ss, ["grok", "nano-banana"], blind=False)
    expire(ss, first, lost["payment"])
    later = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE)
    restored = Compare.load(c.comparison_id, client=later)

    def cell():
        return next(x for x in restored.cells if x["key"] == lost["key"])

    until(lambda: cell()["job"])  # its card, once flushed
    err = cell()["job"]["error"]
    assert cell()["job"]["status"] == "failed" and "expired unsettled" in err["message"]
    assert "Nothing was paid" in err["message"] and "Retry pays again" in err["message"]
    assert err["retryable"] and err["retry_usd"] == 0.07 and not err["resumable"] and not err["dismissable"]
    replies = Replies(restored)
    assert replies.request({"type": "retry", "key": lost["key"], "amount_usd": 0.07})["ok"]
    until(lambda: all(x["job"] and x["job"]["status"] == "complete" for x in restored.cells))
    assert len(sandbox.settlements) == 2  # the other cell, and the retry: the expired payment never settled
    assert saved_links(ss, c) == {x["key"]: x["job"]["id"] for x in restored.cells}
    later.close()


def test_a_restored_blind_compare_cell_retries_at_the_price_its_payment_had(ss, sandbox):
    """Blind, the Retry button shows no price and the grid was not quoted again after the reload:
    the retry consents to what the cell's lost payment was for, no more."""
    first, c, lost = a_cell_loses_its_answer(ss, ["grok"])
    expire(ss, first, lost["payment"])
    later = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE,
                         confirm_above_usd=0.01)  # every payment needs consent
    restored = Compare.load(c.comparison_id, client=later)
    until(lambda: restored.cells[0]["job"])
    err = restored.cells[0]["job"]["error"]
    assert err["retryable"] and "retry_usd" not in err and "grok" not in json.dumps(restored.cells).lower()
    assert "Nothing was paid" in err["message"]
    assert Replies(restored).request({"type": "retry", "key": lost["key"]})["ok"]
    until(lambda: restored.cells[0]["job"]["status"] == "complete")
    assert len(sandbox.settlements) == 1
    later.close()


def test_a_restored_compare_cell_that_got_no_job_says_nothing_was_paid_and_retries(sandbox, tmp_path):
    """A cell refused before paying (over a per-request cap) has no job and no payment in the saved
    grid: restored, it says nothing was paid and offers Retry (Run is done), at the route's price."""
    ss = StableStudio(sandbox.url, Wallet.generate(), ledger=tmp_path / "c.db", time_scale=TIME_SCALE,
                      max_usd_per_request=0.05)
    c = Compare(["a fox"], ["grok", "flux-2-pro"], client=ss, blind=False)
    until(lambda: c.state == "ready")
    with pytest.raises(BudgetExceeded):
        c.run().wait()
    until(lambda: sorted(bool(x["job_id"]) for x in ss.ledger.comparison(c.comparison_id)["cells"]) == [False, True])
    ss.close()
    later = StableStudio(sandbox.url, ss.wallet, ledger=tmp_path / "c.db", time_scale=TIME_SCALE)
    restored = Compare.load(c.comparison_id, client=later)
    until(lambda: all(x["job"] for x in restored.cells))
    assert restored.state == "done"
    card = next(x for x in restored.cells if x["job"]["status"] == "failed")
    err = card["job"]["error"]
    assert "got no job" in err["message"] and "Nothing was paid" in err["message"]
    assert "Retry pays again" in err["message"]
    assert err["retryable"] and err["unpaid"] and not err["resumable"] and err["retry_usd"] == 0.07
    assert Replies(restored).request({"type": "retry", "key": card["key"], "amount_usd": 0.07})["ok"]
    until(lambda: all(x["job"]["status"] == "complete" for x in restored.cells))
    assert len(sandbox.settlements) == 2
    later.close()


def test_a_restored_compare_cell_finds_a_payment_its_grid_did_not_save(ss, sandbox):
    """The kernel stopped after a cell's payment was signed (the ledger has it) and before the grid
    saved it: restored, the cell finds that payment (same route and prompt, since the grid began)
    and says it may be paid — Resume, never a second payment."""
    first, c, lost = a_cell_loses_its_answer(ss, ["grok", "nano-banana"], blind=False)
    first.close()
    saved = ss.ledger.comparison(c.comparison_id)
    cells = [{**x, "payment": None} for x in saved["cells"]]  # the grid as saved before the payment was
    ss.ledger.save_comparison(c.comparison_id, saved["spec"], cells)
    later = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE)
    restored = Compare.load(c.comparison_id, client=later)
    until(lambda: all(x["job"] for x in restored.cells))
    cell = next(x for x in restored.cells if x["key"] == lost["key"])
    assert cell["job"]["error"]["resumable"] and not cell["job"]["error"]["retryable"]
    assert "may have been paid" in cell["job"]["error"]["message"]
    retry = {"type": "retry", "key": lost["key"], "amount_usd": 0.07}
    assert Replies(restored).request(retry)["ok"]  # it looks for the job: never pays
    until(lambda: all(x["job"]["status"] == "complete" for x in restored.cells))
    assert len(sandbox.settlements) == 2 and later.stats["signatures"] == 0
    assert saved_links(ss, c) == {x["key"]: x["job"]["id"] for x in restored.cells}
    later.close()


def test_a_restored_compare_cell_takes_its_own_payment_not_another_for_the_same_prompt(ss, sandbox):
    """After the grid began, the same model and prompt were paid elsewhere (a Studio) and that
    answer was lost too; then the grid's cell lost its answer before the grid saved its payment.
    Restored, the cell takes the payment signed for it (a payment names the cell it was signed
    for), not the other one that merely looks the same."""
    wire = Wire()
    first = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE, transport=wire)
    c = Compare(["a fox"], ["grok", "nano-banana"], client=first, blind=False)
    until(lambda: c.state == "ready")
    grok_paid = lambda r: paid_post(r) and "/grok/" in r.url.path  # noqa: E731
    wire.trip = grok_paid
    with pytest.raises(RuntimeError, match="caught fire"):
        first.generate("grok", "a fox")  # elsewhere, the same model and prompt: its answer is lost
    wire.trip = grok_paid
    c.run().wait()

    def grok_cell() -> dict:
        return next(x for x in ss.ledger.comparison(c.comparison_id)["cells"] if x["model"] == "grok")

    until(lambda: grok_cell()["payment"])
    own = grok_cell()["payment"]
    first.close()
    saved = ss.ledger.comparison(c.comparison_id)  # as saved before that payment was
    ss.ledger.save_comparison(c.comparison_id, saved["spec"],
                              [{**x, "payment": None} if x["model"] == "grok" else x for x in saved["cells"]])
    later = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE)
    restored = Compare.load(c.comparison_id, client=later)
    until(lambda: all(x["job"] for x in restored.cells))
    assert next(x for x in restored._cells if x.model == "grok").job.payment[0] == own
    later.close()


def test_a_restored_grid_whose_only_cell_lost_its_answer_before_the_save_offers_resume_not_run(ss, sandbox):
    """The grid's one payment was signed and its answer lost before the grid saved it: the grid
    still ran (it is saved as running before any cell signs), so the cell offers Resume on that
    payment; it is not shown as a grid never run, whose Run would pay again."""
    wire = Wire()
    first = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE, transport=wire)
    c = Compare(["a fox"], ["grok"], client=first, blind=False)
    until(lambda: c.state == "ready")
    wire.trip = paid_post
    c.run().wait()
    until(lambda: ss.ledger.comparison(c.comparison_id)["cells"][0]["payment"])
    first.close()
    saved = ss.ledger.comparison(c.comparison_id)
    ss.ledger.save_comparison(c.comparison_id, {**saved["spec"], "state": "running"},
                              [{**x, "payment": None} for x in saved["cells"]])  # saved at its start
    later = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE)
    restored = Compare.load(c.comparison_id, client=later)
    until(lambda: all(x["job"] for x in restored.cells))
    assert restored.state == "done"
    (cell,) = restored.cells
    assert cell["job"]["error"]["resumable"] and not cell["job"]["error"]["retryable"]
    later.close()


SAVED_GRID_EDITS = {
    "cells not a list": lambda spec, cells: (spec, {"a": 1}),
    "a cell missing": lambda spec, cells: (spec, cells[:1]),
    "a cell not an object": lambda spec, cells: (spec, ["x", *cells[1:]]),
    "a key not text": lambda spec, cells: (spec, [{**x, "key": 5} for x in cells]),
    "a job id not text": lambda spec, cells: (spec, [{**x, "job_id": 5} for x in cells]),
    "a payment not text": lambda spec, cells: (spec, [{**x, "payment": ["x"]} for x in cells]),
    "prompts not a list": lambda spec, cells: ({**spec, "prompts": 5}, cells),
    "revealed not a bool": lambda spec, cells: ({**spec, "revealed": "yes"}, cells),
    "state not text": lambda spec, cells: ({**spec, "state": 5}, cells),
    "repeats not a number": lambda spec, cells: ({**spec, "repeats": "2"}, cells),
}


def test_a_grid_saved_before_its_reveal_and_state_were_kept_still_restores(ss):
    c = Compare(["a fox"], ["grok", "nano-banana"], client=ss, blind=False)
    until(lambda: c.state == "ready")
    saved = ss.ledger.comparison(c.comparison_id)
    older = {k: v for k, v in saved["spec"].items() if k not in ("revealed", "state")}
    ss.ledger.save_comparison(c.comparison_id, older, saved["cells"])
    restored = Compare.load(c.comparison_id, client=ss)
    until(lambda: restored.state == "ready")  # never run: it quotes again, and can run


@pytest.mark.parametrize("edit", sorted(SAVED_GRID_EDITS))
def test_a_saved_grid_edited_in_the_ledger_is_refused_with_why(ss, edit):
    c = Compare(["a fox"], ["grok", "nano-banana"], client=ss, blind=False)
    until(lambda: c.state == "ready")
    saved = ss.ledger.comparison(c.comparison_id)
    ss.ledger.save_comparison(c.comparison_id, *SAVED_GRID_EDITS[edit](saved["spec"], saved["cells"]))
    with pytest.raises(InvalidParams, match="not as this client saves one"):
        Compare.load(c.comparison_id, client=ss)


def test_a_restored_compare_follows_the_cells_its_kernel_left_running(ss, sandbox):
    wire = Wire()
    wire.hold = poll  # the first kernel never sees its jobs finish
    first = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE, transport=wire)
    c = Compare(["a fox"], ["grok", "nano-banana"], client=first, blind=False)
    c.run()
    until(lambda: all(x["job_id"] for x in ss.ledger.comparison(c.comparison_id)["cells"]))
    later = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE)
    restored = Compare.load(c.comparison_id, client=later)  # followed at once, no Resume pressed
    until(lambda: all(x["job"] and x["job"]["status"] == "complete" for x in restored.cells))
    assert len(sandbox.settlements) == 2
    wire.release()
    first.close()
    later.close()


def test_compare_retries_a_failed_cell_alone(ss, sandbox):
    sandbox.set_faults(fail_rate=1.0)
    c = Compare(["a fox"], ["grok", "nano-banana"], client=ss, blind=False)
    replies = Replies(c)
    early = replies.request({"type": "retry", "key": c.cells[0]["key"]})  # Run pays for every cell: not twice
    assert not early["ok"] and "has not run yet" in early["error"]["message"] and ss.stats["signatures"] == 0
    c.run().wait()
    until(lambda: all(x["job"] and x["job"]["status"] == "failed" for x in c.cells))
    sandbox.set_faults(fail_rate=0.0)
    key = c.cells[0]["key"]
    assert replies.request({"type": "retry", "key": key})["ok"]
    until(lambda: next(x for x in c.cells if x["key"] == key)["job"]["status"] == "complete")
    assert [x["job"]["status"] for x in c.cells if x["key"] != key] == ["failed"]
    assert len(sandbox.settlements) == 3
    done = replies.request({"type": "retry", "key": key})
    assert not done["ok"] and "is complete: nothing to retry" in done["error"]["message"]
    assert len(sandbox.settlements) == 3


def test_static_copy_escapes_what_the_service_says():
    """The static copy is HTML saved in the notebook: a hostile result URL, prompt or error text
    from the service must not become a link, a script or markup."""
    from stablestudio_widgets.widgets.static import card_html, page_html

    record = {"key": "k", "label": "<b>Grok</b>", "media": "image", "status": "complete",
              "prompt": "<script>alert(1)</script>", "params": {"aspect_ratio": '"><img src=x onerror=alert(1)>'},
              "cost_usd": 0.07, "receipt": {"transaction": "0x" + "ab" * 32, "explorer_url": "javascript:alert(1)"},
              "result": {"url": "javascript:alert(1)", "thumbnail_url": "data:text/html,<script>", "thumb": None},
              "error": {"message": "<iframe src=//evil>"}}
    html = page_html("abc123", "Studio", [(None, record)])
    assert "javascript:" not in html and "data:text/html" not in html
    assert "<script>" not in html and "<iframe" not in html and "<b>Grok" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and 'class="ssw-static ssw-static-abc123"' in html
    safe = card_html({**record, "result": {"url": "https://cdn.example/x.png", "thumb": "data:image/jpeg;base64,AA=="}})
    assert 'href="https://cdn.example/x.png"' in safe and 'src="data:image/jpeg;base64,AA=="' in safe
