"""Jupyter widgets and an async client for StableStudio's pay-per-generation image and video API.

Every generation is paid per request with an x402 v2 USDC micropayment signed by your wallet;
jobs are polled with a Sign-In-With-X signature. With no wallet, everything runs on a local
sandbox server that verifies payments for real on testnet terms.

The widgets (Studio, Gallery, JobCard, Compare) load on first use, so the client alone imports
without the widget stack.
"""

from typing import Any

from .catalog import Route, UnknownParameterWarning
from .catalog.live import RouteTableWarning
from .client import AsyncStableStudio
from .errors import (
    AuthError,
    BudgetExceeded,
    ConfirmationRequired,
    InvalidParams,
    JobFailed,
    JobInterrupted,
    JobNotFound,
    JobTimeout,
    PaymentExpired,
    PaymentRejected,
    PaymentRequiredError,
    PolicyViolation,
    ServiceError,
    StableStudioError,
    WalletError,
)
from .jobs import AsyncJob
from .ledger import Ledger
from .policy import SpendingPolicy
from .quotes import Quote
from .results import Result
from .sync import Job, StableStudio
from .wallet import Wallet

_WIDGETS = ("Compare", "Gallery", "JobCard", "Studio")


def __getattr__(name: str) -> Any:
    if name in _WIDGETS:
        from . import widgets

        return getattr(widgets, name)
    raise AttributeError(f"module 'stablestudio_widgets' has no attribute {name!r}")


def _live_card(job: Job) -> None:
    """A bare ``job`` in a notebook shows a live card: the widgets load on first display."""
    from .widgets.jobcard import show_card

    show_card(job)


if Job.display_hook is None:
    Job.display_hook = _live_card

__all__ = [
    "AsyncJob", "AsyncStableStudio", "Compare", "Gallery", "JobCard", "Studio", "AuthError", "BudgetExceeded",
    "ConfirmationRequired", "InvalidParams", "Job", "JobFailed", "JobInterrupted", "JobNotFound", "JobTimeout",
    "Ledger", "PaymentExpired", "PaymentRejected", "PaymentRequiredError",
    "PolicyViolation", "Quote", "Result", "Route", "RouteTableWarning", "ServiceError", "SpendingPolicy",
    "StableStudio", "StableStudioError", "UnknownParameterWarning", "Wallet", "WalletError",
]
