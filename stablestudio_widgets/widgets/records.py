"""The view-model: job records as the front end renders them (URLs and words, never bytes or
secrets), blind masking, what a card may offer after an error, the ledger's history, and the
payment inspector's teaching text made from the client's structured events.
"""

from __future__ import annotations

import re
from typing import Any

from ..boundary import atomic_amount, finite_number, ledger_params, result_url
from ..catalog import Catalog, Route
from ..errors import (
    ConfirmationRequired,
    InvalidParams,
    JobFailed,
    JobInterrupted,
    JobTimeout,
    PaymentExpired,
    StableStudioError,
    usd,
)
from ..jobs import AsyncJob, JobEvent
from ..siwx import text_for
from ..status import FINAL
from ..x402 import NETWORK_NAMES, parse_requirement


def jsonable(params: dict[str, Any]) -> dict[str, Any]:
    """Params as JSON: local files and images become their names, never bytes."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, (list, tuple)):
            out[k] = [x if isinstance(x, (str, int, float, bool)) else _label(x) for x in v]
        else:
            out[k] = v if isinstance(v, (str, int, float, bool, type(None))) else _label(v)
    return out


def _label(v: Any) -> str:
    if isinstance(v, (bytes, bytearray)):
        return f"<{len(v)} bytes>"
    return f"<{type(v).__name__}>" if not hasattr(v, "__fspath__") else str(v)


def _record(route: Route, *, key: str, id: str | None, params: dict[str, Any], status: str, detail: str,
            created_at: float, finished_at: float | None, typical_s: float | None, cost_usd: float | None,
            receipt: dict[str, Any] | None, result: dict[str, Any] | None, error: dict[str, Any] | None,
            inspector: list[dict[str, Any]]) -> dict[str, Any]:
    """The one shape of a card record, for live jobs and ledger rows alike."""
    return {"key": key, "id": id, "route": route.id, "model": route.model, "label": route.label,
            "media": route.media, "prompt": params.get("prompt") or "", "params": jsonable(params),
            "status": str(status), "detail": detail, "created_at": int(created_at * 1000),
            "finished_at": int(finished_at * 1000) if finished_at else None, "typical_s": typical_s,
            "cost_usd": cost_usd, "receipt": receipt, "result": result, "error": error, "inspector": inspector,
            "uploads": []}


def job_record(job: AsyncJob, *, masked: bool = False, inspector: bool = True,
               dismiss: bool = True) -> dict[str, Any]:
    """A live job as a card record; ``masked`` hides everything that names or prices the model;
    ``dismiss``: the widget lets a card whose payment expired unsettled be closed."""
    err = job.error
    res = job.result
    record = _record(
        job.route, key=job.key, id=job.id, params=job.params, status=job.status, detail=job.detail,
        created_at=job.created_at, finished_at=job.finished_at, typical_s=job.route.typical_s * job.scale,
        cost_usd=job.cost_usd, receipt=job.receipt.to_dict() if job.receipt else None,
        result={"url": res.url, "thumbnail_url": res.thumbnail_url, "local_path": res.local_path, "thumb": res.thumb}
        if res else None,
        error={**err.to_dict(), "message": for_card(str(err)), **recovery(job, err, dismiss)} if err else None,
        inspector=inspector_steps(job) if inspector else [])
    record["uploads"] = [dict(u) for u in getattr(job, "uploads", [])]
    return mask_record(record) if masked else record


# Advice written for code, rewritten for a card that has buttons for it.
_CARD_WORDS = [
    (r"Retry with job\.retry\(\) \(a new payment\) or try another model\.", "Retry pays again; or try another model."),
    (r"call job\.wait\(\) again or ss\.resume\(\) later\.?", "Resume checks on it again."),
    (r"Call again with confirm=True to pay it\.", "Pay confirms it."),
    (r"\bss\.resume\(\)", "Resume"),
    (r"\bjob\.wait\(\)", "Resume"),
    (r"\bjob\.retry\(\)", "Retry"),
]


def for_card(message: str) -> str:
    """An error's text for a card: no Python calls next to the buttons that do the same."""
    for pattern, words in _CARD_WORDS:
        message = re.sub(pattern, words, message)
    return message


