"""Paying an MPP ``tempo``/``charge`` challenge: read its terms, sign a pull transaction (the
server broadcasts it) or, for amount 0, the EIP-712 proof used to sign in.

Every choice here follows what the reference client (mppx) and the strictest server (pympp)
agree on (/work/notes/tempo.md): one ``transferWithMemo`` call to the charge currency with the
attribution memo bound to the challenge, an expiring nonce with ``valid_before`` ≤ min(now + 25 s,
challenge expiry), ``fee_token`` = the currency when self-paid, and the ``0x78`` hand-off with no
fee token when the server sponsors fees. The only chain call is ``eth_gasPrice``.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from . import networks, tempo
from .errors import PaymentRequiredError, ServiceError, fmt_usd, usd
from .mpp import Challenge, credential, source_did
from .tempo import Call, SignedTransaction, TempoTransaction

if TYPE_CHECKING:
    from .wallet import Wallet

METHOD, INTENT = "tempo", "charge"
#: A challenge closer than this to its expiry is not worth signing: it would be refused on arrival.
MIN_VALIDITY_S = 5
CLIENT_ID = None  # no client attribution: the memo's client slot stays zero (nothing about us leaks)
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_UINT = re.compile(r"^[0-9]{1,78}$")
_HEX32 = re.compile(r"^0x[0-9a-fA-F]{64}$")


def _refuse(ch: Challenge, why: str) -> PaymentRequiredError:
    return PaymentRequiredError(f"Cannot pay the MPP challenge {ch.id[:16]!r} ({ch.method}/{ch.intent}): {why}. "
                                "Nothing was signed.")


@dataclass(frozen=True)
class Charge:
    """The checked terms of one ``tempo``/``charge`` challenge."""

    challenge: Challenge = field(repr=False)
    amount: int
    currency: str
    recipient: str
    chain_id: int
    fee_payer: bool
    memo: bytes | None = None

    @property
    def network(self) -> str:
        return f"eip155:{self.chain_id}"

    @property
    def amount_usd(self) -> float:
        return usd(self.amount)

    def describe(self) -> str:
        name = networks.name_of(self.network)
        token = tempo.TOKEN_NAMES.get(self.currency.lower(), self.currency)
        fees = "fees sponsored" if self.fee_payer else "fees paid by you"
        return f"MPP charge {fmt_usd(self.amount_usd)} in {token} on {name} to {self.recipient} ({fees})"


def parse_charge(ch: Challenge) -> Charge:
    """The terms of a ``tempo``/``charge`` challenge, or :class:`PaymentRequiredError` saying
    which field is wrong. Splits (money to more than one recipient) are refused."""
    if ch.method != METHOD or ch.intent != INTENT:
        raise _refuse(ch, f"only {METHOD}/{INTENT} is supported")
    r = ch.decoded
    amount, currency, recipient = r.get("amount"), r.get("currency"), r.get("recipient")
    if not isinstance(amount, str) or not _UINT.match(amount) or int(amount) >= 2**256:
        raise _refuse(ch, f"amount {amount!r:.40} is not a base-unit integer string")
    for name, value in (("currency", currency), ("recipient", recipient)):
        if not isinstance(value, str) or not _ADDRESS.match(value):
            raise _refuse(ch, f"{name} {value!r:.50} is not an address")
    details = r.get("methodDetails")
    if not isinstance(details, dict):
        raise _refuse(ch, "methodDetails is missing (the chain id must be stated)")
    chain_id = details.get("chainId")
    if isinstance(chain_id, bool) or not isinstance(chain_id, int) or not 0 < chain_id < 2**63:
        raise _refuse(ch, f"methodDetails.chainId {chain_id!r:.30} is not a chain id")
    fee_payer = details.get("feePayer", False)
    if not isinstance(fee_payer, bool):
        raise _refuse(ch, "methodDetails.feePayer must be true or false")
    memo = details.get("memo")
    if memo is not None and (not isinstance(memo, str) or not _HEX32.match(memo)):
        raise _refuse(ch, "methodDetails.memo must be 32 bytes of hex")
    if details.get("splits"):
        raise _refuse(ch, "split payments (several recipients) are not supported")
    modes = details.get("supportedModes")
    if modes is not None and (not isinstance(modes, list) or "pull" not in modes):
        raise _refuse(ch, f"the server takes only {modes!r:.40}; this client signs for the server to broadcast (pull)")
    if ch.expires is None:
        raise _refuse(ch, "it has no expiry")
    return Charge(ch, int(amount), currency, recipient, chain_id, fee_payer,
                  bytes.fromhex(memo[2:]) if memo else None)


@dataclass(frozen=True)
class SignedCharge:
    """A signed credential, kept so that a resend carries the very same bytes."""

    charge: Charge
    header: str = field(repr=False)  # the Authorization value
    credential: dict[str, Any] = field(repr=False)
    payer: str
    signed_at: float
    valid_before: int
    tx: SignedTransaction | None = field(default=None, repr=False)  # None for a proof

    @property
    def key(self) -> str:
        """Identifies this payment (the ledger's nonce column): what the sender signed, or the
        challenge a proof answers."""
        return self.tx.signing_hash if self.tx else "proof:" + self.charge.challenge.id

    @property
    def tx_hash(self) -> str | None:
        """The on-chain hash, known before sending for self-paid charges only."""
        return self.tx.tx_hash if self.tx else None

    @property
    def max_fee(self) -> int:
        """The most the fees can cost the payer (0 when sponsored)."""
        return 0 if self.tx is None or self.tx.tx.sponsored else tempo.max_fee_base_units(self.tx.tx)


def valid_before(charge: Charge, now: float) -> int:
    """min(now + 25 s, challenge expiry), as mppx signs; refused when too little time is left."""
    expires = int(charge.challenge.expires_at or 0)
    vb = min(int(now) + tempo.VALIDITY_S, expires)
    if vb - now < MIN_VALIDITY_S:
        raise _refuse(charge.challenge, f"it expires at {charge.challenge.expires}, too soon to pay")
    return vb


def build_transaction(charge: Charge, sender: str, *, gas_price: int, now: float) -> TempoTransaction:
    """The pull transaction for ``charge``: one ``transferWithMemo`` to the recipient. A random
    ``valid_after`` in the past (as viem sets it) keeps two payments of one challenge in one second
    from being the very same transaction (same hash: the second would be refused as a replay)."""
    ch = charge.challenge
    memo = charge.memo or tempo.attribution_memo(ch.realm, ch.id, CLIENT_ID)
    data = tempo.transfer_with_memo(charge.recipient, charge.amount, memo)
    priority = gas_price
    if charge.fee_payer:  # stay inside the sponsor's default policy, or it refuses to co-sign
        priority = min(gas_price, tempo.SPONSORED_MAX_PRIORITY.get(charge.chain_id, gas_price))
    return TempoTransaction(
        chain_id=charge.chain_id, calls=(Call(charge.currency, data),), max_priority_fee_per_gas=priority,
        max_fee_per_gas=gas_price, gas=tempo.GAS_LIMIT, nonce_key=tempo.EXPIRING_NONCE_KEY, nonce=0,
        valid_before=valid_before(charge, now), valid_after=int(now) - 60 - secrets.randbelow(86_400),
        fee_token=None if charge.fee_payer else charge.currency, sponsored=charge.fee_payer)


def sign_charge(wallet: Wallet, charge: Charge, *, gas_price: int, now: float | None = None) -> SignedCharge:
    """Sign the pull transaction and wrap it in a credential (``source`` = the payer's DID)."""
    if charge.amount == 0:
        return sign_proof(wallet, charge, now=now)
    now = time.time() if now is None else now
    tx = build_transaction(charge, wallet.address, gas_price=gas_price, now=now)
    signed = tempo.sign(tx, wallet)
    header, body = credential(charge.challenge, {"type": "transaction", "signature": signed.raw_hex},
                              source_did(charge.chain_id, wallet.address))
    return SignedCharge(charge, header, body, wallet.address, now, tx.valid_before or 0, signed)


def sign_proof(wallet: Wallet, charge: Charge, *, now: float | None = None) -> SignedCharge:
    """The $0 proof: EIP-712 over (account, challenge id, realm); single-use per challenge."""
    if charge.amount != 0:
        raise _refuse(charge.challenge, "a proof answers only zero-amount challenges")
    now = time.time() if now is None else now
    ch = charge.challenge
    signature = wallet.sign_typed_data(tempo.proof_typed_data(charge.chain_id, wallet.address, ch.id, ch.realm))
    header, body = credential(ch, {"type": "proof", "signature": signature},
                              source_did(charge.chain_id, wallet.address))
    return SignedCharge(charge, header, body, wallet.address, now, int(ch.expires_at or now))


async def gas_price(http: httpx.AsyncClient, rpc_url: str) -> int:
    """``eth_gasPrice`` from ``rpc_url``: the one chain call a pull charge needs. The answer is
    untrusted: it must be a hex quantity no larger than the sponsor policy's cap."""
    try:
        r = await http.post(rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_gasPrice", "params": []})
        result = r.json().get("result") if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError) as e:
        raise ServiceError(f"Cannot read the Tempo gas price from {rpc_url}: {type(e).__name__}. "
                           "Nothing was signed.") from None
    if not isinstance(result, str) or not re.fullmatch(r"0x[0-9a-fA-F]{1,30}", result):
        raise ServiceError(f"The Tempo RPC at {rpc_url} did not answer eth_gasPrice with a quantity "
                           f"(HTTP {r.status_code}). Nothing was signed.")
    price = int(result, 16)
    if not 0 < price <= tempo.MAX_GAS_PRICE:
        raise ServiceError(f"The Tempo RPC at {rpc_url} quoted a gas price of {price} attodollars, outside "
                           f"1..{tempo.MAX_GAS_PRICE}. Nothing was signed.")
    return price
