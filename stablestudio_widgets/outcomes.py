"""How one signed payment ended (:class:`Outcome`), how a refusal reads, and the error that says
what happened, what it cost and what to do. :mod:`payments` decides the outcome and does its
bookkeeping; this module only reads and explains.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from enum import Enum

import httpx

from .errors import InvalidParams, PaymentRejected, PaymentRequiredError, ServiceError, fmt_usd
from .service import json_or_none
from .x402 import Credential, PaymentRequired, decode_payment_required


class Outcome(str, Enum):
    """How one signed payment ended, as far as this client can know."""

    SETTLED = "settled"        # 200: the service took it
    REFUSED = "refused"        # a definite answer that is not a success: its authorization stays valid
    NONCE_USED = "nonce_used"  # a 402 for a payment an earlier send may have settled
    UNCERTAIN = "uncertain"    # no definite answer after it may have left: it may have settled
    UNSENT = "unsent"          # it never left this machine (no attempt got a connection)


def failure(outcome: Outcome, r: httpx.Response | None, refusal: PaymentRequired | None, path: str,
            signed: Credential, *, base_url: str, tries: int) -> Exception:
    """The error to raise for an outcome that bought nothing we could find: what happened, what
    it cost, what to do."""
    usd_ = signed.requirement.amount_usd
    reason = refusal.error if refusal else None
    if outcome is Outcome.UNSENT:
        return ServiceError(f"The service could not be reached at {base_url} (no connection could be opened, "
                            "or freed, in time). The payment never left this machine: nothing was paid.")
    if outcome is Outcome.UNCERTAIN and r is None:
        return ServiceError(
            f"The service did not answer the paid request to {path} after {tries} tries. "
            f"The payment ({fmt_usd(usd_)}, nonce {signed.nonce[:10]}…) may have settled; it is recorded in the "
            "ledger and ss.resume() will find the job or confirm nothing was paid. Nothing was signed twice.",
            paid_usd=usd_)
    if outcome is Outcome.NONCE_USED:
        return PaymentRejected(
            f"The service refused a re-sent payment ({reason or 'no reason'}) after an earlier send may have "
            f"settled ({fmt_usd(usd_)}). It is recorded in the ledger; ss.resume() will look for the job. "
            "Nothing was signed twice.", reason=reason, nonce=signed.nonce, paid_usd=usd_)
    assert r is not None
    held = (f"The signed authorization ({fmt_usd(usd_)}) stays valid until {valid_until(signed)} and counts "
            "against your budgets until then; as far as we know it did not settle.")
    if outcome is Outcome.UNCERTAIN:
        return ServiceError(f"The paid request to {path} got HTTP {r.status_code} after an earlier send may have "
                            f"settled ({fmt_usd(usd_)}): {r.text[:200]}. ss.resume() will look for the job.",
                            status=r.status_code, body=r.text, paid_usd=usd_)
    if r.status_code == 402:
        return PaymentRejected(f"The service refused the payment for {path}: {reason or 'no reason given'}. "
                               + held, reason=reason, nonce=signed.nonce)
    if r.status_code in (400, 422) or route_gone(r):
        return rejected(r, path, held)
    return ServiceError(f"The paid request to {path} got HTTP {r.status_code}: {r.text[:200]}. {held}",
                        status=r.status_code, body=r.text)


def valid_until(signed: Credential) -> str:
    """When a signed payment stops being money (its deadline), in the user's local time."""
    return datetime.fromtimestamp(signed.valid_before).strftime("%H:%M")


def read_refusal(r: httpx.Response) -> PaymentRequired | None:
    """A 402's terms, or None when they cannot be read (the refusal still counts as one). The
    router puts a refusal's reason in the body (``{"error": "Payment rejected (…)", "reason"}``)
    and keeps the header a plain challenge: the reason is taken from there when the header has none."""
    body = json_or_none(r)
    try:
        required = decode_payment_required(r.headers.get("payment-required"), body)
    except PaymentRequiredError:
        required = None
    said = body.get("error") if isinstance(body, dict) else None
    if isinstance(said, str) and said and (required is None or not required.error):
        said = said[:500]
        required = dataclasses.replace(required, error=said) if required else PaymentRequired([], {}, said, {}, {})
    return required


def route_gone(r: httpx.Response) -> bool:
    """The router's answer for a path it does not serve (a model that was removed)."""
    body = json_or_none(r) if r.status_code == 404 else None
    return isinstance(body, dict) and body.get("code") == "route_not_found"


def rejected(r: httpx.Response, path: str, held: str | None = None) -> InvalidParams:
    """A request the service would not take; ``held`` says until when a signed authorization that
    went with it stays valid (None: nothing was signed)."""
    tail = {"unpaid": False} if held else {}
    if route_gone(r):
        return InvalidParams(f"The service no longer offers {path} (404 route_not_found): the model or operation was "
                             "removed. ss.refresh_routes() reads the service's current route table."
                             + (f" {held}" if held else ""), field="route", **tail)
    return InvalidParams(f"The service rejected the request to {path}: {r.text[:300]}" + (f". {held}" if held else ""),
                         **tail)


def error_text(r: httpx.Response | None, refusal: PaymentRequired | None, outcome: Outcome) -> str | None:
    if outcome is Outcome.SETTLED:
        return None
    if r is None:
        return "no definite answer" if outcome is Outcome.UNCERTAIN else "could not connect: never sent"
    if refusal is not None and refusal.error:
        return refusal.error
    return f"HTTP {r.status_code}: {r.text[:480]}"
