"""The paid request: learn (or reuse) a route's terms → choose an offer → check the policy → sign
once → write the ledger → send, re-sending the *same* credential on ambiguous failures so it
settles at most once. How an offer is signed and its receipt read is the business of its
payment method (:mod:`methods`); everything else here is the same for every method.

Each attempt ends in one :class:`Outcome`, decided by :meth:`Payments._classify` from what came
back; :meth:`Payments._apply` is the one place that turns an outcome into bookkeeping (the
spending reservation and the ledger row). Nothing else pairs them. An authorization that left
this machine counts against every budget until it settled or expired, whatever the answer was.

Terms cross the trust boundary here: what the route table says a route may cost bounds every
402, the user's consent bounds every signature, and a payee that changes needs new consent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from .catalog import Catalog, Route
from .errors import (
    ConfirmationRequired,
    PaymentRequiredError,
    ServiceError,
)
from .ledger import Ledger
from .methods import PaymentMethod, default_methods, preference_rank
from .networks import same_address
from .outcomes import Outcome, error_text, failure, read_refusal, rejected, route_gone, valid_until
from .policy import Consent, Spending, SpendingPolicy, check_terms
from .quotes import Option
from .schedule import parse_retry_after
from .service import Service, json_or_none
from .status import PaymentStatus
from .x402 import Credential, PaymentRequired, Receipt, Requirement, decode_payment_required

if TYPE_CHECKING:
    from .jobs import AsyncJob

UPLOAD_BODY = {"filename": "image.png", "contentType": "image/png"}  # what an upload is quoted with
#: Terms a payment settled on are kept in the ledger this long: the next kernel pays in one round trip.
TERMS_MAX_AGE_S = 24 * 3600
FindJob = Callable[[Route, dict[str, Any], float, str], Awaitable[str | None]]


@dataclass
class Terms:
    """Payment terms learned for one route and price point, reused to pay in one round trip."""

    required: PaymentRequired
    requirement: Requirement
    method: PaymentMethod
    paid: bool = False  # a payment on these terms was accepted (here or, kept in the ledger, in another kernel)
    learned_at: float = 0.0
    learned_ms: float = 0.0
    options: tuple[Option, ...] = ()  # what every offer of the 402 costs (quotes show them)


@dataclass
class Paid:
    """What a settled (or found) payment bought: the service's answer, its receipt, the payment."""

    data: dict[str, Any]
    receipt: Receipt | None
    signed: Credential
    sent_at: float | None = None  # when the request that made the job was signed: the job is no older


