"""Widgets, kernel side, against the sandbox: what the front end sees and what its messages do.
(The browser tier in tests/browser drives the same widgets in real Chromium.)"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import time

import pytest
from PIL import Image

from stablestudio_widgets import (
    BudgetExceeded,
    Compare,
    Gallery,
    InvalidParams,
    JobCard,
    StableStudio,
    StableStudioError,
    Studio,
    Wallet,
)
from stablestudio_widgets.ledger import Ledger

from .conftest import TIME_SCALE

MODEL_NAMES = ("nano-banana", "grok", "flux-2-pro", "Nano Banana", "Grok Imagine", "FLUX.2")


def until(cond, seconds: float = 30.0):
    """Wait for a condition the kernel side reaches asynchronously (a deadline, not a sleep)."""
    end = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.01)


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


def test_gallery_resumes_unfinished_paid_jobs_from_the_ledger(ss, sandbox):
    """A job paid in an earlier session that never finished: the gallery offers Resume and finishes it."""
    sandbox.set_faults(poll_404_s=5)
    job = ss.generate("grok", "left behind")  # paid; nobody polls it (the kernel 'restarted')
    sandbox.set_faults(poll_404_s=0)
    later = StableStudio(ss.base_url, ss.wallet, ledger=ss.ledger, time_scale=TIME_SCALE)
    g = Gallery(later)
    g.show_ledger = True
    until(lambda: g.jobs and g.jobs[0]["error"])
    assert g.jobs[0]["id"] == job.id and g.jobs[0]["error"]["resumable"]
    replies = Replies(g)
    assert replies.request({"type": "resume", "key": job.id})["ok"]
    until(lambda: g.jobs[0]["status"] == "complete")
    assert ss.ledger.job(job.id)["status"] == "complete" and len(sandbox.settlements) == 1
    g.show_ledger = False
    g.show_ledger = True  # the ledger's rows again: the live job keeps its one card
    g._feed.flush()  # what the next flush shows, now
    assert job.id in g._feed.extra and [(j["id"], j["status"]) for j in g.jobs] == [(job.id, "complete")]
    nothing = replies.request({"type": "resume", "key": job.id})  # a stale Resume: every paid job finished
    assert not nothing["ok"] and "Nothing to resume" in nothing["error"]["message"]
    later.close()


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
    with pytest.raises(InvalidParams, match="only a failed cell"):
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
        c.run().wait()  # from code, the same refusal is raised
    ss.close()


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
    assert not done["ok"] and "only a failed cell" in done["error"]["message"] and len(sandbox.settlements) == 3


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
