"""Everything the sandbox remembers: used nonces, the settlement ledger, jobs, uploads, blobs.

Settling is one synchronous step (:meth:`State.settle`): look the nonce up, mark it used, write
the ledger entry and create the job or upload, with no ``await`` in between and under a lock, so
concurrent requests carrying the same signed payment can never settle twice. Readers in other
threads (tests, the in-process API) get copies.
"""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from eth_utils import keccak

from ..catalog import Catalog, load
from . import payments
from .faults import Dice, Faults
from .jobs import Job, Timing, draw_duration_s
from .mpp import CHALLENGE_TTL_S, Mpp, MppInvalid, Verified
from .mpp import NETWORK as TEMPO_TESTNET
from .payments import Payment, PaymentInvalid
from .router import SIWX_WINDOW_S, Mode
from .signin import NonceStore
from .wire import iso

#: What ``networks=`` may name: short names or CAIP-2 ids.
NETWORK_IDS = {"base-sepolia": payments.NETWORK, "solana-devnet": "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1",
               "tempo-testnet": TEMPO_TESTNET}


def network_ids(names: Any) -> tuple[str, ...]:
    """CAIP-2 ids for ``names`` (one or several short names or ids; None: Base Sepolia alone)."""
    names = [names] if isinstance(names, str) else list(names or ["base-sepolia"])
    known = {**NETWORK_IDS, **{v: v for v in NETWORK_IDS.values()}}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"the sandbox takes {', '.join(NETWORK_IDS)}; not {', '.join(unknown) or 'nothing'}")
    return tuple(dict.fromkeys(known[n] for n in names))


def same_payer(a: str, b: str) -> bool:
    """EVM addresses compare case-blind; base58 (Solana) addresses are case-sensitive."""
    return a.lower() == b.lower() if a.startswith("0x") else a == b


@dataclass
class Upload:
    id: str
    client_token: str
    pathname: str
    filename: str
    content_type: str
    payer: str
    expires_at: float
    blob_url: str | None = None
    confirmed: bool = False


@dataclass
class Blob:
    data: bytes = field(repr=False)
    content_type: str
    url: str


@dataclass
class Receipt:
    """What a used nonce bought, kept to answer idempotent replays."""

    fingerprint: tuple[Any, ...]
    route: str
    body: dict[str, Any]
    headers: dict[str, str]