def recovery(job: AsyncJob, err: StableStudioError, dismiss: bool = True) -> dict[str, Any]:
    """What a card may offer. A paid job that did not finish (timed out, not found, interrupted)
    and a request whose payment may have settled (no job id yet, money possibly moved) are
    resumable, never retryable: a retry would sign a second payment for what was paid. A retry
    (a failed job, or a request that ended before anything was paid) shows the amount it consents
    to (``retry_usd``): what the job cost, or the price it was last asked, or the route table's
    estimate. A card whose payment expired unsettled may also be closed (``dismissable``)."""
    maybe_paid = may_be_paid(job, err)
    retryable = isinstance(err, JobFailed) or (job.id is None and not maybe_paid)
    return {"retryable": retryable,
            "resumable": isinstance(err, JobTimeout) or (job.id is not None and not job.done) or maybe_paid,
            "retry_usd": retry_price(job, err) if retryable else None,
            "unpaid": job.id is None and not maybe_paid,  # nothing was paid for the generation
            "dismissable": dismiss and job.id is None and isinstance(err, PaymentExpired)}


def may_be_paid(job: AsyncJob, err: StableStudioError | None) -> bool:
    """A request with no job whose payment may have moved money: it is looked for, never paid
    again. Known from the kind of error (a lost answer, an interruption after signing), not only
    from the amount it names, which a lost answer's card reads back from the ledger."""
    return job.id is None and err is not None and (
        err.paid_usd > 0 or (job.payment is not None and isinstance(err, JobInterrupted)))


def retry_price(job: AsyncJob, err: StableStudioError | None) -> float:
    """What a retry of ``job`` consents to pay: its last known price (what it cost, what it was
    asked, what its lost payment was for: read back from the ledger, so never above the route
    table's price for its parameters; a dearer 402 asks for confirmation)."""
    if job.cost_usd is not None:
        return job.cost_usd
    if isinstance(err, ConfirmationRequired):
        return err.price_usd
    table = job.route.price_atomic(job.params)
    return usd(min(job.payment[1], table) if job.payment is not None else table)


def mask_record(record: dict[str, Any]) -> dict[str, Any]:
    """A job record with nothing that names or prices its model: route, label, parameters (their
    names differ per model), cost, receipt, inspector and error text (it may quote the route)."""
    err = record.get("error")
    return {**record, "route": "", "model": "", "label": "", "params": {"prompt": record.get("prompt", "")},
            "cost_usd": None, "receipt": None, "inspector": [], "typical_s": None, "uploads": [],
            "error": {**{k: err.get(k) for k in ("type", "retryable", "resumable", "unpaid", "dismissable")},
                      "message": _blind_words(err)} if err else None}


def _blind_words(err: dict[str, Any]) -> str:
    """A masked cell's error: what it cost and what to do, naming no model."""
    if err.get("resumable"):
        return "This cell may have been paid: Resume looks for its job (never paying again). Details after the reveal."
    if err.get("unpaid"):
        return "Nothing was paid for this cell: Retry pays anew. Details are shown after the reveal."
    return "This cell failed; details are shown after the reveal."


