"""How the sandbox answers: like the service's real server stack, the x402 router
``@agentcash/router`` (the default), or like the written spec (``router=False``).

Where they differ (notes/router.md has the sources):

============================  ==========================================  =================================
what                          router mode                                 spec mode
============================  ==========================================  =================================
a re-sent SIWX nonce          refused: bare 402 ``{error, message}``      accepted until it expires
                              (``siwx_reuse="bare"``) or a fresh          (``siwx_reuse="allow"``)
                              challenge (``"challenge"``)
any other bad sign-in         bare 402 ``{error, message}``               402 with a fresh challenge
sign-in ``domain``            hostname or host:port                       host:port
sign-in ``uri``               same origin (path not compared)             same URL (query ignored)
sign-in ``issuedAt``          ≤ 5 min old, not in the future              ≤ ``siwx_max_age_s``, 60 s skew
402 body                      empty (``body_402="empty"``)                ``{}`` (``"json"``)
``accepted``                  deep-compared with what was sent            matched field by field
refused payment               body ``{error: "Payment rejected (…)",      ``error`` in PAYMENT-REQUIRED
                              reason}``, facilitator reason names
invalid body                  400 ``{success, error, issues}``            400 ``{error, field}``
unknown route                 404 ``route_not_found`` + discovery links   404 ``{error}``
============================  ==========================================  =================================

Two choices differ from the router on purpose: the body is validated before any 402 in both modes
(the live service was seen to answer 400; router 1.20 would quote its maximum price), and
``accepted`` must equal what was sent in every key, where the router falls back to comparing six
fields (scheme, network, payTo, asset, amount, maxTimeoutSeconds) and lets ``extra`` through: the
stricter check is what proves a client echoes the terms verbatim.

Both modes keep EIP-3009 nonces
single-use and answer a replayed payment with a refusal (``replay="idempotent"`` returns the
original job instead). ``body_402="repeat"`` repeats the requirements in the 402 body;
``extra_fields`` adds fields a client does not know to every requirement, which it must echo.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse, Response

from .wire import encode_header

SIWX_REUSE = ("bare", "challenge", "allow")
BODIES_402 = ("empty", "json", "repeat")
REPLAYS = ("refuse", "idempotent")
PRICING_FORMATS = ("price", "pricingMode")
SIWX_WINDOW_S = 300  # the router's SIWX_CHALLENGE_EXPIRY_MS: issuedAt age limit and nonce TTL
SERVICE_NAME = "StableStudio"

#: The router's bare SIWX refusals (SIWX_ERROR_MESSAGES in @agentcash/router).
SIWX_MESSAGES = {
    "siwx_malformed": "Malformed SIWX payload",
    "siwx_expired": "SIWX message expired — request a new challenge",
    "siwx_nonce_used": "Nonce already used — request a new challenge",
    "siwx_invalid_signature": "Invalid signature — wallet mismatch or corrupted proof",
}

#: Our refusal codes → the reason the router (its facilitator) gives.
PAYMENT_REASONS = {
    "invalid_payment_header": "malformed_payment_header",
    "unsupported_x402_version": "malformed_payment_header",
    "invalid_payload": "invalid_payload",
    "invalid_nonce": "invalid_payload",
    "requirements_mismatch": "requirements_mismatch",
    "unsupported_scheme": "requirements_mismatch",
    "wrong_network": "requirements_mismatch",
    "wrong_asset": "requirements_mismatch",
    "wrong_payto": "invalid_exact_evm_recipient_mismatch",
    "amount_mismatch": "invalid_exact_evm_payload_authorization_value_mismatch",
    "invalid_signature": "invalid_exact_evm_signature",
    "not_yet_valid": "invalid_exact_evm_payload_authorization_valid_after",
    "expired": "invalid_exact_evm_payload_authorization_valid_before",
    "valid_before_too_far": "invalid_exact_evm_payload_authorization_valid_before",
    "nonce_already_used": "invalid_exact_evm_nonce_already_used",
    "unsupported_transfer_method": "invalid_exact_evm_scheme",
}

#: Fields no client knows, added to each requirement with ``extra_fields``: nested, ordered
#: unusually, with non-ASCII text, null and large numbers, so any re-encoding shows.
UNKNOWN_FIELDS = {
    "x-sandbox-terms": {"zeta": 1, "alpha": [True, None, "ünïcødé ✓"], "big": 12345678901234567890,
                        "nested": {"b": {}, "a": []}},
    "feeHint": "sponsored",
}
UNKNOWN_EXTRA = {"x-sandbox-hint": "echo me untouched"}


@dataclass(frozen=True)
class Mode:
    """How closely the sandbox imitates the real server stack; see the module docstring."""

    router: bool = True
    siwx_reuse: str = "bare"
    body_402: str = "empty"
    extra_fields: bool = False
    pricing_format: str = "price"
    replay: str = "refuse"
    omit_extra: bool = False

    @classmethod
    def make(cls, *, router: bool = True, siwx_reuse: str | None = None, body_402: str | None = None,
             **rest: Any) -> Mode:
        """Defaults follow ``router``: the spec mode accepts re-sent sign-ins and answers ``{}``."""
        return cls(router=router, siwx_reuse=siwx_reuse or ("bare" if router else "allow"),
                   body_402=body_402 or ("empty" if router else "json"), **rest)

    def __post_init__(self) -> None:
        for name, allowed in (("siwx_reuse", SIWX_REUSE), ("body_402", BODIES_402), ("replay", REPLAYS),
                              ("pricing_format", PRICING_FORMATS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    @property
    def tracks_siwx_nonces(self) -> bool:
        return self.siwx_reuse != "allow"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # -- paid routes -----------------------------------------------------------------------------

    def requirement(self, req: dict[str, Any]) -> dict[str, Any]:
        """One ``accepts`` entry as this mode sends it (the router lower-cases the payee)."""
        out = dict(req)
        if self.router and out["network"].startswith("eip155:"):  # hex only: base58 case is part of the address
            out["payTo"] = out["payTo"].lower()
        if self.extra_fields:
            out.update(UNKNOWN_FIELDS)
            if "extra" in out:
                out["extra"] = {**out["extra"], **UNKNOWN_EXTRA}
        return out

    def payment_required(self, *, url: str, description: str, accepts: list[dict[str, Any]],
                         bazaar: dict[str, Any] | None) -> dict[str, Any]:
        """The ``PAYMENT-REQUIRED`` content (the router adds resource fields and a bazaar extension)."""
        resource: dict[str, Any] = {"url": url, "description": description, "mimeType": "application/json"}
        out: dict[str, Any] = {"x402Version": 2, "resource": resource, "accepts": accepts}
        if self.router:
            resource.update(method="POST", tags=[url.split("/api/", 1)[-1].split("/", 1)[0].title()],
                            serviceName=SERVICE_NAME)
            if bazaar is not None:
                out["extensions"] = {"bazaar": {"info": {"input": {"type": "http", "method": "POST",
                                                                   "bodyType": "json", "body": {}}},
                                                "schema": bazaar}}
        return out

    def answer_402(self, required: dict[str, Any], refusal: str | None = None) -> Response:
        """A payment challenge; with ``refusal`` ("code: detail"), the refusal of a payment that was sent."""
        headers = {"PAYMENT-REQUIRED": encode_header(required), "Cache-Control": "no-store"}
        body: Any = required if self.body_402 == "repeat" else ({} if self.body_402 == "json" else None)
        if refusal and self.router:  # the reason goes in the body; the header stays a plain challenge
            code, _, detail = refusal.partition(": ")
            reason = PAYMENT_REASONS.get(code, code)
            body = {"error": f"Payment rejected ({reason}): {detail or code}", "reason": reason}
        elif refusal:
            required = {"x402Version": required["x402Version"], "error": refusal,
                        **{k: v for k, v in required.items() if k != "x402Version"}}
            headers["PAYMENT-REQUIRED"] = encode_header(required)
            body = required if self.body_402 == "repeat" else body
        if body is None:
            return Response(b"", status_code=402, media_type="application/json", headers=headers)
        return JSONResponse(body, status_code=402, headers=headers)

    # -- other answers -----------------------------------------------------------------------------

    def invalid_body(self, message: str, field: str | None, allowed: list[Any] | None) -> JSONResponse:
        if self.router:
            issue = {"code": "invalid_value" if allowed else "custom", "path": [field] if field else [],
                     "message": message}
            return JSONResponse({"success": False, "error": "Validation failed", "issues": [issue]}, status_code=400)
        body: dict[str, Any] = {"error": message, "field": field}
        if allowed is not None:
            body["allowed"] = allowed
        return JSONResponse(body, status_code=400)

    def not_found(self, url: str, base_url: str, message: str) -> JSONResponse:
        if not self.router:
            return JSONResponse({"error": message}, status_code=404)
        return JSONResponse({
            "success": False, "code": "route_not_found",
            "error": "Route not found. Rediscover this origin and retry with the current discovery document.",
            "requestedUrl": url,
            "discovery": {"openapi": f"{base_url}/openapi.json", "llmsTxt": f"{base_url}/llms.txt"}},
            status_code=404, headers={"Access-Control-Allow-Origin": "*"})

    def siwx_refusal(self, code: str) -> bool:
        """Whether a refused sign-in gets a bare ``{error, message}`` (else a fresh challenge)."""
        if code == "siwx_nonce_used":
            return self.siwx_reuse == "bare"
        return self.router and code in SIWX_MESSAGES
