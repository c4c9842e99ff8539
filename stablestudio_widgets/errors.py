"""Typed errors. Every message says what happened, what it cost, and what to do.

All errors derive from :class:`StableStudioError`, so one ``except`` catches everything the
package raises on purpose. Errors carry structured fields (job id, amounts) so widgets can render
them without parsing text. No error ever holds key material.
"""

from __future__ import annotations

from typing import Any


class StableStudioError(Exception):
    """Base class of every error this package raises on purpose."""

    #: Money that moved for the operation that failed, in USD (0 when nothing was paid).
    paid_usd: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form for widget state and the ledger."""
        return {"type": type(self).__name__, "message": str(self)}


class InvalidParams(StableStudioError, ValueError):
    """Parameters the route table (or the service) does not allow; raised before anything is signed,
    unless ``unpaid=False`` says an authorization already left (the message then says so)."""

    def __init__(self, message: str, *, route: str | None = None, field: str | None = None,
                 allowed: list[Any] | None = None, unpaid: bool = True):
        super().__init__(message + (" Nothing was paid." if unpaid else ""))
        self.route, self.field, self.allowed = route, field, allowed

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "field": self.field, "allowed": self.allowed}


class PaymentRequiredError(StableStudioError):
    """The server asked for a payment we cannot or may not make (unsupported scheme/network,
    malformed requirements). Nothing was signed."""


class PaymentRejected(StableStudioError):
    """The server refused a payment we signed (its ``error`` is quoted)."""

    def __init__(self, message: str, *, reason: str | None = None, nonce: str | None = None,
                 paid_usd: float = 0.0):
        super().__init__(message)
        self.reason, self.nonce, self.paid_usd = reason, nonce, paid_usd


class PaymentExpired(PaymentRejected):
    """A payment whose answer was lost ran out of validity and the service shows no job for it:
    it never settled, nothing was paid; a retry is a new payment."""


class BudgetExceeded(StableStudioError):
    """The price is above a spending limit; nothing was signed."""

    def __init__(self, message: str, *, price_usd: float, limit_usd: float, limit: str):
        super().__init__(message)
        self.price_usd, self.limit_usd, self.limit = price_usd, limit_usd, limit


class PolicyViolation(StableStudioError):
    """The payment terms break the spending policy (network, asset, host, confirmation)."""


class ConfirmationRequired(PolicyViolation):
    """The price needs the user's consent: it is above the confirmation threshold with none given,
    above the amount consented to, or the payee changed since the quote. Nothing was signed for it."""

    def __init__(self, message: str, *, price_usd: float, threshold_usd: float | None,
                 consented_usd: float | None = None, pay_to: str | None = None):
        super().__init__(message)
        self.price_usd, self.threshold_usd = price_usd, threshold_usd
        self.consented_usd, self.pay_to = consented_usd, pay_to

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "price_usd": self.price_usd, "consented_usd": self.consented_usd}


class AuthError(StableStudioError):
    """Sign-In-With-X was refused, or a challenge was for a host we are not talking to."""


class WalletError(StableStudioError):
    """No usable wallet: says which sources were tried and how to set one up."""


class ServiceError(StableStudioError):
    """The service answered with an unexpected status; carries status and (trimmed) body."""

    def __init__(self, message: str, *, status: int | None = None, body: str = "",
                 paid_usd: float = 0.0, job_id: str | None = None):
        super().__init__(message)
        self.status, self.body, self.paid_usd, self.job_id = status, body[:2000], paid_usd, job_id


class JobError(StableStudioError):
    """Base for errors about one job; always carries the job id."""

    def __init__(self, message: str, *, job_id: str, paid_usd: float = 0.0):
        super().__init__(message)
        self.job_id, self.paid_usd = job_id, paid_usd

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "job_id": self.job_id}


class JobFailed(JobError):
    """The service reports the job failed."""


class JobTimeout(JobError, TimeoutError):
    """The job did not finish in time; it is still in the ledger and ``resume()`` can finish it."""


class JobNotFound(JobError):
    """The service does not know the job (after the grace window for new jobs)."""


class JobInterrupted(JobError):
    """Our work on a job stopped on an error that does not say how the job itself ended (an error
    nobody expected, a refused sign-in, an odd answer). The message says what it cost and what to
    do: a paid job stays in the ledger and is looked for or polled again, never paid again."""


def usd(atomic: int | str, decimals: int = 6) -> float:
    """Atomic units of a 6-decimal stablecoin as dollars."""
    return int(atomic) / 10**decimals


def fmt_usd(amount: float) -> str:
    """Dollars with enough digits for sub-cent prices ($0.039, $0.0090, $12.50)."""
    return f"${amount:.2f}" if amount >= 1 or round(amount, 2) == amount else f"${amount:.4f}".rstrip("0")