def ledger_records(ledger: Any, catalog: Catalog, base_url: str, limit: int = 500) -> dict[str, dict[str, Any]]:
    """Past jobs from the ledger as card records (keyed by job id), for any base URL."""
    out: dict[str, dict[str, Any]] = {}
    for row in ledger.jobs(limit=limit):
        route = catalog.routes.get(row["route"])
        if route is None:
            continue
        url = result_url(row["result_url"], row["base_url"])  # what the ledger kept is checked again
        unfinished = row["status"] not in FINAL and row["base_url"] == base_url
        error = None
        if row["error"] or unfinished:
            error = {"type": "Unfinished" if unfinished else "Error", "retryable": False, "resumable": unfinished,
                     "message": row["error"] or "Paid but never finished here: Resume polls it to the end."}
        result = ({"url": url, "thumbnail_url": result_url(row["thumbnail_url"], row["base_url"]),
                   "local_path": row["local_path"]} if url else None)
        paid = atomic_amount(row["amount"])  # read back from a file: checked
        out[row["id"]] = _record(
            route, key=row["id"], id=row["id"], params=ledger_params(route, row["params"]), status=row["status"],
            detail="from the ledger", created_at=finite_number(row["created_at"]) or 0.0,
            finished_at=finite_number(row["finished_at"]),
            typical_s=route.typical_s, cost_usd=usd(paid) if paid is not None else None,
            receipt=ledger.receipt(row["nonce"]) if row["nonce"] else None, result=result, error=error, inspector=[])
    return out


# --- the payment inspector: events in words ------------------------------------------------------

def _mpp_words(d: dict[str, Any]) -> str:
    """An MPP credential in words: the Tempo transaction it carries (or the $0 proof)."""
    cred = d["Authorization"]
    challenge = str(cred.get("challenge", {}).get("id", ""))[:12]
    if cred.get("payload", {}).get("type") == "proof":
        return f"MPP $0 proof: EIP-712 Proof(account, challengeId {challenge}…, realm), single-use"
    raw = str(cred.get("payload", {}).get("signature", ""))
    how = ("0x78 hand-off: the server's fee payer co-signs and pays the fees" if raw.startswith("0x78") else
           "0x76 transaction, fees paid by you in the charge token")
    tx = f", transaction {d['transaction'][:12]}…" if d.get("transaction") else ""
    return (f"MPP credential: a Tempo {how}; one transferWithMemo, memo bound to challenge {challenge}…, "
            f"expiring nonce valid until {int(d.get('deadline') or 0)}{tx}; the server broadcasts it")


def inspector_steps(job: AsyncJob) -> list[dict[str, Any]]:
    return [_step(e) for e in job.events]


def _step(e: JobEvent) -> dict[str, Any]:
    title, summary, data = _words(e)
    return {"step": title, "summary": summary, "data": data, "at_ms": int(e.at * 1000),
            "duration_ms": round(e.duration_ms, 1), "from_memory": bool(e.data.get("cached"))}


def _age(seconds: Any) -> str:
    """How long ago terms were learned, in words (" (learned 3 h ago)"), or nothing."""
    if not isinstance(seconds, (int, float)) or seconds < 60:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f" (learned {seconds // size:.0f} {unit} ago)"
    return ""


