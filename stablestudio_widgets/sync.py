"""The sync facade: ``StableStudio`` and ``Job`` run the async client on a private event loop on a
background thread, so they work inside a notebook's running loop without patching it
(nest-asyncio is archived upstream).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar, TypeVar

from .catalog import Catalog, Route
from .client import AsyncStableStudio
from .jobs import AsyncJob
from .quotes import Quote
from .results import Result

T = TypeVar("T")


class LoopThread:
    """A private event loop on a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="stablestudio-loop", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and self.loop.is_running()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if not self.running:
            coro.close()
            raise RuntimeError("This StableStudio client is closed; make a new one.")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("StableStudio (sync) was called from its own event loop; use AsyncStableStudio.")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


class Job:
    """The sync twin of :class:`AsyncJob`; a bare ``job`` in a notebook cell shows a live card."""

    #: How a job shows itself in a notebook; the widgets package registers a live card here.
    display_hook: ClassVar[Callable[[Job], None] | None] = None

    def __init__(self, inner: AsyncJob, runner: LoopThread):
        self._inner, self._runner = inner, runner

    @property
    def aio(self) -> AsyncJob:
        """The async job behind this one (lives on the client's loop)."""
        return self._inner

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._runner.loop

    def wait(self, timeout: float | None = None) -> Result:
        return self._runner.run(self._inner.wait(timeout))

    def retry(self, *, confirm: bool = False, confirm_usd: float | None = None) -> Job:
        """Pay again for the same route and parameters (a new payment, at your request)."""
        return Job(self._runner.run(self._inner.retry(confirm=confirm, confirm_usd=confirm_usd)), self._runner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return repr(self._inner)

    def _ipython_display_(self) -> None:
        if Job.display_hook is not None:
            Job.display_hook(self)
        else:
            from IPython.display import display

            display({"text/plain": repr(self)}, raw=True)


class StableStudio:
    """The sync client: the same methods as :class:`AsyncStableStudio`, blocking."""

    def __init__(self, *args: Any, **kwargs: Any):
        self._start(lambda: AsyncStableStudio(*args, **kwargs))

    @classmethod
    def sandbox(cls, **kwargs: Any) -> StableStudio:
        """A client on a fresh in-process sandbox with a throwaway wallet: no money, no network."""
        self = cls.__new__(cls)
        self._start(lambda: AsyncStableStudio.sandbox(**kwargs))
        return self

    def _start(self, make: Callable[[], AsyncStableStudio]) -> None:
        self._runner = LoopThread()

        async def build() -> AsyncStableStudio:
            return make()  # on the private loop: httpx connections belong to it
        try:
            self.aio = self._runner.run(build())
        except BaseException:
            self._runner.stop()
            raise
        self.aio.tracker.downloads.loop = self._runner.loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The private loop the async client runs on (widgets schedule their work here)."""
        return self._runner.loop

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    def _wrap(self, job: AsyncJob | Quote) -> Job | Quote:
        return job if isinstance(job, Quote) else Job(job, self._runner)

    # Attributes shared with the async client.
    base_url = property(lambda self: self.aio.base_url)
    wallet = property(lambda self: self.aio.wallet)
    ledger = property(lambda self: self.aio.ledger)
    policy = property(lambda self: self.aio.policy)
    spending = property(lambda self: self.aio.spending)
    is_sandbox = property(lambda self: self.aio.is_sandbox)
    catalog = property(lambda self: self.aio.catalog)
    stats = property(lambda self: self.aio.stats)

    def routes(self) -> list[Route]:
        return self.aio.routes()

    def refresh_routes(self) -> Catalog:
        """Read the service's route table (``/openapi.json``); see :meth:`AsyncStableStudio.refresh_routes`."""
        return self._run(self.aio.refresh_routes())

    def quote(self, route_or_model: str, /, **params: Any) -> Quote:
        return self._run(self.aio.quote(route_or_model, **params))

    def quote_many(self, calls: list[tuple[str, dict[str, Any]]]) -> list[Quote]:
        return self._run(self.aio.quote_many(calls))

    def generate(self, model: str, prompt: str | None = None, **kwargs: Any) -> Job:
        return self._wrap(self._run(self.aio.generate(model, prompt, **kwargs)))

    def edit(self, model: str, prompt: str | None = None, **kwargs: Any) -> Job:
        return self._wrap(self._run(self.aio.edit(model, prompt, **kwargs)))

    def submit(self, route_id: str, params: dict[str, Any] | None = None, **kwargs: Any) -> Job:
        return self._wrap(self._run(self.aio.submit(route_id, params, **kwargs)))

    def upload(self, source: Any, **kwargs: Any) -> str:
        return self._run(self.aio.upload(source, **kwargs))

    def job(self, job_id: str) -> Job:
        return self._wrap(self._run(self.aio.job(job_id)))

    def jobs(self, limit: int = 20, status: str | None = None) -> list[Job]:
        return [self._wrap(j) for j in self._run(self.aio.jobs(limit, status))]

    def delete_job(self, job_id: str) -> None:
        self._run(self.aio.delete_job(job_id))

    def resume(self) -> list[Job]:
        return [self._wrap(j) for j in self._run(self.aio.resume())]

    def close(self) -> None:
        """Close connections, stop an in-process sandbox and the private loop (safe to call twice)."""
        if not self._runner.running:
            return
        try:
            self._run(self.aio.aclose())
        finally:
            self._runner.stop()

    def __enter__(self) -> StableStudio:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return repr(self.aio).replace("AsyncStableStudio", "StableStudio", 1)
