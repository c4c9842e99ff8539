"""Offline verification of Tempo pull transactions and $0 proofs, as a strict MPP server would.

The sandbox decodes what the client sent with ``rlp`` and checks it field by field: envelope type
and shape, the sender recovered from the signature, chain id, exactly one ``transferWithMemo`` of
the right amount of the right token to the right recipient, the memo bound to the challenge, the
expiring nonce and its validity window. It does not import the client's encoder, so a bug there
cannot hide here. Broadcast is simulated: a sponsored transaction is co-signed by the sandbox's
fee payer and hashed as the chain would; no chain is contacted.

``strict=False`` checks what mppx 0.8.19 checks for a self-paid pull charge and no more (it lets
signer ≠ source, another chain id, extra transfers and a long window through: the chain or the
router catch those later, if at all). See /work/notes/tempo.md §5.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import rlp
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak, to_checksum_address

EXPIRING_NONCE_KEY = 2**256 - 1
MAX_VALIDITY_S = 30  # TIP-1009: valid_before at most 30 s ahead
CLOCK_SKEW_S = 5
MAX_GAS, MAX_FEE_PER_GAS = 2_000_000, 10**11
SELECTOR = bytes.fromhex("95777d59")  # transferWithMemo(address,uint256,bytes32)
SELECTOR_TRANSFER = bytes.fromhex("a9059cbb")
MEMO_PREFIX = keccak(text="mpp")[:4] + b"\x01"
#: A fixed, publicly derivable fee payer: it co-signs sponsored transactions in the simulation only.
FEE_PAYER = Account.from_key(keccak(text="stablestudio sandbox tempo fee payer (testnet, worthless)"))


class TxInvalid(Exception):
    """Why a transaction or proof was refused (``reason`` is shown to the client)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Terms:
    """What the challenge asked for."""

    chain_id: int
    currency: str
    recipient: str
    amount: int
    fee_payer: bool
    realm: str
    challenge_id: str
    expires_at: float


@dataclass(frozen=True)
class Settled:
    """A transaction that checks out: who pays, what identifies it, its on-chain hash, its fee."""

    payer: str
    key: str          # keccak of what the sender signed: the same payment whatever the wrapper
    tx_hash: str
    max_fee: int      # base units the payer's fee could reach (0 when sponsored)


def _int(b: object, what: str) -> int:
    if not isinstance(b, bytes) or len(b) > 32 or b[:1] == b"\x00":
        raise TxInvalid(f"{what} is not a canonical integer")
    return int.from_bytes(b, "big") if b else 0


def _decode(raw_hex: str) -> tuple[int, list]:
    if not isinstance(raw_hex, str) or not raw_hex.startswith("0x") or len(raw_hex) > 20_000:
        raise TxInvalid("signature must be a 0x-hex serialized transaction")
    try:
        raw = bytes.fromhex(raw_hex[2:])
    except ValueError:
        raise TxInvalid("signature is not hex") from None
    if raw[:1] not in (b"\x76", b"\x78"):
        raise TxInvalid(f"envelope type 0x{raw[:1].hex()} is not a Tempo transaction (0x76 or 0x78)")
    try:
        fields = rlp.decode(raw[1:])
    except rlp.exceptions.DecodingError as e:
        raise TxInvalid(f"the transaction does not decode ({type(e).__name__})") from None
    if not isinstance(fields, list) or len(fields) != 14:
        raise TxInvalid("the envelope must have 13 fields and a sender signature (no key authorization)")
    return raw[0], fields


