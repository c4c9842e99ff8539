"""Spending policy: what may be signed, checked against the exact 402 amount before signing.

Safe defaults: real-money networks only to the service's own host, testnet terms only to
loopback (the sandbox), known USDC contracts only, and explicit consent above $1.00.
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .errors import BudgetExceeded, ConfirmationRequired, PolicyViolation, fmt_usd
from .x402 import KNOWN_ASSETS, NETWORK_NAMES, TESTNETS, Requirement

SERVICE_HOSTS = frozenset({"stablestudio.dev"})


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class SpendingPolicy:
    """Limits in USD; ``None`` means no limit of that kind.

    ``budget_usd`` caps this client's session; ``ledger_budget_usd`` caps what the ledger
    records over ``ledger_budget_period`` ("day" or "month", across kernels).
    """

    max_usd_per_request: float | None = None
    budget_usd: float | None = None
    ledger_budget_usd: float | None = None
    ledger_budget_period: str = "day"
    confirm_above_usd: float | None = 1.0
    allowed_networks: frozenset[str] | None = None  # None: Base for the service host, Base Sepolia for loopback
    allowed_assets: frozenset[str] | None = None  # None: the known USDC contracts
    allowed_hosts: frozenset[str] = field(default_factory=lambda: SERVICE_HOSTS)

    def refuse_terms(self, req: Requirement, url: str) -> str | None:
        """Why the network/asset/host of ``req`` is not allowed for ``url`` (None if allowed)."""
        host = urlsplit(url).hostname or ""
        loopback = is_loopback(url)
        if self.allowed_networks is not None:
            if req.network not in self.allowed_networks:
                return f"network {req.network} is not in allowed_networks {sorted(self.allowed_networks)}"
        elif req.network in TESTNETS and not loopback:
            return (f"testnet terms ({NETWORK_NAMES[req.network]}) are only accepted from a local sandbox, "
                    f"not from {host}")
        elif req.network not in TESTNETS and req.network in NETWORK_NAMES and host not in self.allowed_hosts:
            return (f"real-money payments go only to {', '.join(sorted(self.allowed_hosts))}; {host} is not allowed "
                    "(add it to SpendingPolicy.allowed_hosts if you trust it)")
        elif req.network not in NETWORK_NAMES:
            return f"network {req.network} is not allowed (add it to SpendingPolicy.allowed_networks)"
        assets = self.allowed_assets or frozenset(a for (_, a) in KNOWN_ASSETS)
        if req.asset.lower() not in {a.lower() for a in assets}:
            return f"asset {req.asset} is not a known USDC contract (see SpendingPolicy.allowed_assets)"
        return None


class Spending:
    """Session totals with reservations, so concurrent requests cannot overshoot a budget."""

    def __init__(self, policy: SpendingPolicy):
        self.policy = policy
        self.spent = 0  # atomic units settled (or possibly settled) this session
        self.reserved = 0
        self._lock = threading.Lock()

    def reserve(self, amount: int, *, ledger_spent: int, confirm: bool, extra: int = 0) -> None:
        """Check ``amount`` (plus ``extra`` about to be spent with it) against every limit and
        hold it; raises before anything is signed."""
        p = self.policy
        price = (amount + extra) / 1e6
        how = "Nothing was signed."
        if p.max_usd_per_request is not None and price > p.max_usd_per_request + 1e-12:
            raise BudgetExceeded(
                f"This request costs {fmt_usd(price)}, above the per-request cap of "
                f"{fmt_usd(p.max_usd_per_request)}. {how} Raise it with max_usd_per_request=….",
                price_usd=price, limit_usd=p.max_usd_per_request, limit="max_usd_per_request")
        with self._lock:
            if p.budget_usd is not None:
                after = (self.spent + self.reserved + amount + extra) / 1e6
                if after > p.budget_usd + 1e-12:
                    left = max(p.budget_usd - (self.spent + self.reserved) / 1e6, 0)
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
            if p.confirm_above_usd is not None and price > p.confirm_above_usd + 1e-12 and not confirm:
                raise ConfirmationRequired(
                    f"This request costs {fmt_usd(price)}, above the confirmation threshold of "
                    f"{fmt_usd(p.confirm_above_usd)}. {how} Call again with confirm=True to pay it.",
                    price_usd=price, threshold_usd=p.confirm_above_usd)
            self.reserved += amount

    def settle(self, amount: int) -> None:
        """The reserved amount was (or may have been) paid."""
        with self._lock:
            self.reserved -= amount
            self.spent += amount

    def release(self, amount: int) -> None:
        """The reserved amount was definitely not paid."""
        with self._lock:
            self.reserved -= amount

    @property
    def remaining_usd(self) -> float | None:
        if self.policy.budget_usd is None:
            return None
        return max(self.policy.budget_usd - (self.spent + self.reserved) / 1e6, 0.0)


def check_terms(policy: SpendingPolicy, req: Requirement, url: str) -> None:
    why = policy.refuse_terms(req, url)
    if why:
        raise PolicyViolation(f"Refusing to pay {req.describe()}: {why}. Nothing was signed.")
