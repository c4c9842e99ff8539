"""Tempo transactions (type ``0x76``, sponsored hand-off ``0x78``), encoded and signed here.

eth-account cannot serialize Tempo's account-abstraction transaction, so this module encodes it
with ``rlp`` and signs its payload with the wallet's secp256k1 key. Layouts follow ox's
``TxEnvelopeTempo`` (the reference mppx runs); the tests check them against ox's own vectors and
byte for byte against ``pytempo``. See /work/notes/tempo.md §2 for the sources.

Only what a pull-mode MPP charge needs: one or more calls, an expiring nonce, an optional fee
token, and the fee-payer placeholder for sponsored charges. No access lists, no key
authorizations, no 7702 authorization lists (they are always empty lists here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .wallet import Wallet

MAINNET, TESTNET = 4217, 42431  # names and explorers: networks.TEMPO, networks.TEMPO_TESTNET
RPC_URLS = {MAINNET: "https://rpc.tempo.xyz", TESTNET: "https://rpc.moderato.tempo.xyz"}
#: TIP-20 stablecoins (6 decimals). USDC.e is the mainnet charge currency; the others are testnet tokens.
USDC_E = "0x20C000000000000000000000b9537d11c60E8b50"
PATH_USD = "0x20c0000000000000000000000000000000000000"
ALPHA_USD = "0x20c0000000000000000000000000000000000001"
TOKEN_NAMES = {USDC_E.lower(): "USDC.e", PATH_USD: "pathUSD", ALPHA_USD: "AlphaUSD"}

TX_TYPE, FEE_PAYER_TYPE = 0x76, 0x78
#: TIP-1009 expiring nonces: this key, nonce 0, and a short ``valid_before``; no nonce look-up needed.
EXPIRING_NONCE_KEY = 2**256 - 1
#: The chain accepts at most 30 s ahead (TIP-1009); mppx signs 25 s, which is safe under either cap.
VALIDITY_S = 25
#: A static gas limit (pympp and mpp-rs do the same): a TIP-20 transfer as an AA tx needs ~270k.
GAS_LIMIT = 1_000_000
#: Gas prices are attodollars per gas; fee tokens count microdollars (6 decimals).
ATTO_PER_BASE_UNIT = 10**12
#: Tempo's base fee (TIP-1010): what fees are estimated at before the first gas price is read.
BASE_FEE = 2 * 10**10
#: Above this an RPC's gas price is refused (the default sponsor policy's ``maxFeePerGas`` cap).
MAX_GAS_PRICE = 10**11
#: The sponsor policy's priority-fee caps per chain (mppx ``fee-payer.ts`` ``defaultPolicy``).
SPONSORED_MAX_PRIORITY = {MAINNET: 10**10, TESTNET: 5 * 10**10}

SELECTOR_TRANSFER_WITH_MEMO = bytes.fromhex("95777d59")  # transferWithMemo(address,uint256,bytes32)
SELECTOR_TRANSFER = bytes.fromhex("a9059cbb")            # transfer(address,uint256)
MEMO_TAG = bytes.fromhex("ef1ed712")                     # keccak("mpp")[:4]
MEMO_VERSION = 1
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


def keccak(primitive: bytes | None = None, *, text: str | None = None) -> bytes:
    """Keccak-256 (eth-utils', imported on first use: ``import stablestudio_widgets`` loads no
    signing stack)."""
    from eth_utils import keccak as hash_

    return hash_(primitive) if text is None else hash_(text=text)


def rlp_encode(item: Any) -> bytes:
    import rlp

    return rlp.encode(item)


def address_bytes(address: str) -> bytes:
    if not isinstance(address, str) or not _ADDRESS.match(address):
        raise ValueError(f"not an EVM address: {address!r:.60}")
    return bytes.fromhex(address[2:])


def _uint(n: int) -> bytes:
    """RLP integers: minimal big-endian, zero is the empty string."""
    return n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""


@dataclass(frozen=True)
class Call:
    to: str | None
    data: bytes = b""
    value: int = 0

    def rlp_fields(self) -> list[bytes]:
        return [address_bytes(self.to) if self.to else b"", _uint(self.value), self.data]


@dataclass(frozen=True)
class TempoTransaction:
    """The fields a sender signs. ``sponsored``: a fee payer will co-sign, so the sender commits
    to no fee token and leaves the ``0x00`` placeholder where the fee payer's signature goes."""

    chain_id: int
    calls: tuple[Call, ...]
    max_priority_fee_per_gas: int = 0
    max_fee_per_gas: int = 0
    gas: int = 0
    nonce_key: int = 0
    nonce: int = 0
    valid_before: int | None = None
    valid_after: int | None = None
    fee_token: str | None = None
    sponsored: bool = False

    def __post_init__(self) -> None:
        if not self.calls:
            raise ValueError("a Tempo transaction needs at least one call")
        if self.valid_before is not None and self.valid_after is not None and self.valid_before <= self.valid_after:
            raise ValueError("valid_before must be after valid_after")

    def _fields(self, fee_payer_slot: Any, fee_token: bytes) -> list[Any]:
        optional = [b"" if v is None else _uint(v) for v in (self.valid_before, self.valid_after)]
        return [_uint(self.chain_id), _uint(self.max_priority_fee_per_gas), _uint(self.max_fee_per_gas),
                _uint(self.gas), [c.rlp_fields() for c in self.calls], [],  # access list: always empty
                _uint(self.nonce_key), _uint(self.nonce), *optional, fee_token, fee_payer_slot,
                []]  # aa_authorization_list: always empty

    def sender_fields(self) -> list[Any]:
        """The 13 fields the sender signs (ox ``encodeForSigning``)."""
        if self.sponsored:
            return self._fields(b"\x00", b"")
        return self._fields(b"", address_bytes(self.fee_token) if self.fee_token else b"")

    def signing_preimage(self) -> bytes:
        return bytes([TX_TYPE]) + rlp_encode(self.sender_fields())

    def signing_hash(self) -> bytes:
        return keccak(self.signing_preimage())

    def encode(self, signature: bytes) -> bytes:
        """The sender-signed ``0x76`` envelope (sponsored: with the placeholder, awaiting the fee payer)."""
        return bytes([TX_TYPE]) + rlp_encode([*self.sender_fields(), signature])

    def fee_payer_handoff(self, sender: str, signature: bytes | None = None) -> bytes:
        """The ``0x78`` envelope a sponsored sender hands to the fee payer: the sender's address in
        the fee-payer slot, no fee token (the fee payer chooses it). Unsigned, it is what the fee
        payer signs (ox ``getFeePayerSignPayload``)."""
        fields = self._fields(address_bytes(sender), b"")
        return bytes([FEE_PAYER_TYPE]) + rlp_encode(fields + ([signature] if signature is not None else []))