def _sender(kind: int, fields: list) -> tuple[str, list]:
    """Recover the sender from the signature over the fields it commits to."""
    body, sig = list(fields[:13]), fields[13]
    if not isinstance(sig, bytes) or len(sig) != 65 or sig[64] not in (27, 28):
        raise TxInvalid("sender signature must be 65 bytes r||s||v with v 27 or 28")
    slot = body[11]
    if kind == 0x78:
        if not isinstance(slot, bytes) or len(slot) != 20 or body[10] != b"":
            raise TxInvalid("a 0x78 hand-off carries the sender's address and no fee token")
        claimed, body[11] = to_checksum_address(slot), b"\x00"
    elif slot not in (b"", b"\x00"):
        raise TxInvalid("the fee payer slot must be empty (self-paid) or the 0x00 placeholder (sponsored)")
    elif slot == b"\x00" and body[10] != b"":
        raise TxInvalid("a sponsored transaction must not commit to a fee token")
    payload = keccak(b"\x76" + rlp.encode(body))
    v, r, s = sig[64], int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big")
    try:
        sender = Account._recover_hash(payload, vrs=(v, r, s))
    except Exception:
        raise TxInvalid("the sender signature does not recover") from None
    if kind == 0x78 and sender != claimed:
        raise TxInvalid(f"the hand-off names sender {claimed} but {sender} signed it")
    return sender, body


def _transfers(calls: object, terms: Terms, strict: bool) -> None:
    if not isinstance(calls, list) or not calls:
        raise TxInvalid("the transaction has no calls")
    matched = 0
    for call in calls:
        if not isinstance(call, list) or len(call) != 3 or not all(isinstance(x, bytes) for x in call):
            raise TxInvalid("a call must be [to, value, input]")
        to, value, data = call
        if _int(value, "call value") != 0:
            raise TxInvalid("calls must not carry a value")
        if data[:4] not in (SELECTOR, SELECTOR_TRANSFER):
            raise TxInvalid("every call must be a TIP-20 transfer")
        if to.hex() != terms.currency[2:].lower() or data[:4] != SELECTOR or len(data) != 100 \
                or data[4:16] != bytes(12) or data[16:36].hex() != terms.recipient[2:].lower() \
                or int.from_bytes(data[36:68], "big") != terms.amount:
            continue
        memo = data[68:100]
        if memo[:5] != MEMO_PREFIX or memo[5:15] != keccak(text=terms.realm)[:10] \
                or memo[25:32] != keccak(text=terms.challenge_id)[:7]:
            raise TxInvalid("memo is not bound to this challenge")
        matched += 1
    if matched == 0:
        raise TxInvalid(f"no matching payment call found (expected transferWithMemo of {terms.amount} "
                        f"{terms.currency} to {terms.recipient})")
    if len(calls) != 1 and (strict or terms.fee_payer):
        raise TxInvalid(f"expected exactly one call, got {len(calls)}")


