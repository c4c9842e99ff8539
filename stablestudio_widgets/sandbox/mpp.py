"""MPP ``tempo``/``charge`` on Tempo testnet: the challenges the sandbox issues and the
credentials it accepts.

Challenge ids are stateless HMACs over the challenge's fields (mppx ``Challenge.computeId``), so
the sandbox recognises its own challenges without remembering them; a random ``opaque`` nonce
makes every challenge distinct (otherwise two challenges for one price in one millisecond would
share an id, a memo and so a transaction). A credential must echo a challenge this sandbox
issued, for exactly what the route costs now, before it expires; its transaction is checked by
:mod:`.tempo`. Settling is single-use under the state's lock: of two simultaneous submissions
of one credential, one succeeds.

``settle="after"`` behaves like the x402/MPP router in front of the real service: only a
malformed credential is refused up front; the handler runs, and a payment that then fails is
answered ``500 {"success": false, "error": "MPP payment failed: …"}`` with the job created.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from .tempo import Terms, TxInvalid, parse_source, verify_proof, verify_transaction
from .wire import iso, parse_iso

CHAIN_ID = 42431
NETWORK = f"eip155:{CHAIN_ID}"
PATH_USD = "0x20c0000000000000000000000000000000000000"
CHALLENGE_TTL_S = 300
#: Every payer starts with this much simulated pathUSD (base units): $1,000.
START_BALANCE = 1_000_000_000
#: What the sandbox's RPC stub quotes for eth_gasPrice: Tempo's base fee, 2e10 attodollars per gas.
GAS_PRICE = 2 * 10**10
PROBLEMS = "https://paymentauth.org/problems/"


class MppInvalid(Exception):
    """A refused credential: ``slug`` is the problem type, ``detail`` what was wrong."""

    def __init__(self, slug: str, detail: str):
        super().__init__(detail)
        self.slug, self.detail = slug, detail


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _canonical(obj: Any) -> bytes:
    """JCS for the plain objects the sandbox issues (ASCII keys, strings, integers, booleans)."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8")


def _unb64url_json(value: str) -> Any:
    s = value.strip()
    return json.loads(base64.b64decode(s + "=" * (-len(s) % 4), altchars=b"-_", validate=True).decode("utf-8"))


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Verified:
    """A credential that checks out; shaped like an x402 ``Payment`` for the state's ledger."""

    payer: str
    key: tuple[str, str]
    tx_hash: str
    amount: str
    pay_to: str
    asset: str
    kind: str  # "transaction" or "proof"
    challenge_id: str
    max_fee: int = 0
    network: str = NETWORK

    @property
    def nonce(self) -> str:
        return self.key[1]

    @property
    def transaction(self) -> str:
        return self.tx_hash

    @property
    def fingerprint(self) -> tuple[str, ...]:
        return self.key


