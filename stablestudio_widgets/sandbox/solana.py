"""x402 ``exact`` payments on Solana devnet, verified the way a facilitator would, on no chain.

The sandbox plays the facilitator: it owns the fee-payer key named in ``extra.feePayer``, hands
out blockhashes (in ``extra.recentBlockhash`` and from a small JSON-RPC endpoint), and checks a
payment transaction with ``solders`` alone: the payer's Ed25519 signature, the programs and the
order of the instructions, the exact amount, the USDC mint, the destination token account, a
fee payer that only pays fees, a memo, a blockhash it issued and that is still valid. The union
of the reference Python and TypeScript facilitators' rules, erring to the stricter. It does not
import the package's client code, so a bug there cannot hide here. Settling signs the fee payer's
slot; the transaction id is that signature. A transaction is single-use by the hash of its
message (the fee payer's slot is not part of it, so it cannot be varied to replay).
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from typing import Any

from .payments import Payment, PaymentInvalid, match
from .wire import HeaderError, decode_header

NETWORK = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"  # devnet
USDC = "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU"  # devnet USDC, 6 decimals, classic Token program
TOKEN = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
TOKEN_2022 = "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb"
COMPUTE_BUDGET = "ComputeBudget111111111111111111111111111111"
MEMO = "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr"
LIGHTHOUSE = "L2TExMFKdjpN9kozasaurPirfHy9P8sbXoAN1qA3S95"  # wallet guard instructions facilitators tolerate
DECIMALS = 6
MAX_TIMEOUT_S = 60
BLOCKHASH_TTL_S = 90.0  # Solana keeps a blockhash for 150 blocks: 60-90 s
MAX_COMPUTE_UNITS = 400_000
MAX_PRICE_MICROLAMPORTS = 5_000_000


def _seeded(label: str) -> Any:
    from solders.keypair import Keypair

    return Keypair.from_seed(hashlib.sha256(f"stablestudio sandbox {label} (devnet, worthless)".encode()).digest())


class Chain:
    """The sandbox's Solana: a fee payer, a merchant, the blockhashes it issued. Nothing else."""

    def __init__(self, *, blockhash_ttl_s: float = BLOCKHASH_TTL_S, hint: bool = True):
        self.fee_payer = _seeded("solana fee payer")
        self.merchant = str(_seeded("solana merchant").pubkey())
        self.blockhash_ttl_s = blockhash_ttl_s
        self.hint = hint  # put recentBlockhash in extra (a server built with an RPC URL does)
        self._issued: dict[str, float] = {}
        self._lock = threading.Lock()

    # -- terms ---------------------------------------------------------------------------------

    def blockhash(self, now: float | None = None) -> str:
        """A fresh blockhash, remembered with the time it was issued."""
        now = time.time() if now is None else now
        value = _b58(os.urandom(32))
        with self._lock:
            self._issued = {h: t for h, t in self._issued.items() if now - t < 10 * self.blockhash_ttl_s}
            self._issued[value] = now
        return value

    def requirement(self, amount: int) -> dict[str, Any]:
        extra: dict[str, Any] = {"feePayer": str(self.fee_payer.pubkey())}
        if self.hint:
            extra["recentBlockhash"] = self.blockhash()
        return {"scheme": "exact", "network": NETWORK, "amount": str(amount), "asset": USDC,
                "payTo": self.merchant, "maxTimeoutSeconds": MAX_TIMEOUT_S, "extra": extra}

    def rpc(self, body: Any) -> dict[str, Any]:
        """The two JSON-RPC calls an x402 client makes: ``getLatestBlockhash``, ``getAccountInfo`` (mint)."""
        from solders.token.state import Mint

        call_id = body.get("id") if isinstance(body, dict) else None
        method = body.get("method") if isinstance(body, dict) else None
        context = {"slot": 1, "apiVersion": "2.2.0"}
        if method == "getLatestBlockhash":
            return {"jsonrpc": "2.0", "id": call_id, "result": {"context": context, "value": {
                "blockhash": self.blockhash(), "lastValidBlockHeight": 150}}}
        params = body.get("params") if isinstance(body, dict) else None
        if method == "getAccountInfo" and isinstance(params, list) and params and params[0] == USDC:
            data = base64.b64encode(bytes(Mint(None, 10**15, DECIMALS, True))).decode()
            return {"jsonrpc": "2.0", "id": call_id, "result": {"context": context, "value": {
                "lamports": 1_461_600, "data": [data, "base64"], "owner": TOKEN, "executable": False,
                "rentEpoch": 2**64 - 1, "space": 82}}}
        if method == "getAccountInfo":
            return {"jsonrpc": "2.0", "id": call_id, "result": {"context": context, "value": None}}
        return {"jsonrpc": "2.0", "id": call_id, "error": {"code": -32601, "message": f"Method not found: {method}"}}

    # -- verification --------------------------------------------------------------------------

    def verify(self, header: str, accepts: list[dict[str, Any]], *, deep: bool = False) -> Payment:
        """Decode a ``PAYMENT-SIGNATURE`` header and check its transaction against the terms
        (``deep``: ``accepted`` must equal an offer in every key but the blockhash hint)."""
        try:
            payload = decode_header(header)
        except HeaderError as e:
            raise PaymentInvalid(f"invalid_payment_header: {e}") from None
        if payload.get("x402Version") != 2:
            raise PaymentInvalid(f"unsupported_x402_version: {payload.get('x402Version')!r}")
        accepted = payload.get("accepted")
        if not isinstance(accepted, dict):
            raise PaymentInvalid("invalid_payload: payment.accepted must be an object")
        req = match(accepted, accepts, deep=deep)
        fee_payer = str(self.fee_payer.pubkey())
        if (accepted.get("extra") or {}).get("feePayer") != fee_payer:
            raise PaymentInvalid("fee_payer_not_managed_by_facilitator: accepted.extra.feePayer is not ours")
        inner = payload.get("payload")
        b64 = inner.get("transaction") if isinstance(inner, dict) else None
        if not isinstance(b64, str):
            raise PaymentInvalid("invalid_exact_svm_payload_transaction_could_not_be_decoded: no transaction")
        tx = _decode(b64)
        payer, amount = self._check(tx, req, fee_payer)
        message = bytes(tx.message)
        issued = self._issued.get(str(tx.message.recent_blockhash))
        if issued is None:
            raise PaymentInvalid("transaction_simulation_failed: BlockhashNotFound (not a blockhash this chain issued)")
        return Payment(payer=payer, nonce=hashlib.sha256(message).hexdigest(), amount=str(amount),
                       pay_to=req["payTo"], network=NETWORK, asset=USDC, valid_after=0,
                       valid_before=int(issued + self.blockhash_ttl_s), max_timeout_s=MAX_TIMEOUT_S,
                       signature=str(tx.signatures[1]), transaction=self._fee_payer_signature(tx))

    def _check(self, tx: Any, req: dict[str, Any], fee_payer: str) -> tuple[str, int]:
        from solders.message import MessageV0
        from solders.token.associated import get_associated_token_address

        m = tx.message
        if not isinstance(m, MessageV0) or list(m.address_table_lookups):
            raise PaymentInvalid("invalid_exact_svm_payload_transaction_version: expected a v0 message without "
                                 "address lookup tables")
        keys = [str(k) for k in m.account_keys]
        if not keys or keys[0] != fee_payer:
            raise PaymentInvalid("invalid_exact_svm_fee_payer_mismatch: the fee payer must be extra.feePayer")
        if m.header.num_required_signatures != 2 or len(tx.signatures) != 2:
            raise PaymentInvalid("invalid_exact_svm_payload_excessive_signers: exactly the fee payer and the payer "
                                 "may sign")
        if not tx.verify_with_results()[1]:
            raise PaymentInvalid("invalid_exact_svm_payload_signature_invalid: the payer's signature does not verify")
        ixs = [(keys[ix.program_id_index], [keys[a] for a in ix.accounts], bytes(ix.data)) for ix in m.instructions]
        if not 3 <= len(ixs) <= 7:
            raise PaymentInvalid(f"invalid_exact_svm_payload_transaction_instructions_length: {len(ixs)}")
        for program, accounts, _ in ixs:
            if fee_payer == program or fee_payer in accounts:
                raise PaymentInvalid("invalid_exact_svm_payload_transaction_fee_payer_transferring_funds: the fee "
                                     "payer may only pay fees")
        (p0, _, d0), (p1, _, d1), (p2, accounts, data) = ixs[:3]
        if p0 != COMPUTE_BUDGET or len(d0) != 5 or d0[0] != 2 or int.from_bytes(d0[1:], "little") > MAX_COMPUTE_UNITS:
            raise PaymentInvalid("invalid_exact_svm_payload_transaction_instructions_compute_limit_instruction")
        if p1 != COMPUTE_BUDGET or len(d1) != 9 or d1[0] != 3:
            raise PaymentInvalid("invalid_exact_svm_payload_transaction_instructions_compute_price_instruction")
        if int.from_bytes(d1[1:], "little") > MAX_PRICE_MICROLAMPORTS:
            raise PaymentInvalid("invalid_exact_svm_payload_transaction_instructions_compute_price_instruction_"
                                 "too_high")
        if p2 not in (TOKEN, TOKEN_2022) or len(data) != 10 or data[0] != 12 or len(accounts) != 4:
            raise PaymentInvalid("invalid_exact_svm_payload_no_transfer_instruction: the third instruction must be "
                                 "an SPL TransferChecked")
        source, mint, destination, authority = accounts
        if mint != req["asset"]:
            raise PaymentInvalid(f"invalid_exact_svm_payload_mint_mismatch: {mint}")
        if p2 != TOKEN or data[9] != DECIMALS:
            raise PaymentInvalid("invalid_exact_svm_payload_mint_mismatch: USDC is a classic Token mint with 6 "
                                 "decimals")
        from solders.pubkey import Pubkey

        expected = get_associated_token_address(Pubkey.from_string(req["payTo"]), Pubkey.from_string(mint))
        if destination != str(expected):
            raise PaymentInvalid("invalid_exact_svm_payload_recipient_mismatch: the destination is not payTo's "
                                 "USDC account")
        if authority != keys[1] or source == destination:
            raise PaymentInvalid("invalid_exact_svm_payload_authority_mismatch: the payer must sign the transfer")
        amount = int.from_bytes(data[1:9], "little")
        if amount != int(req["amount"]):
            raise PaymentInvalid(f"invalid_exact_svm_payload_amount_mismatch: expected {req['amount']} got {amount}")
        rest = ixs[3:]
        if any(p not in (MEMO, LIGHTHOUSE) for p, _, _ in rest):
            raise PaymentInvalid("invalid_exact_svm_payload_unknown_instruction: only Memo and Lighthouse may follow "
                                 "the transfer")
        memos = [d for p, _, d in rest if p == MEMO]
        wanted = (req.get("extra") or {}).get("memo")
        if wanted is not None and (len(memos) != 1 or memos[0] != str(wanted).encode()):
            raise PaymentInvalid("invalid_exact_svm_payload_memo_mismatch: the memo must be extra.memo")
        if not memos:
            raise PaymentInvalid("invalid_exact_svm_payload_memo_count: a memo (a random nonce) is required")
        return authority, amount

    def _fee_payer_signature(self, tx: Any) -> str:
        """What settling adds: the fee payer's signature, which is also the transaction id."""
        from solders.message import to_bytes_versioned

        return str(self.fee_payer.sign_message(to_bytes_versioned(tx.message)))


def _decode(b64: str) -> Any:
    from solders.transaction import VersionedTransaction

    try:
        return VersionedTransaction.from_bytes(base64.b64decode(b64, validate=True))
    except Exception:  # binascii.Error, ValueError("io error"), solders' own parse errors
        raise PaymentInvalid("invalid_exact_svm_payload_transaction_could_not_be_decoded") from None


def _b58(data: bytes) -> str:
    from solders.hash import Hash

    return str(Hash(data))


def check_window(p: Payment, now: float) -> None:
    """A transaction can land only while its blockhash is valid."""
    if p.valid_before < now:
        raise PaymentInvalid("transaction_simulation_failed: BlockhashNotFound (the transaction's blockhash "
                             "expired; sign a new one)")
