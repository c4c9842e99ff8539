"""Job and payment statuses: one vocabulary, read from ``vocabulary.json``.

The front end bundles the same file, so a status is spelled once for Python and JavaScript. The
service may send statuses we do not know: a job keeps them verbatim and counts them as running.
"""

from __future__ import annotations

import json
from enum import Enum
from importlib import resources

VOCABULARY = json.loads(resources.files(__package__).joinpath("vocabulary.json").read_text("utf-8"))
_JOB = VOCABULARY["job_status"]
_PAYMENT = VOCABULARY["payment_status"]

JobStatus = Enum("JobStatus", {name.upper(): name for name in _JOB}, type=str)
JobStatus.__doc__ = "Where a job stands; members compare equal to their wire strings."
JobStatus.__str__ = str.__str__  # type: ignore[method-assign]  # f"{status}" is the wire string

PaymentStatus = Enum("PaymentStatus", {name.upper(): name for name in _PAYMENT}, type=str)
PaymentStatus.__doc__ = "Where a signed payment stands in the ledger."
PaymentStatus.__str__ = str.__str__  # type: ignore[method-assign]

#: Statuses after which nothing more happens to a job (``resume()`` leaves them alone).
FINAL = frozenset(s for s, d in _JOB.items() if d["final"])
#: Statuses the service itself reports while it works on a job (StableStudio now says "loading",
#: with a ``progress`` percentage, where the spec said "processing").
RUNNING_ON_SERVICE = frozenset(s for s, d in _JOB.items() if d["kind"] == "running" and not d["local"])
#: Stages of our own request before the service knows the job.
LOCAL = frozenset(s for s, d in _JOB.items() if d["local"])
#: Payments that may still settle or have settled without our knowing what they bought.
OPEN_PAYMENTS = tuple(s for s, d in _PAYMENT.items() if d["open"])
#: Payments whose amount counts as spent (settled, or possibly settled).
COUNTED_PAYMENTS = tuple(s for s, d in _PAYMENT.items() if d["counts"] == "always")
#: Payments that count until their authorization expires (refused, but still valid: bearer money).
COUNTED_WHILE_VALID = tuple(s for s, d in _PAYMENT.items() if d["counts"] == "while_valid")
#: Payments whose signed payload can no longer be needed to settle: the ledger keeps only its hash.
SPENT_PAYLOADS = tuple(s for s, d in _PAYMENT.items() if not d["open"])


def kind(status: str) -> str:
    """running | waiting | complete | failed | cancelled; unknown service statuses are running."""
    return _JOB.get(status, {"kind": "running"})["kind"]


def is_done(status: str) -> bool:
    """Finished for good with a result or a failure (a timeout or a 404 verdict is not)."""
    return status in ("complete", "failed")
