"""The x402 ``exact`` payment on Solana: the v0 transaction the reference clients build.

Compute-unit limit, compute-unit price, an SPL ``TransferChecked`` of exactly ``amount`` from the
payer's associated token account to ``payTo``'s, and a memo; the fee payer is ``extra.feePayer``
(the facilitator), whose signature slot stays empty until it settles. The payer signs only its
own slot. The blockhash makes the transaction expire 60-90 s later, which is what bounds
a resend. ``solders`` is imported on first use (the ``solana`` extra).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import PaymentRequiredError
from .networks import NETWORKS, SOLANA, SOLANA_DEVNET, is_usdc
from .wallet import solders

if TYPE_CHECKING:
    import httpx

    from .wallet import Wallet
    from .x402 import Requirement

TOKEN_PROGRAM = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
ATA_PROGRAM = "ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL"
COMPUTE_BUDGET_PROGRAM = "ComputeBudget111111111111111111111111111111"
MEMO_PROGRAM = "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr"
COMPUTE_UNIT_LIMIT = 20_000  # the reference clients' value; the transfer and a memo use ~19,200
COMPUTE_UNIT_PRICE = 1  # micro-lamports per unit, as the reference clients
USDC_DECIMALS = 6
MAX_MEMO_BYTES = 256
MAX_U64 = 2**64 - 1
#: How long after its blockhash was fresh a signed transaction may still land: Solana drops a
#: blockhash after 150 slots, 60-90 s. The upper end: until then a payment counts as possibly
#: settled (never called expired while it could still land); resends stop just before it.
BLOCKHASH_VALIDITY_S = 90.0
DEFAULT_RPC = {SOLANA: "https://api.mainnet-beta.solana.com", SOLANA_DEVNET: "https://api.devnet.solana.com"}


def pubkey(value: Any, what: str) -> Any:
    """A ``Pubkey`` from untrusted base58, or a :class:`PaymentRequiredError` naming the field."""
    Pubkey = solders().pubkey.Pubkey
    try:
        return Pubkey.from_string(value)
    except (ValueError, TypeError):
        raise PaymentRequiredError(f"{what} {value!r:.60} is not a Solana address. Nothing was signed.") from None


def refuse(req: Requirement, payer: str | None) -> str | None:
    """Why this wallet cannot pay ``req`` on Solana as the reference clients do (None: it can)."""
    if req.scheme != "exact":
        return f"scheme {req.scheme!r} is not supported (only 'exact')"
    if payer is None:
        return "this wallet has no Solana key (Wallet.from_solana_key or STABLESTUDIO_SOLANA_KEY)"
    if req.network not in NETWORKS:
        return f"Solana network {req.network} is not one we know"
    if not is_usdc(req.network, req.asset):
        return f"asset {req.asset} is not USDC on {NETWORKS[req.network].name}"
    if req.amount > MAX_U64:
        return "the amount does not fit a token transfer"
    fee_payer = req.extra.get("feePayer")
    if not isinstance(fee_payer, str) or not fee_payer:
        return "extra.feePayer is missing (the facilitator that pays the fees)"
    if fee_payer == payer:
        return "extra.feePayer is this wallet: it would pay the fees and sign twice"
    memo = req.extra.get("memo")
    if memo is not None and (not isinstance(memo, str) or len(memo.encode()) > MAX_MEMO_BYTES
                             or any(ord(c) < 32 or ord(c) == 127 for c in memo)):
        return f"extra.memo must be one line of at most {MAX_MEMO_BYTES} bytes (it is published on chain)"
    return None


def extra_blockhash(req: Requirement) -> str | None:
    """``extra.recentBlockhash`` when it is a well-formed blockhash (a hint: never trusted further)."""
    value = req.extra.get("recentBlockhash")
    if not isinstance(value, str):
        return None
    try:
        solders().hash.Hash.from_string(value)
    except (ValueError, TypeError):
        return None
    return value


async def latest_blockhash(http: httpx.AsyncClient, rpc_url: str) -> str:
    """One JSON-RPC ``getLatestBlockhash`` (used when the terms carry no fresh blockhash)."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "getLatestBlockhash", "params": [{"commitment": "confirmed"}]}
    try:
        r = await http.post(rpc_url, json=body, headers={"content-type": "application/json"})
        value = r.json()["result"]["value"]["blockhash"]
        solders().hash.Hash.from_string(value)
        return value
    except Exception as e:  # transport errors, HTTP errors, wrong shapes: all "no blockhash", nothing signed
        raise PaymentRequiredError(f"Could not get a recent Solana blockhash from {rpc_url} "
                                   f"({type(e).__name__}). Nothing was signed.") from None


@dataclass(frozen=True)
class SignedTransfer:
    transaction: str  # base64 of the partially signed wire transaction
    signature: str  # the payer's signature, base58: unique per transaction


def sign_transfer(wallet: Wallet, req: Requirement, blockhash: str) -> SignedTransfer:
    """Build and sign the payment transaction for exactly ``req``; the memo is ``extra.memo``
    or 16 random bytes as hex (what keeps two same-amount payments apart)."""
    s = solders()
    from solders.instruction import AccountMeta, Instruction
    from solders.message import MessageV0, to_bytes_versioned
    from solders.token.associated import get_associated_token_address
    from solders.transaction import VersionedTransaction

    why = refuse(req, wallet.solana_address)
    if why:
        raise PaymentRequiredError(f"Cannot pay {req.describe()}: {why}. Nothing was signed.")
    payer = pubkey(wallet.solana_address, "payer")
    fee_payer = pubkey(req.extra["feePayer"], "extra.feePayer")
    mint, owner = pubkey(req.asset, "asset"), pubkey(req.pay_to, "payTo")
    token = pubkey(TOKEN_PROGRAM, "token program")
    transfer = Instruction(token, bytes([12]) + req.amount.to_bytes(8, "little") + bytes([USDC_DECIMALS]), [
        AccountMeta(get_associated_token_address(payer, mint, token), is_signer=False, is_writable=True),
        AccountMeta(mint, is_signer=False, is_writable=False),
        AccountMeta(get_associated_token_address(owner, mint, token), is_signer=False, is_writable=True),
        AccountMeta(payer, is_signer=True, is_writable=False)])
    memo_text = req.extra.get("memo")
    memo = memo_text.encode() if isinstance(memo_text, str) and memo_text else os.urandom(16).hex().encode()
    instructions = [s.compute_budget.set_compute_unit_limit(COMPUTE_UNIT_LIMIT),
                    s.compute_budget.set_compute_unit_price(COMPUTE_UNIT_PRICE), transfer,
                    Instruction(pubkey(MEMO_PROGRAM, "memo program"), memo, [])]
    message = MessageV0.try_compile(fee_payer, instructions, [], s.hash.Hash.from_string(blockhash))
    signature = s.signature.Signature.from_bytes(wallet.sign_solana(to_bytes_versioned(message)))
    tx = VersionedTransaction.populate(message, [s.signature.Signature.default(), signature])
    return SignedTransfer(base64.b64encode(bytes(tx)).decode("ascii"), str(signature))
