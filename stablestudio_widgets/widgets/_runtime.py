"""How widgets reach the client: one event loop, handed work from any thread.

Front-end events may arrive on a kernel subshell thread (JupyterLab 4.4+ with ipykernel 7), and
the client's httpx connections belong to the loop they were made on. So every widget action is a
coroutine scheduled onto the client's own loop — the private loop of the sync ``StableStudio``,
or the loop an ``AsyncStableStudio`` was created on — and tasks are kept until they finish.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import pathlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from ..client import AsyncStableStudio
from ..errors import StableStudioError, WalletError
from ..jobs import AsyncJob
from ..sync import Job, StableStudio
from ..wallet import Wallet

STATIC = pathlib.Path(__file__).parent.parent / "static"
_default: StableStudio | None = None
_default_lock = threading.Lock()
log = logging.getLogger("stablestudio_widgets.widgets")


def default_client() -> StableStudio:
    """The session's shared client: the real service when a wallet is configured, else the sandbox."""
    global _default
    with _default_lock:
        if _default is None:
            try:
                Wallet.from_env()
            except WalletError:
                _default = StableStudio.sandbox()
            else:
                _default = StableStudio()
        return _default


class Bridge:
    """Schedules coroutines on the client's loop and keeps strong references to them."""

    def __init__(self, aio: AsyncStableStudio, loop: asyncio.AbstractEventLoop):
        self.aio, self.loop = aio, loop
        self._pending: set[concurrent.futures.Future] = set()

    @classmethod
    def for_client(cls, client: StableStudio | AsyncStableStudio | None) -> Bridge:
        client = client if client is not None else default_client()
        if isinstance(client, StableStudio):
            return cls(client.aio, client.loop)
        return cls(client, _current_loop())

    @classmethod
    def for_job(cls, job: Any) -> Bridge:
        """A sync ``Job`` carries its client's loop; an ``AsyncJob`` lives on the current one."""
        if isinstance(job, Job):
            return cls(job.aio.host.client, job.loop)
        return cls(job.host.client, _current_loop())

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future:
        """Run ``coro`` on the client's loop from any thread; the future holds its outcome."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)
        return fut

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def cancel_all(self) -> None:
        for f in list(self._pending):
            f.cancel()
        self._pending.clear()


def describe(exc: BaseException) -> str:
    """An error in words for the front end: ours say everything; anything else gets its type too."""
    return str(exc) if isinstance(exc, StableStudioError) else f"{type(exc).__name__}: {exc}"


def report(exc: BaseException, doing: str) -> str:
    """``describe(exc)``; an error nobody expected (not one of ours) is also logged, with its traceback."""
    if not isinstance(exc, StableStudioError):
        log.error("%s failed: %s", doing, describe(exc), exc_info=exc)
    return describe(exc)


def as_async(job: Any) -> AsyncJob:
    """The async job behind a sync ``Job`` (or the job itself)."""
    return job.aio if isinstance(job, Job) else job


def _current_loop() -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.get_event_loop_policy().get_event_loop()


def esm(name: str) -> pathlib.Path:
    return STATIC / f"{name}.js"


def css(name: str) -> pathlib.Path | str:
    p = STATIC / f"{name}.css"
    return p if p.exists() else ""
