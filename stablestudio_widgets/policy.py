"""Spending policy: what may be signed, checked against the exact 402 amount before signing.

Safe defaults: real money (Base, Solana) only to the service's own host and only over https,
testnet terms (Base Sepolia, Solana Devnet) only to loopback (the sandbox), each network's own
USDC only (as (network, asset) pairs), a per-request cap, and explicit consent above $1.00.
Consent is an amount: a confirmation is a ceiling.
"""

from __future__ import annotations

import functools
import ipaddress
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .errors import BudgetExceeded, ConfirmationRequired, PolicyViolation, fmt_usd
from .networks import NETWORK_NAMES, NETWORKS, OTHER_ASSETS, SVM, TESTNETS, family, same_address
from .x402 import Requirement

SERVICE_HOSTS = frozenset({"stablestudio.dev"})
DEFAULT_MAX_USD_PER_REQUEST = 5.0
#: How far above the top of a route's catalog price range a first 402 may go (prices drift a little).
DEFAULT_CATALOG_MARGIN = 0.10


@functools.lru_cache(maxsize=256)
def is_loopback(url: str) -> bool:
    """(Asked of the same few URLs on every request and answer: remembered.)"""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Consent:
    """What the user agreed to for one payment: at most ``atomic`` units (None: nothing was agreed,
    so the confirmation threshold decides), to ``pay_to`` (the payee of the terms it was quoted on)."""

    atomic: int | None = None
    pay_to: str | None = None

    @classmethod
    def given(cls, confirm: bool, confirm_usd: float | None, quoted: int, pay_to: str) -> Consent:
        """``confirm_usd`` is a ceiling; ``confirm=True`` consents to exactly what was quoted."""
        if confirm_usd is not None:
            return cls(round(confirm_usd * 1e6), pay_to)
        return cls(quoted if confirm else None, pay_to)

    def check(self, price: int, threshold_usd: float | None, what: str = "This request",
              how: str = "Call again with confirm=True (or confirm_usd=…, the most you agree to pay)") -> None:
        """Raise :class:`ConfirmationRequired` unless ``price`` is within this consent, or, with
        none given, within the confirmation threshold."""
        usd_ = price / 1e6
        if self.atomic is not None and price > self.atomic:
            raise ConfirmationRequired(
                f"{what} now costs {fmt_usd(usd_)}, more than the {fmt_usd(self.atomic / 1e6)} you agreed to. "
                "Nothing was signed for it. Confirm the new price to pay it.",
                price_usd=usd_, threshold_usd=threshold_usd, consented_usd=self.atomic / 1e6)
        if self.atomic is None and threshold_usd is not None and usd_ > threshold_usd + 1e-12:
            raise ConfirmationRequired(
                f"{what} costs {fmt_usd(usd_)}, above the confirmation threshold of {fmt_usd(threshold_usd)}. "
                f"Nothing was signed for it. {how} to pay it.", price_usd=usd_, threshold_usd=threshold_usd)

    def less(self, rest: int) -> Consent:
        """The consent left for one payment of a call whose other payments were quoted at ``rest``."""
        return Consent(None if self.atomic is None else self.atomic - rest, self.pay_to)


@dataclass
class SpendingPolicy:
    """Limits in USD; ``None`` means no limit of that kind.

    ``budget_usd`` caps this client's session; ``ledger_budget_usd`` caps what the ledger
    records over ``ledger_budget_period`` ("day" or "month", across kernels).
    ``allowed_networks`` narrows the default host rules; ``allowed_assets`` replaces the known
    USDC contracts with your own (network, asset) pairs.
    """

    max_usd_per_request: float | None = DEFAULT_MAX_USD_PER_REQUEST
    budget_usd: float | None = None
    ledger_budget_usd: float | None = None
    ledger_budget_period: str = "day"
    confirm_above_usd: float | None = 1.0
    allowed_networks: frozenset[str] | None = None
    allowed_assets: frozenset[tuple[str, str]] | None = None
    allowed_hosts: frozenset[str] = field(default_factory=lambda: SERVICE_HOSTS)
    catalog_margin: float = DEFAULT_CATALOG_MARGIN

    def refuse_terms(self, req: Requirement, url: str) -> str | None:
        """Why the network/asset/host of ``req`` is not allowed for ``url`` (None if allowed)."""
        parts = urlsplit(url)
        host, loopback = parts.hostname or "", is_loopback(url)
        if self.allowed_networks is not None and req.network not in self.allowed_networks:
            return f"network {req.network} is not in allowed_networks {sorted(self.allowed_networks)}"
        if req.network in TESTNETS:
            if not loopback:
                return (f"testnet terms ({NETWORK_NAMES[req.network]}) are only accepted from a local sandbox, "
                        f"not from {host}")
        elif host not in self.allowed_hosts:
            return (f"real-money payments go only to {', '.join(sorted(self.allowed_hosts))}; {host} is not allowed "
                    "(add it to SpendingPolicy.allowed_hosts if you trust it)")
        elif parts.scheme != "https" and not loopback:
            return f"real-money payments go only over https, and {parts.scheme}://{host} is not"
        pairs = self.allowed_assets or frozenset((n.id, a) for n in NETWORKS.values()
                                                 for a in (n.usdc, *OTHER_ASSETS.get(n.id, ())))
        if not any(n == req.network and same_address(n, req.asset, a) for n, a in pairs):
            kind = "mint" if family(req.network) == SVM else "contract"
            return (f"asset {req.asset} is not a known USDC {kind} on {NETWORK_NAMES.get(req.network, req.network)} "
                    "(see SpendingPolicy.allowed_assets)")
        return None

    def refuse_price(self, req: Requirement, what: str, top: int) -> str | None:
        """Why ``req`` asks too much for ``what``, whose route table price is at most ``top`` (0: unknown)."""
        if top <= 0 or req.amount <= top * (1 + self.catalog_margin):
            return None
        return (f"{fmt_usd(req.amount_usd)} is more than the route table's top price for {what} "
                f"({fmt_usd(top / 1e6)}, +{self.catalog_margin:.0%} margin); if the service really raised its price, "
                "update the package or raise SpendingPolicy.catalog_margin")