def verify_transaction(raw_hex: str, terms: Terms, *, source: str | None, now: float, strict: bool) -> Settled:
    """Check a pull transaction against ``terms``; simulate co-signing a sponsored one."""
    kind, fields = _decode(raw_hex)
    sender, body = _sender(kind, fields)
    sponsored = body[11] == b"\x00"
    if sponsored != terms.fee_payer:
        raise TxInvalid("the challenge " + ("sponsors fees: send the 0x78 hand-off" if terms.fee_payer
                                           else "does not sponsor fees: the sender pays them"))
    if len(body[5]) or len(body[12]):
        raise TxInvalid("access list and authorization list must be empty")
    checked = strict or sponsored  # mppx checks these only when it co-signs
    if checked and _int(body[0], "chain id") != terms.chain_id:
        raise TxInvalid(f"transaction chain id {_int(body[0], 'chain id')} is not the challenge's {terms.chain_id}")
    _transfers(body[4], terms, strict)
    gas, max_fee = _int(body[3], "gas"), _int(body[2], "max fee")
    if checked:
        if _int(body[6], "nonce key") != EXPIRING_NONCE_KEY or _int(body[7], "nonce") != 0:
            raise TxInvalid("the transaction must use an expiring nonce (nonce key 2^256-1, nonce 0)")
        vb = _int(body[8], "valid_before") if body[8] else None
        if vb is None or vb <= now:
            raise TxInvalid("valid_before is missing or in the past")
        if body[9] and _int(body[9], "valid_after") > now + CLOCK_SKEW_S:
            raise TxInvalid("valid_after is in the future: the transaction is not valid yet")
        if vb > now + MAX_VALIDITY_S + CLOCK_SKEW_S or vb > terms.expires_at + CLOCK_SKEW_S:
            raise TxInvalid(f"valid_before {vb} is too far ahead (at most 30 s, and not after the challenge)")
        if gas > MAX_GAS or max_fee > MAX_FEE_PER_GAS or _int(body[1], "priority fee") > max_fee:
            raise TxInvalid("gas or fee caps are outside the sponsor policy")
    payer = sender
    if source is not None or strict:
        payer = parse_source(source, terms.chain_id)
        if strict and payer != sender:
            raise TxInvalid("the credential source does not match the transaction's sender")
    # Not strict: the payer is whoever `source` names, as the router takes it (mppx never compares).
    key = "0x" + keccak(b"\x76" + rlp.encode(body)).hex()
    if not sponsored:
        return Settled(payer, key, "0x" + keccak(b"\x76" + rlp.encode(fields)).hex(), -(-gas * max_fee // 10**12))
    return Settled(payer, key, cosign(body, sender, fields[13]), 0)


def parse_source(source: object, chain_id: int) -> str:
    """The address of a ``did:pkh:eip155:<chain>:<address>`` on ``chain_id`` (mixed case must be
    a valid checksum, as viem's ``isAddress`` demands)."""
    parts = source.split(":") if isinstance(source, str) else []
    if len(parts) != 5 or parts[:3] != ["did", "pkh", "eip155"] or parts[3] != str(chain_id) \
            or not re.fullmatch(r"0x[0-9a-fA-F]{40}", parts[4]):
        raise TxInvalid(f"credential source is invalid (expected did:pkh:eip155:{chain_id}:<address>)")
    address = parts[4]
    if address != address.lower() and address != to_checksum_address(address):
        raise TxInvalid("credential source address has an invalid checksum")
    return to_checksum_address(address)


def _uint(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""


def cosign(body: list, sender: str, sender_sig: bytes, key: bytes = FEE_PAYER.key) -> str:
    """The fee payer picks pathUSD, signs the 0x78 payload and "broadcasts": the final hash."""
    fee_token = bytes.fromhex("20c0000000000000000000000000000000000000")
    handoff = body[:10] + [fee_token, bytes.fromhex(sender[2:]), body[12]]
    signed = Account._sign_hash(keccak(b"\x78" + rlp.encode(handoff)), key)
    fee_payer_sig = [_uint(signed.v - 27), _uint(signed.r), _uint(signed.s)]
    final = body[:10] + [fee_token, fee_payer_sig, body[12], sender_sig]
    return "0x" + keccak(b"\x76" + rlp.encode(final)).hex()


_PROOF_TYPES = {
    "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                     {"name": "chainId", "type": "uint256"}],
    "Proof": [{"name": "account", "type": "address"}, {"name": "challengeId", "type": "string"},
              {"name": "realm", "type": "string"}],
}


def verify_proof(signature: object, source: object, *, chain_id: int, challenge_id: str, realm: str) -> str:
    """The signer of a $0 proof, which must be the ``source`` (mppx ``validateProofCredential``)."""
    if source is None:
        raise TxInvalid("Proof credential must include a source.")
    address = parse_source(source, chain_id)
    if not isinstance(signature, str) or len(signature) != 132 or not signature.startswith("0x"):
        raise TxInvalid("proof signature must be 65 bytes of 0x-hex")
    message = {"types": _PROOF_TYPES, "primaryType": "Proof", "domain": {"name": "MPP", "version": "3",
                                                                          "chainId": chain_id},
               "message": {"account": address, "challengeId": challenge_id, "realm": realm}}
    try:
        signer = Account.recover_message(encode_typed_data(full_message=message), signature=signature)
    except Exception:
        signer = None
    if signer != address:
        raise TxInvalid("Proof signature does not match source.")
    return address
