"""What a call costs, read from the server's unpaid 402 before anything is signed: the chosen
offer, and every offer beside it (another network, another protocol) with the most its fees add."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import fmt_usd, usd
from .networks import name_of


@dataclass(frozen=True)
class Option:
    """One way to pay a quote: the network, the amount, the most its network fees can add (Tempo
    self-paid; 0 where the facilitator or a sponsor pays them), and why it cannot be used, if not."""

    network: str
    amount: int
    max_fee: int = 0
    refused: str | None = None

    @property
    def network_name(self) -> str:
        return name_of(self.network) or self.network

    @property
    def total_usd(self) -> float:
        return usd(self.amount + self.max_fee)

    def __repr__(self) -> str:
        fee = f" + fees up to {fmt_usd(usd(self.max_fee))}" if self.max_fee else ""
        return f"<Option {fmt_usd(usd(self.amount))}{fee} on {self.network_name}{' (refused)' if self.refused else ''}>"


@dataclass(frozen=True)
class Quote:
    """The exact price of a call, read from the server's unpaid 402 (nothing was signed)."""

    route: str
    amount: int
    network: str
    pay_to: str
    uploads: int = 0
    upload_amount: int = 0
    options: tuple[Option, ...] = ()  # every offer of the 402: the one chosen and the others

    @property
    def amount_usd(self) -> float:
        return usd(self.amount)

    @property
    def total_usd(self) -> float:
        """Generation plus the uploads a call with local images needs."""
        return usd(self.amount + self.uploads * self.upload_amount)

    @property
    def network_name(self) -> str:
        return name_of(self.network) or self.network

    def __repr__(self) -> str:
        extra = f" + {self.uploads} upload(s) = {fmt_usd(self.total_usd)}" if self.uploads else ""
        return f"<Quote {self.route} {fmt_usd(self.amount_usd)}{extra} on {self.network_name}>"