class Payments:
    """Terms cache, requirement choice and the paid POST for one client.

    ``methods`` are the ways this client can pay (:func:`methods.default_methods`); ``prefer``
    orders the networks when a 402 offers several the wallet can pay (else the server's order).
    """

    def __init__(self, service: Service, policy: SpendingPolicy, spending: Spending, ledger: Ledger,
                 catalog: Catalog, *, session: str, on_chain: bool, find_job: FindJob,
                 methods: list[PaymentMethod] | None = None, prefer: list[str] | None = None):
        self.service, self.policy, self.spending, self.ledger = service, policy, spending, ledger
        self.catalog, self.session, self.on_chain, self.find_job = catalog, session, on_chain, find_job
        self.methods = methods if methods is not None else default_methods()
        self.prefer = prefer or []
        self.terms: dict[tuple, Terms] = {}
        self._learning: dict[tuple, asyncio.Lock] = {}
        self.in_flight: set[str] = set()  # nonces of payments a paid POST of this client is still handling

    # --- terms -------------------------------------------------------------------------------------
    @staticmethod
    def price_key(route: Route, body: dict[str, Any]) -> tuple:
        """Routes whose price depends on parameters get one terms entry per price point; a route
        whose price model we do not know (only the live table has it) one per request body."""
        if not route.price_known:
            return (route.id, json.dumps(body, sort_keys=True, default=str))
        return (route.id, *route.price_point(body).items())

    def top_price(self, key: tuple) -> tuple[str, int]:
        """What the route table says a call may cost at most (0: it does not know), and what to
        call it in messages. Our own price model decides; a route only the live table lists has
        only the service's word for it."""
        route = self.catalog.routes.get(key[0])
        if route is None:
            return "an upload", self.catalog.upload["price"]
        if not route.price_known:
            return route.id, round(route.price_usd[1] * 1e6)
        return route.id, self.catalog.price_range(route.id)[1]

    def offers(self, required: PaymentRequired,
               response: httpx.Response | None = None) -> list[tuple[Requirement, PaymentMethod | None]]:
        """Every offer of a 402 with the method that handles it (None: no method does), in the
        server's order; offers a method reads from elsewhere in the answer (another protocol's
        challenge header) come after."""
        found = [(req, m) for m in self.methods for req in m.offers(required, response)]
        handled = [req for req, _ in found]
        found += [(req, None) for req in required.accepts if req not in handled]
        order = {id(req): i for i, req in enumerate(required.accepts)}
        return sorted(found, key=lambda rm: order.get(id(rm[0]), len(order)))

    def _why_not(self, req: Requirement, method: PaymentMethod | None, path: str, key: tuple) -> str | None:
        """Why ``req`` cannot be paid (None: it can)."""
        return ((f"no payment method for scheme {req.scheme!r} on {req.network}" if method is None else
                 method.refuse(req, self.service.wallet)) or self.policy.refuse_terms(req, self.service.url(path))
                or self.policy.refuse_price(req, *self.top_price(key)))

    def options(self, required: PaymentRequired, path: str, key: tuple,
                response: httpx.Response | None = None) -> tuple[Option, ...]:
        """What each offer of a 402 would cost this wallet, and why it cannot be used (if not)."""
        return tuple(Option(req.network, req.amount, method.max_fee(req) if method else 0,
                            self._why_not(req, method, path, key)) for req, method in self.offers(required, response))

    def choose(self, required: PaymentRequired, path: str, key: tuple,
               response: httpx.Response | None = None) -> tuple[Requirement, PaymentMethod]:
        """The offer to pay: among those this wallet can sign, the policy allows and the route
        table prices plausibly, the first of the preferred networks, else the server's first;
        otherwise say what was offered and why not."""
        usable, reasons = [], []
        for req, method in self.offers(required, response):
            why = self._why_not(req, method, path, key)
            if why is None:
                usable.append((req, method))
            else:
                reasons.append(f"{req.describe()}: {why}")
        if usable:
            return min(usable, key=lambda rm: preference_rank(rm[0].network, self.prefer))
        if not reasons:
            raise PaymentRequiredError(f"The server asked for payment for {path} but offered no way to pay"
                                       + (f" ({required.error})" if required.error else "") + ". Nothing was signed.")
        raise PaymentRequiredError("None of the offered payment options can be used. Offered: "
                                   + "; ".join(reasons) + ". Nothing was signed.")

    async def learn(self, path: str, body: dict[str, Any], key: tuple) -> Terms:
        """Terms for ``key``: reused while their method can still sign them (one round trip to pay),
        else the ones a payment settled on in an earlier kernel, else read from an unpaid 402."""
        if self._usable(key):
            return self.terms[key]
        # Concurrent first requests to one route learn its terms once, not once each.
        async with self._learning.setdefault(key, asyncio.Lock()):
            if self._usable(key) or self._recall(key, path):
                return self.terms[key]
            t0 = time.time()
            r = await self.service.unpaid("POST", path, json=body)
            if r.status_code != 402:
                if r.status_code in (400, 422) or route_gone(r):
                    raise rejected(r, path)
                raise ServiceError(f"Expected a 402 with payment terms from {path}, got HTTP {r.status_code}: "
                                   f"{r.text[:200]}. Nothing was paid.", status=r.status_code, body=r.text)
            required = self.read_terms(r)
            terms = Terms(required, *self.choose(required, path, key, r), learned_at=t0,
                          options=self.options(required, path, key, r),
                          learned_ms=(time.time() - t0) * 1000)
            terms.paid = key in self.terms and self.terms[key].paid
            self.terms[key] = terms
            return terms

    def read_terms(self, r: httpx.Response) -> PaymentRequired:
        """A 402's x402 terms (none when it only carries another protocol's challenge, as an
        MPP-only 402 does), with the refusal's reason wherever the server says it. The methods
        read their own offers from the answer (:meth:`offers`)."""
        required = read_refusal(r)
        if required is None:
            if "www-authenticate" not in r.headers:
                return decode_payment_required(r.headers.get("payment-required"), json_or_none(r))  # says why not
            required = PaymentRequired([], {}, None, {}, {})
        error = required.error or next((e for m in self.methods if (e := m.reason(r))), None)
        return dataclasses.replace(required, error=error)

    def refusal_of(self, r: httpx.Response) -> PaymentRequired | None:
        """A 402's terms, or None when they cannot be read (the refusal still counts as one)."""
        try:
            return self.read_terms(r)
        except PaymentRequiredError:
            return None

    def _recall(self, key: tuple, path: str) -> bool:
        """Take the terms an earlier kernel paid on, if they are young enough and pass every check fresh
        terms pass (the ledger is wire data too). Stale ones cost one refused request, then fresh terms."""
        stored = self.ledger.stored_terms(self.service.base_url, json.dumps(key))
        if stored is None or not 0 <= time.time() - stored[1] <= TERMS_MAX_AGE_S:
            return False
        try:
            required = decode_payment_required(None, stored[0])
            self.terms[key] = Terms(required, *self.choose(required, path, key), paid=True, learned_at=stored[1])
        except PaymentRequiredError:  # no longer acceptable (the policy changed, or it was tampered with)
            self.ledger.forget_terms(self.service.base_url, json.dumps(key))
            return False
        return self._usable(key)

    def _usable(self, key: tuple) -> bool:
        t = self.terms.get(key)
        return t is not None and time.time() < t.method.usable_until(t.requirement, t.learned_at)

    async def upload_terms(self) -> Terms:
        return await self.learn("/api/upload", UPLOAD_BODY, ("upload",))

    def check(self, req: Requirement, path: str) -> None:
        check_terms(self.policy, req, self.service.url(path))

    def ledger_spent(self) -> int:
        if self.policy.ledger_budget_usd is None:
            return 0
        return self.ledger.spent_in_period(self.policy.ledger_budget_period)

    # --- the paid POST ----------------------------------------------------------------------------
    async def post(self, path: str, body: dict[str, Any], key: tuple, *, kind: str, route: Route | None,
                   consent: Consent, job: AsyncJob | None = None) -> Paid:
        """POST with a payment. Signs at most twice, and the second time only after the server
        plainly refused the first on terms we had reused, to the same payee and within the
        user's consent: so one request never settles twice, and never above what was agreed."""
        terms = await self.learn(path, body, key)
        if job is not None:
            # Terms read for this job: when and how long the unpaid 402 took. Terms from memory (an
            # earlier payment or price check): now, taking no time (their age is not a step of this job).
            fresh = terms.learned_at >= job.created_at
            job.note("terms", {"PAYMENT-REQUIRED": terms.required.raw, "accepted": terms.requirement.raw,
                               "reused": terms.paid, "offer": terms.requirement.describe(),
                               "method": terms.method.name, "cached": not fresh,
                               "age_s": round(time.time() - terms.learned_at)},
                     terms.learned_at if fresh else time.time(), terms.learned_ms if fresh else 0.0)
        mine: list[str] = []  # the payments this call signed: in flight until it returns
        try:
            for attempt in range(2):
                req = terms.requirement
                signed = await self._sign(req, terms, path, body, kind=kind, route=route, consent=consent, job=job)
                mine.append(signed.nonce)
                self.in_flight.add(signed.nonce)  # resume() leaves it to this call
                try:
                    r, ambiguous = await self.send(path, body, signed, job)
                except BaseException:  # cancelled or broken mid-send: it may have left, so it may settle
                    self._apply(Outcome.UNCERTAIN, signed, error="interrupted while sending")
                    raise
                outcome, refusal = self._classify(r, ambiguous, terms.method)
                receipt = self.receipt_of(r, terms.method) if outcome is Outcome.SETTLED else None
                self._apply(outcome, signed, receipt=receipt, error=error_text(r, refusal, outcome))
                if outcome is Outcome.SETTLED:
                    if not terms.paid and terms.requirement in terms.required.accepts:
                        # The first payment on these x402 terms: the next kernel may pay on them at once (an
                        # MPP challenge is single-use: there is nothing to keep).
                        self.ledger.save_terms(self.service.base_url, json.dumps(key), terms.required.raw,
                                               terms.learned_at)
                    terms.paid = True
                    answer = json_or_none(r)
                    if job is not None:
                        job.note("settled", {"PAYMENT-RESPONSE": receipt.to_dict() if receipt else None,
                                             "response": answer, "method": signed.method}, signed.signed_at)
                    return Paid(answer or {}, receipt, signed, signed.signed_at)
                if outcome is Outcome.NONCE_USED or (outcome is Outcome.UNCERTAIN and r is None):
                    found = await self.find_job(route, body, signed.signed_at, signed.payer) if route else None
                    if found:
                        self.ledger.update_payment(signed.nonce, status=PaymentStatus.SETTLED)
                        return Paid({"jobId": found, "status": "pending"}, None, signed)
                fresh = refusal if refusal is not None and r is not None and self.offers(refusal, r) else None
                if outcome is Outcome.REFUSED and fresh and attempt == 0 and terms.paid:
                    # Stale terms (price or payee changed): the refusal carries fresh ones; sign anew, within consent.
                    self.terms.pop(key, None)
                    terms = Terms(fresh, *self.choose(fresh, path, key, r), learned_at=time.time(),
                                  options=self.options(fresh, path, key, r))
                    _same_payee(req.pay_to, terms.requirement, signed)
                    self.terms[key] = terms
                    continue
                raise failure(outcome, r, refusal, path, signed, base_url=self.service.base_url,
                              tries=self.service.max_retries + 1)
        finally:
            self.in_flight.difference_update(mine)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _sign(self, req: Requirement, terms: Terms, path: str, body: dict[str, Any], *, kind: str,
                    route: Route | None, consent: Consent, job: AsyncJob | None) -> Credential:
        """Check the policy and consent, reserve the amount, sign, and write the ledger before anything leaves."""
        self.check(req, path)
        if consent.pay_to is not None:
            _same_payee(consent.pay_to, req)
        self.spending.reserve(req.amount, consent=consent, ledger_spent=self.ledger_spent())
        t0 = time.time()
        try:
            signed = await terms.method.sign(self.service.wallet, req, terms.required, learned_at=terms.learned_at,
                                             http=self.service.http)
        except BaseException:
            self.spending.release(req.amount)
            raise
        self.service.stats["signatures"] += 1
        self.ledger.record_payment(
            nonce=signed.id, kind=kind, route=route.id if route else None, method="POST",
            url=self.service.url(path), body=body, amount=req.amount, asset=req.asset, network=req.network,
            pay_to=req.pay_to, payer=signed.payer, valid_before=signed.valid_before,
            payload=signed.header, session=self.session, pay_method=signed.method, ref=job and job.ref)
        if signed.transaction:  # known before sending: "outcome unknown" can still name it
            self.ledger.update_payment(signed.id, tx=signed.transaction)
        if job is not None:
            job.payment = (signed.id, req.amount)  # a lost answer is found by it, for this very job
            job.note("signed", {next(iter(signed.headers)): signed.payload if not self.on_chain else _shown(signed),
                                "method": signed.method, "deadline": signed.deadline,
                                "transaction": signed.transaction}, t0)
        return signed

    async def send(self, path: str, body: dict[str, Any], signed: Credential,
                   job: AsyncJob | None = None) -> tuple[httpx.Response | None, bool]:
        """Send one signed payment, re-sending the same credential on resets, timeouts, 429 and 5xx
        while it can still settle (before its deadline). Returns the answer (None: no definite one)
        and whether an earlier attempt may have reached the server (so a refusal now may follow a
        settlement)."""
        nonce, ambiguous = signed.nonce, False
        resend = getattr(self.method_named(signed.method), "resend_when_ambiguous", True)
        self.ledger.update_payment(nonce, status=PaymentStatus.SENT)  # from here on it may have left
        for attempt in range(self.service.max_retries + 1):
            if attempt and signed.deadline - time.time() < min(5.0, (signed.deadline - signed.signed_at) / 10):
                break  # past its deadline it cannot settle: resending is pointless; resume() looks for the job
            try:
                self.service.stats["requests"] += 1
                r = await self.service.http.post(self.service.target(path), json=body, headers=signed.headers)
            except httpx.TransportError as e:
                # No connection (none could be opened, or none freed in the pool in time) means the
                # request never left: not ambiguous. Anything else might have reached the server and settled.
                if not isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
                    ambiguous = True
                    self.ledger.update_payment(nonce, status=PaymentStatus.UNCERTAIN,
                                               error=f"{type(e).__name__}: {e}"[:300])
                    if not resend:
                        return None, True
                if job is not None:
                    job.progress(f"Network fault after sending the payment ({type(e).__name__}); "
                                 "re-sending the same signed payment")
                await asyncio.sleep(self.service.backoff(attempt))
                continue
            if r.status_code == 429 or r.status_code >= 500:
                if r.status_code >= 500:
                    ambiguous = True
                    self.ledger.update_payment(nonce, status=PaymentStatus.UNCERTAIN, error=f"HTTP {r.status_code}")
                    if not resend:
                        return r, True
                if job is not None:
                    job.progress(f"Service answered {r.status_code}; re-sending the same signed payment")
                await asyncio.sleep(parse_retry_after(r.headers.get("retry-after")) or self.service.backoff(attempt))
                continue
            return r, ambiguous
        return None, ambiguous

    # --- deciding once, applying once -------------------------------------------------------------
    def _classify(self, r: httpx.Response | None, ambiguous: bool,
                  method: PaymentMethod) -> tuple[Outcome, PaymentRequired | None]:
        if r is None:
            return (Outcome.UNCERTAIN if ambiguous else Outcome.UNSENT), None
        if r.status_code == 200:
            return Outcome.SETTLED, None
        if r.status_code == 402:
            refusal = self.refusal_of(r)
            used = ambiguous or method.is_replay(refusal.error if refusal else None)
            return (Outcome.NONCE_USED if used else Outcome.REFUSED), refusal
        return (Outcome.UNCERTAIN if ambiguous else Outcome.REFUSED), None

    def _apply(self, outcome: Outcome, signed: Credential, *, receipt: Receipt | None = None,
               error: str | None = None) -> None:
        """The bookkeeping of an outcome: the spending reservation and the ledger row, together."""
        amount = signed.requirement.amount
        if outcome is Outcome.SETTLED:
            self.spending.settle(amount)
            self.ledger.update_payment(signed.nonce, status=PaymentStatus.SETTLED,
                                       tx=receipt and receipt.transaction, receipt=receipt and receipt.to_dict())
        elif outcome is Outcome.UNSENT:  # provably never left: the one case that gives the amount back
            self.spending.release(amount)
            self.ledger.update_payment(signed.nonce, status=PaymentStatus.UNSENT, error=error)
        elif outcome is Outcome.REFUSED:  # refused, but someone holds a valid signature until it expires
            self.spending.hold(amount, signed.valid_before)
            self.ledger.update_payment(signed.nonce, status=PaymentStatus.REFUSED, error=error)
        else:
            self.spending.settle(amount)
            self.ledger.update_payment(signed.nonce, status=PaymentStatus.UNCERTAIN, error=error)

    def receipt_of(self, r: httpx.Response | None, method: PaymentMethod) -> Receipt | None:
        receipt = method.receipt(r) if r is not None else None
        return receipt if receipt is None or self.on_chain else dataclasses.replace(receipt, on_chain=False)

    def method_named(self, name: str | None) -> PaymentMethod | None:
        """The method that signed a ledger row (rows from before methods existed are EVM ``exact``);
        None when this client was built without it (the row is then only looked for, never resent)."""
        return next((m for m in self.methods if m.name == (name or "exact-evm")), None)