class Mpp:
    """Issues and checks MPP challenges for one sandbox."""

    def __init__(self, *, recipient: str, fee_payer: bool = False, strict: bool = True, settle: str = "before",
                 currency: str = PATH_USD, secret: bytes | None = None, signin_only: bool = False):
        if settle not in ("before", "after"):
            raise ValueError(f"settle must be 'before' or 'after', got {settle!r}")
        self.recipient, self.fee_payer, self.strict, self.settle = recipient, fee_payer, strict, settle
        self.currency = currency
        self.signin_only = signin_only  # job routes take the $0 proof only (no SIWX challenge)
        self.secret = secret or secrets.token_bytes(32)  # mppx requires at least 32 bytes
        self.balances: dict[str, int] = {}

    # -- challenges ----------------------------------------------------------------------------

    def request(self, amount: int) -> dict[str, Any]:
        details: dict[str, Any] = {"chainId": CHAIN_ID}
        if self.fee_payer and amount:
            details["feePayer"] = True
        return {"amount": str(amount), "currency": self.currency, "methodDetails": details,
                "recipient": self.recipient}

    def _id(self, realm: str, method: str, intent: str, request: str, expires: str | None,
            digest: str | None, opaque: str | None) -> str:
        message = "|".join([realm, method, intent, request, expires or "", digest or "", opaque or ""])
        return _b64url(hmac.new(self.secret, message.encode("utf-8"), hashlib.sha256).digest())

    def challenge(self, realm: str, amount: int, description: str, now: float) -> tuple[str, str]:
        """A fresh challenge's id and ``WWW-Authenticate`` value (parameters in mppx's order)."""
        request = _b64url(_canonical(self.request(amount)))
        expires = iso(now + CHALLENGE_TTL_S)
        opaque = _b64url(_canonical({"nonce": secrets.token_hex(8)}))
        cid = self._id(realm, "tempo", "charge", request, expires, None, opaque)
        params = [("id", cid), ("realm", realm), ("method", "tempo"), ("intent", "charge"), ("request", request),
                  ("description", description), ("expires", expires), ("opaque", opaque)]
        return cid, "Payment " + ", ".join(f"{k}={_quote(v)}" for k, v in params)

    # -- credentials ---------------------------------------------------------------------------

    def verify(self, authorization: str, *, realm: str, amount: int, now: float) -> Verified:
        """Check a credential against what this route costs now; raises :class:`MppInvalid`."""
        cred = self._decode(authorization)
        echo, payload, source = cred["challenge"], cred["payload"], cred.get("source")
        text = {k: echo.get(k) for k in ("id", "realm", "method", "intent", "request", "expires", "digest", "opaque")}
        if not all(isinstance(v, str) for v in text.values() if v is not None) or not isinstance(text["id"], str):
            raise MppInvalid("malformed-credential", "challenge fields must be strings")
        expected = self._id(*(text[k] or "" for k in ("realm", "method", "intent", "request")),
                            text["expires"], text["digest"], text["opaque"])
        if not hmac.compare_digest(expected, text["id"]):
            raise MppInvalid("invalid-challenge", f'Challenge "{text["id"][:60]}" is invalid: challenge was not '
                                                  "issued by this server.")
        try:
            request = _unb64url_json(text["request"] or "")
        except ValueError:
            raise MppInvalid("invalid-challenge", "the echoed request does not decode") from None
        self._pinned(text, request, realm, amount)
        if text["expires"] is None:
            raise MppInvalid("invalid-challenge", "the challenge has no expiry")
        expires_at = parse_iso(text["expires"])
        if expires_at <= now:
            raise MppInvalid("payment-expired", f"Payment expired at {text['expires']}.")
        return self._payload(payload, source, text, expires_at, amount, realm, now)

    @staticmethod
    def _decode(authorization: str) -> dict[str, Any]:
        if not authorization.startswith("Payment "):
            raise MppInvalid("malformed-credential", "Credential is malformed: expected 'Payment <base64url>'.")
        try:
            cred = _unb64url_json(authorization[len("Payment "):])
        except ValueError:
            raise MppInvalid("malformed-credential", "Credential is malformed: Invalid base64url or JSON.") from None
        if not isinstance(cred, dict) or not isinstance(cred.get("challenge"), dict) \
                or not isinstance(cred.get("payload"), dict):
            raise MppInvalid("malformed-credential", "Credential is malformed: needs challenge and payload objects.")
        return cred

    def _pinned(self, echo: dict[str, Any], request: Any, realm: str, amount: int) -> None:
        """The echoed challenge must be what this route would ask for now (mppx's tier 2)."""
        want = self.request(amount)
        got = request if isinstance(request, dict) else {}
        checks = [("method", echo["method"], "tempo"), ("intent", echo["intent"], "charge"),
                  ("realm", echo["realm"], realm), ("amount", got.get("amount"), want["amount"]),
                  ("currency", str(got.get("currency")).lower(), want["currency"].lower()),
                  ("recipient", str(got.get("recipient")).lower(), want["recipient"].lower()),
                  ("methodDetails", got.get("methodDetails"), want["methodDetails"])]
        for name, value, expected in checks:
            if value != expected:
                raise MppInvalid("invalid-challenge", f"credential {name} does not match this route's requirements")

    def _payload(self, payload: dict[str, Any], source: Any, echo: dict[str, Any], expires_at: float,
                 amount: int, realm: str, now: float) -> Verified:
        kind, signature = payload.get("type"), payload.get("signature")
        if kind not in ("transaction", "proof") or not isinstance(signature, str):
            raise MppInvalid("invalid-payload", "payload must be {type: transaction|proof, signature}")
        common = {"amount": str(amount), "pay_to": self.recipient, "asset": self.currency, "kind": kind,
                  "challenge_id": echo["id"]}
        try:
            if kind == "proof":
                if amount:
                    raise TxInvalid("Proof credentials are only valid for zero-amount challenges.")
                payer = verify_proof(signature, source, chain_id=CHAIN_ID, challenge_id=echo["id"], realm=realm)
                return Verified(payer, ("proof", echo["id"]), echo["id"], **common)
            if not amount:
                raise TxInvalid("Zero-amount challenges require a proof credential.")
            terms = Terms(CHAIN_ID, self.currency, self.recipient, amount, self.fee_payer and amount > 0, realm,
                          echo["id"], expires_at)
            tx = verify_transaction(signature, terms, source=source, now=now, strict=self.strict)
        except TxInvalid as e:
            raise MppInvalid("verification-failed", f"Payment verification failed: {e.reason}") from None
        return Verified(tx.payer, ("tempo", tx.key), tx.tx_hash, max_fee=tx.max_fee, **common)

    # -- settling ------------------------------------------------------------------------------

    def debit(self, v: Verified) -> None:
        """The simulated chain: the payer's balance must cover the amount and the worst-case fee."""
        owner = v.payer.lower()
        balance = self.balances.get(owner, START_BALANCE)
        cost = int(v.amount) + v.max_fee
        if cost > balance:
            raise MppInvalid("verification-failed", "Payment verification failed.")  # a reverted simulation
        self.balances[owner] = balance - cost


def receipt(v: Verified, now: float | None = None) -> str:
    """The ``Payment-Receipt`` value: base64url JSON, ``reference`` = the tx hash (proof: challenge id)."""
    body = {"method": "tempo", "reference": v.tx_hash, "status": "success", "timestamp": iso(now or time.time())}
    return _b64url(json.dumps(body, separators=(",", ":")).encode())


def problem(e: MppInvalid, challenge_id: str | None) -> dict[str, Any]:
    """mppx's problem+json body (``challengeId`` names the fresh challenge sent with it)."""
    titles = {"malformed-credential": "Malformed Credential", "invalid-challenge": "Invalid Challenge",
              "payment-expired": "Payment Expired", "invalid-payload": "Invalid Payload",
              "verification-failed": "Verification Failed"}
    return {"type": PROBLEMS + e.slug, "title": titles.get(e.slug, "Payment Required"), "status": 402,
            "detail": e.detail, "challengeId": challenge_id}


@dataclass(frozen=True)
class Unpaid:
    """Who a failed credential named: the router runs the handler for them before settling."""

    payer: str


def source_of(authorization: str) -> str | None:
    """The address a credential's ``source`` names, if it names one."""
    try:
        source = Mpp._decode(authorization).get("source")
        return parse_source(source, CHAIN_ID)
    except (MppInvalid, TxInvalid):
        return None