class Spending:
    """Session totals with reservations, so concurrent requests cannot overshoot a budget.

    An authorization that left this machine is bearer money until it expires: a refused one is
    *held* (it counts against the budget) until its ``validBefore``; only one that never left is
    released.
    """

    def __init__(self, policy: SpendingPolicy):
        self.policy = policy
        self.spent = 0  # atomic units settled (or possibly settled) this session
        self.reserved = 0
        self._held: list[tuple[int, float]] = []  # (amount, valid_before) of refused, still valid authorizations
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        """Refused authorizations that are still valid (someone holding them could settle them)."""
        now = time.time()
        with self._lock:
            self._held = [(a, t) for a, t in self._held if t > now]
            return sum(a for a, _ in self._held)

    def reserve(self, amount: int, *, ledger_spent: int, consent: Consent, extra: int = 0) -> None:
        """Check ``amount`` (plus ``extra`` about to be spent with it) against every limit and
        the user's consent, and hold it; raises before anything is signed."""
        p = self.policy
        price = (amount + extra) / 1e6
        how = "Nothing was signed for it."
        if p.max_usd_per_request is not None and price > p.max_usd_per_request + 1e-12:
            raise BudgetExceeded(
                f"This request costs {fmt_usd(price)}, above the per-request cap of "
                f"{fmt_usd(p.max_usd_per_request)}. {how} Raise it with max_usd_per_request=….",
                price_usd=price, limit_usd=p.max_usd_per_request, limit="max_usd_per_request")
        held = self.held
        with self._lock:
            committed = self.spent + self.reserved + held
            if p.budget_usd is not None:
                after = (committed + amount + extra) / 1e6
                if after > p.budget_usd + 1e-12:
                    left = max(p.budget_usd - committed / 1e6, 0)
                    raise BudgetExceeded(
                        f"This request costs {fmt_usd(price)} but only {fmt_usd(left)} of the session budget "
                        f"of {fmt_usd(p.budget_usd)} is left. {how} Raise it with budget_usd=….",
                        price_usd=price, limit_usd=p.budget_usd, limit="budget_usd")
            if p.ledger_budget_usd is not None:
                after = (ledger_spent + self.reserved + amount + extra) / 1e6
                if after > p.ledger_budget_usd + 1e-12:
                    raise BudgetExceeded(
                        f"This request costs {fmt_usd(price)}; with {fmt_usd(ledger_spent / 1e6)} already spent "
                        f"this {p.ledger_budget_period} it would pass the ledger budget of "
                        f"{fmt_usd(p.ledger_budget_usd)}. {how} Raise ledger_budget_usd or wait.",
                        price_usd=price, limit_usd=p.ledger_budget_usd, limit="ledger_budget_usd")
            consent.check(amount + extra, p.confirm_above_usd)
            self.reserved += amount

    def settle(self, amount: int) -> None:
        """The reserved amount was (or may have been) paid."""
        with self._lock:
            self.reserved -= amount
            self.spent += amount

    def hold(self, amount: int, valid_before: float) -> None:
        """The reserved amount was refused, but its authorization left and stays valid until ``valid_before``."""
        with self._lock:
            self.reserved -= amount
            self._held.append((amount, valid_before))

    def release(self, amount: int) -> None:
        """The reserved amount provably never left this machine."""
        with self._lock:
            self.reserved -= amount

    @property
    def remaining_usd(self) -> float | None:
        if self.policy.budget_usd is None:
            return None
        return max(self.policy.budget_usd - (self.spent + self.reserved + self.held) / 1e6, 0.0)


def check_terms(policy: SpendingPolicy, req: Requirement, url: str) -> None:
    why = policy.refuse_terms(req, url)
    if why:
        raise PolicyViolation(f"Refusing to pay {req.describe()}: {why}. Nothing was signed.")