def _same_payee(quoted: str, req: Requirement, refused: Credential | None = None) -> None:
    """A payee that changed between the quote and the payment needs new consent."""
    if same_address(req.network, req.pay_to, quoted):
        return
    held = f" The refused authorization stays valid until {valid_until(refused)}." if refused else ""
    raise ConfirmationRequired(
        f"The service now asks to be paid at {req.pay_to}, not at {quoted} as quoted. Nothing was signed "
        f"to the new payee.{held} Quote again and confirm to pay it.",
        price_usd=req.amount_usd, threshold_usd=None, pay_to=req.pay_to)


def _shown(signed: Credential) -> dict[str, Any]:
    """A real wallet's payment as the inspector may show it: what and to whom, never the signature
    or the nonce (together they are bearer money until the authorization expires), nor a signed
    Solana transaction (the facilitator could still complete it until its blockhash expires)."""
    inner = signed.payload["payload"]
    if "authorization" not in inner:
        return {**signed.payload, "payload": {k: v if k == "type" else "(kept in the kernel: a real wallet's signed "
                                              "transaction is not shown)" for k, v in inner.items()}}
    auth = inner["authorization"]
    return {**signed.payload, "payload": {
        "authorization": {k: auth[k] for k in ("from", "to", "value", "validAfter", "validBefore")},
        "signature": "(kept in the kernel: a real wallet's signature is not shown)"}}