def _words(e: JobEvent) -> tuple[str, str, dict[str, Any]]:
    d = e.data
    if e.kind == "terms":
        required = d.get("PAYMENT-REQUIRED", "(not kept once the job finished: the offer is above)")
        try:
            what = parse_requirement(d.get("accepted"), 0).describe()
        except StableStudioError:
            what = "terms the client could not read"
        what = d.get("offer") or what
        header = ("WWW-Authenticate: Payment challenge (MPP)" if d.get("method") == "mpp-tempo" else
                  "PAYMENT-REQUIRED header")
        how = (f"reused from an earlier paid request{_age(d.get('age_s'))}: this payment needs one round trip"
               if d.get("reused") else
               f"read earlier from an unpaid request's 402 answer, {header} (the price shown), kept in memory"
               if d.get("cached")
               else f"read from the unpaid request's 402 answer, {header}")
        return "402 Payment Required", f"{what} — {how}", {"PAYMENT-REQUIRED": required}
    if e.kind == "signed" and "Authorization" in d:
        return "Signed credential", _mpp_words(d), d
    if e.kind == "signed":
        inner = d["PAYMENT-SIGNATURE"]["payload"]
        if "transaction" in inner:  # x402 exact on Solana
            accepted = d["PAYMENT-SIGNATURE"]["accepted"]
            fee_payer = str((accepted.get("extra") or {}).get("feePayer"))
            return ("Signed transaction",
                    f"Solana transaction: TransferChecked of {accepted['amount']} atomic units of USDC to "
                    f"{accepted['payTo'][:10]}…'s token account, signed by the payer only (the fee payer "
                    f"{fee_payer[:10]}… completes it), can land until its blockhash expires", d)
        auth = inner["authorization"]
        nonce = f", nonce {auth['nonce'][:10]}…" if "nonce" in auth else ""
        return ("Signed authorization", f"EIP-3009 TransferWithAuthorization of {auth['value']} atomic units"
                f"{nonce}, valid until {auth['validBefore']}", d)
    if e.kind == "settled":
        r = d.get("PAYMENT-RESPONSE") or {}
        network = NETWORK_NAMES.get(r.get("network") or "", r.get("network") or "?")
        header = "Payment-Receipt" if d.get("method") == "mpp-tempo" else "PAYMENT-RESPONSE"
        return "Settlement", f"{header}: {r.get('transaction') or 'no receipt'} on {network}", d
    if e.kind == "signed_in":
        payload = d.get("SIGN-IN-WITH-X") or {}
        text = text_for(payload) if payload.get("address") else ""
        how = ("Solana sign-in message, Ed25519 signature" if payload.get("type") == "ed25519" else
               "EIP-4361 message, EIP-191 signature")
        return ("Sign-In-With-X", f"polled GET {d['path']} → HTTP {d['status']}, signed in as the payer ({how})",
                {"SIGN-IN-WITH-X": payload, "message": text})
    if e.kind == "result":
        return "Result", f"complete after {d['polls']} polls", {"url": d["url"], "thumbnail_url": d["thumbnail_url"]}
    return e.kind, "", d


def as_history(record: dict[str, Any]) -> dict[str, Any]:
    """A failed card that was retried: kept, but its Retry is done (the new card has it)."""
    err = record.get("error")
    return {**record, "error": {**err, "retryable": False, "retry_usd": None} if err else None,
            "detail": "Retried: the newer card is the new attempt"}


_SAVED_SPEC = {"prompts": list, "models": list, "params": dict, "overrides": dict, "repeats": int, "blind": bool,
               "transpose": bool, "vote_mode": str, "order": list}
_SAVED_LATER = {"revealed": bool, "state": str}  # absent from grids saved by earlier versions


def readable_comparison(saved: Any, comparison_id: str, where: Any) -> dict[str, Any]:
    """A comparison as the ledger kept it, checked for the shape this client saves (the file may have
    been edited): anything else is an InvalidParams naming it, never a crash or a half-restored grid."""
    if saved is None:
        raise InvalidParams(f"No comparison {comparison_id!r} in the ledger {where}.", field="comparison_id")
    spec, cells = saved.get("spec"), saved.get("cells")
    ok = (isinstance(spec, dict) and all(type(spec.get(k)) is t for k, t in _SAVED_SPEC.items())
          and all(k not in spec or type(spec[k]) is t for k, t in _SAVED_LATER.items())
          and all(isinstance(x, str) for x in (*spec["prompts"], *spec["models"]))
          and isinstance(cells, list) and len(cells) == len(spec["prompts"]) * len(spec["models"]) * spec["repeats"]
          and all(isinstance(c, dict) and isinstance(c.get("key"), str) for c in cells)
          and all(isinstance(c.get(k), (str, type(None))) for c in cells for k in ("job_id", "payment"))
          and finite_number(saved.get("created_at")) is not None)
    if not ok:
        raise InvalidParams(f"The comparison {comparison_id!r} in the ledger {where} is not as this client saves "
                            "one (the file was changed): it cannot be restored.", field="comparison_id")
    return saved
