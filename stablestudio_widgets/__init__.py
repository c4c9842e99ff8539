"""Jupyter widgets and an async client for StableStudio's pay-per-generation image and video API.

Every generation is paid per request with an x402 v2 USDC micropayment signed by your wallet;
jobs are polled with a Sign-In-With-X signature. With no wallet, everything runs on a local
sandbox server that verifies payments for real on testnet terms.
"""

from .catalog import Route
from .client import AsyncStableStudio
from .errors import (
    AuthError,
    BudgetExceeded,
    ConfirmationRequired,
    InvalidParams,
    JobFailed,
    JobNotFound,
    JobTimeout,
    PaymentRejected,
    PaymentRequiredError,
    PolicyViolation,
    ServiceError,
    StableStudioError,
    WalletError,
)
from .jobs import AsyncJob
from .ledger import Ledger
from .payments import Quote
from .policy import SpendingPolicy
from .results import Result
from .sync import Job, StableStudio
from .wallet import Wallet
from .widgets import Compare, Gallery, JobCard, Studio

__all__ = [
    "AsyncJob", "AsyncStableStudio", "Compare", "Gallery", "JobCard", "Studio", "AuthError", "BudgetExceeded",
    "ConfirmationRequired", "InvalidParams",
    "Job", "JobFailed", "JobNotFound", "JobTimeout", "Ledger", "PaymentRejected", "PaymentRequiredError",
    "PolicyViolation", "Quote", "Result", "Route", "ServiceError", "SpendingPolicy", "StableStudio",
    "StableStudioError", "Wallet", "WalletError",
]