class State:
    def __init__(self, *, time_scale: float, faults: Faults, mode: Mode, merchant: str, blob_limit_bytes: int,
                 catalog: Catalog | None = None, networks: tuple[str, ...] = (payments.NETWORK,),
                 solana: Any = None, mpp: Mpp | None = None, timing: Timing | None = None):
        self.catalog = catalog or load()
        self.networks = networks  # what the 402s offer, in order
        self.solana = solana  # a solana.Chain when the sandbox takes Solana devnet
        self.mpp = mpp  # MPP on Tempo testnet, offered beside (or instead of) x402
        self.proofs: dict[str, float] = {}  # MPP $0 proofs used: challenge id -> its expiry
        self.time_scale = time_scale
        self.mode = mode
        self.siwx_nonces = NonceStore(SIWX_WINDOW_S)
        self.merchant = merchant
        self.blob_limit_bytes = blob_limit_bytes
        self.lock = threading.RLock()
        self.dice = Dice(faults)
        self.timing = timing or Timing()
        self._durations = random.Random(self.timing.seed)
        self.receipts: dict[tuple[str, str], Receipt] = {}
        self.settlements: list[dict[str, Any]] = []
        self.jobs: dict[str, Job] = {}
        self.uploads: dict[str, Upload] = {}
        self.blobs: dict[str, Blob] = {}  # pathname -> blob
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sandbox-render")
        self._seq = 0

    @property
    def faults(self) -> Faults:
        return self.dice.faults

    def accepts(self, amount: int) -> list[dict[str, Any]]:
        """The ``accepts`` of a 402: one offer per network the sandbox takes, as its mode sends them."""
        return [self.mode.requirement(self.solana.requirement(amount) if n.startswith("solana:") else
                                      payments.requirement(amount, self.merchant, omit_extra=self.mode.omit_extra))
                for n in self.x402_networks]

    @property
    def x402_networks(self) -> tuple[str, ...]:
        """The networks paid with x402 (Tempo is paid with MPP)."""
        return tuple(n for n in self.networks if n != TEMPO_TESTNET)

    @property
    def signin_chains(self) -> tuple[str, ...]:
        """SIWX chains: the x402 networks, or Base Sepolia when only Tempo is taken (the same EVM key)."""
        return self.x402_networks or (payments.NETWORK,)

    def proved(self, authorization: str, *, realm: str, now: float) -> str:
        """The payer of a valid, unused MPP $0 proof (each challenge proves once, as at the router)."""
        assert self.mpp is not None
        verified = self.mpp.verify(authorization, realm=realm, amount=0, now=now)
        with self.lock:
            self.proofs = {k: t for k, t in self.proofs.items() if t > now}
            if verified.challenge_id in self.proofs:
                raise MppInvalid("verification-failed", "Proof credential has already been used.")
            self.proofs[verified.challenge_id] = now + CHALLENGE_TTL_S
        return verified.payer

    def set_catalog(self, catalog: Catalog) -> None:
        """Serve another route table from now on (running jobs keep their routes)."""
        with self.lock:
            self.catalog = catalog

    def set_faults(self, faults: Faults) -> None:
        """Install new faults; the dice restart from ``faults.seed``."""
        self.dice = Dice(faults)

    def replayed(self, payment: Payment, route: str) -> Receipt:
        """The original answer for a replayed nonce, or the refusal that tells the client so."""
        with self.lock:
            receipt = self.receipts[payment.key]
        if self.mode.replay == "idempotent" and receipt.fingerprint == payment.fingerprint \
                and receipt.route == route:
            return receipt
        raise PaymentInvalid(f"nonce_already_used: nonce {payment.nonce} of {payment.payer} was settled "
                             f"before (for {receipt.route}); find its job in GET /api/jobs")

    def is_used(self, payment: Payment | Verified) -> bool:
        with self.lock:
            return payment.key in self.receipts

    def settle(self, payment: Payment | Verified, route: str,
               create: Callable[[], tuple[dict[str, Any], dict[str, Any]]]) -> tuple[dict[str, Any], str]:
        """Mark the nonce used, record the settlement and create what was paid for, atomically.

        ``create`` makes the job or upload and returns ``(response body, ledger reference)``
        where the reference is ``{"job_id": ...}`` or ``{"upload_id": ...}``. Returns the
        response body and the ``PAYMENT-RESPONSE`` content.
        """
        with self.lock:
            if payment.key in self.receipts:  # unreachable without an await in the caller; belt and braces
                raise PaymentInvalid(f"nonce_already_used: nonce {payment.nonce} was settled before")
            now = time.time()
            body, ref = create()
            preimage = json.dumps([payment.nonce, payment.network, payment.payer, payment.amount,
                                   payment.pay_to, route, ref, now], sort_keys=True)
            tx = payment.transaction or "0x" + keccak(text=preimage).hex()
            self.settlements.append({
                "nonce": payment.nonce, "payer": payment.payer, "payTo": payment.pay_to,
                "amount": payment.amount, "network": payment.network, "asset": payment.asset,
                "route": route, **ref, "transaction": tx, "settled_at": iso(now)})
            receipt = {"success": True, "transaction": tx, "network": payment.network,
                       "payer": payment.payer, "amount": payment.amount}
            self.receipts[payment.key] = Receipt(payment.fingerprint, route, body, receipt)
            return body, receipt

    def duration_s(self, route: Any, params: dict[str, Any]) -> float:
        """A new job's duration in real seconds (drawn, then scaled to the sandbox's clock)."""
        with self.lock:
            return draw_duration_s(route, params, self.timing, self._durations) * self.time_scale

    def add_job(self, job: Job) -> None:
        with self.lock:
            self._seq += 1
            job.seq = self._seq
            self.jobs[job.id] = job

    def visible_job(self, job_id: str, payer: str, now: float) -> Job | None:
        """The job if it exists, belongs to ``payer`` and is past the 404 window."""
        job = self.jobs.get(job_id)
        if job is None or not same_payer(job.payer, payer):
            return None
        if now < job.created_at + self.faults.poll_404_s:
            return None
        return job

    def jobs_of(self, payer: str, now: float) -> list[Job]:
        with self.lock:
            jobs = list(self.jobs.values())
        mine = [j for j in jobs if same_payer(j.payer, payer)
                and now >= j.created_at + self.faults.poll_404_s]
        return sorted(mine, key=lambda j: (j.created_at, j.seq), reverse=True)

    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        with self.lock:
            statuses = [j.status(now) for j in self.jobs.values()]
            return {
                "merchant": self.merchant, "network": self.networks[0], "networks": list(self.networks),
                "solana_merchant": self.solana.merchant if self.solana else None, "time_scale": self.time_scale,
                "mode": self.mode.to_dict(), "routes": len(self.catalog.routes), "faults": self.faults.to_dict(),
                "settlements": len(self.settlements), "uploads": len(self.uploads),
                "blobs": len(self.blobs),
                "timing": dataclasses.asdict(self.timing),
                "jobs": {s: statuses.count(s) for s in ("pending", "processing", "complete", "failed")},
            }