@dataclass(frozen=True)
class SignedTransaction:
    """A sender-signed Tempo transaction as it goes into an MPP credential."""

    tx: TempoTransaction
    sender: str
    signature: bytes = field(repr=False)
    raw: bytes = field(repr=False)

    @property
    def raw_hex(self) -> str:
        return "0x" + self.raw.hex()

    @property
    def tx_hash(self) -> str | None:
        """The chain's hash of this transaction; unknowable for a sponsored one (it covers the fee
        payer's signature and fee token, chosen by the server)."""
        return None if self.tx.sponsored else "0x" + keccak(self.raw).hex()

    @property
    def signing_hash(self) -> str:
        """What the sender signed: identifies this payment in our ledger, sponsored or not."""
        return "0x" + self.tx.signing_hash().hex()


def sign(tx: TempoTransaction, wallet: Wallet) -> SignedTransaction:
    """Sign ``tx`` with the wallet; sponsored transactions become the ``0x78`` hand-off."""
    signature = wallet.sign_hash(tx.signing_hash())
    raw = tx.fee_payer_handoff(wallet.address, signature) if tx.sponsored else tx.encode(signature)
    return SignedTransaction(tx, wallet.address, signature, raw)


# --- the one call: transferWithMemo, and the memo that binds it to one challenge -----------------

def transfer_with_memo(to: str, amount: int, memo: bytes) -> bytes:
    """ABI calldata of ``transferWithMemo(to, amount, memo)``."""
    if len(memo) != 32 or not 0 <= amount < 2**256:
        raise ValueError("memo must be 32 bytes and amount a uint256")
    return SELECTOR_TRANSFER_WITH_MEMO + bytes(12) + address_bytes(to) + amount.to_bytes(32, "big") + memo


def attribution_memo(realm: str, challenge_id: str, client_id: str | None = None) -> bytes:
    """mppx's attribution memo: tag ‖ version ‖ keccak(realm)[:10] ‖ keccak(client)[:10] or zeros ‖
    keccak(challenge id)[:7]. Servers refuse a pull transaction whose memo is not bound to the
    challenge it answers, so a signed transaction can pay for that one challenge only."""
    client = keccak(text=client_id)[:10] if client_id else bytes(10)
    return MEMO_TAG + bytes([MEMO_VERSION]) + keccak(text=realm)[:10] + client + keccak(text=challenge_id)[:7]


# --- the $0 proof (sign-in on MPP routes) ---------------------------------------------------------

PROOF_TYPES = {
    "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                     {"name": "chainId", "type": "uint256"}],
    "Proof": [{"name": "account", "type": "address"}, {"name": "challengeId", "type": "string"},
              {"name": "realm", "type": "string"}],
}


def proof_typed_data(chain_id: int, account: str, challenge_id: str, realm: str) -> dict[str, Any]:
    """The EIP-712 message of an MPP zero-amount proof (mppx ``proof.ts``, domain version "3")."""
    return {"types": PROOF_TYPES, "primaryType": "Proof",
            "domain": {"name": "MPP", "version": "3", "chainId": chain_id},
            "message": {"account": _checksummed(account), "challengeId": challenge_id, "realm": realm}}


def max_fee_base_units(tx: TempoTransaction) -> int:
    """The most a self-paid transaction can cost in fees, in the fee token's base units."""
    return -(-tx.gas * tx.max_fee_per_gas // ATTO_PER_BASE_UNIT)


def _checksummed(address: str) -> str:
    from eth_utils import to_checksum_address

    return to_checksum_address(address)
