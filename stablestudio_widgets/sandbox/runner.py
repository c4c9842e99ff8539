"""``Sandbox``: the sandbox server in a background thread, for notebooks, tests and the CLI.

``start()`` binds 127.0.0.1 itself (so ``port=0`` gives a free port known before serving) and
returns once uvicorn has finished its startup; ``stop()`` asks uvicorn to exit and joins the
thread. The sandbox only ever listens on loopback: it holds no real money, but its admin API
can change its behaviour.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import uvicorn
from eth_account import Account
from eth_utils import keccak

from ..catalog import Catalog
from .faults import Faults
from .jobs import Job, Timing
from .mpp import NETWORK as TEMPO_TESTNET
from .mpp import Mpp
from .router import Mode
from .server import build_app
from .state import State, network_ids

HOST = "127.0.0.1"
BLOB_LIMIT_BYTES = 20 * 1024 * 1024
#: A fixed, publicly derivable merchant: stable across restarts (clients may cache requirements),
#: worthless by construction (a testnet address nobody should ever fund).
DEFAULT_MERCHANT = Account.from_key(keccak(text="stablestudio sandbox merchant (testnet, worthless)")).address


class _Server(uvicorn.Server):
    """uvicorn, reporting the end of its startup to the thread that started it."""

    def __init__(self, config: uvicorn.Config, ready: threading.Event):
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.ready.set()


class Sandbox:
    """A local StableStudio-compatible server that really verifies payments and sign-ins.

    By default it answers like the service's real server stack (``router=True``: single-use
    sign-ins, empty 402 bodies, ``accepted`` deep-compared …); ``router=False`` answers as the
    written spec does. ``siwx_reuse``, ``body_402``, ``extra_fields``, ``pricing_format``,
    ``replay`` and ``omit_extra`` switch single behaviours (see :mod:`.router`); ``catalog`` is the
    route table it serves (``set_catalog`` changes it while running).

    >>> with Sandbox(time_scale=0.01) as sb:   # doctest: +SKIP
    ...     sb.url, sb.merchant, sb.settlements, sb.jobs
    """

    def __init__(self, *, time_scale: float = 0.1, faults: Faults | None = None, router: bool = True,
                 siwx_reuse: str | None = None, body_402: str | None = None, extra_fields: bool = False,
                 pricing_format: str = "price", replay: str = "refuse", omit_extra: bool = False,
                 catalog: Catalog | dict[str, Any] | None = None, port: int = 0, merchant: str | None = None,
                 blob_limit_bytes: int = BLOB_LIMIT_BYTES, log_level: str = "warning",
                 access_log: bool = False, networks: str | list[str] | None = None,
                 solana_blockhash_ttl_s: float | None = None, solana_blockhash_hint: bool = True,
                 tempo_fee_payer: bool = False, mpp_strict: bool = True, mpp_settle: str = "before",
                 mpp_signin_only: bool = False, timing: Timing | None = None):
        """``networks``: what the sandbox takes, in the order of its 402's ``accepts``:
        ``"base-sepolia"`` (the default), ``"solana-devnet"`` (needs the ``solana`` extra), and/or
        ``"tempo-testnet"`` (MPP: a ``WWW-Authenticate: Payment`` challenge beside the x402 header).
        ``solana_blockhash_hint=False`` leaves ``recentBlockhash`` out of ``extra`` (a server built
        without an RPC URL), so clients ask :attr:`solana_rpc_url`. ``tempo_fee_payer``: the sandbox
        sponsors Tempo fees; ``mpp_strict=False`` checks only what mppx checks; ``mpp_settle="after"``
        settles after the handler, as the router does (a failed payment is a 500 with the job created);
        ``mpp_signin_only``: job routes offer only the MPP $0 proof, no SIWX challenge. ``timing``: how
        long jobs take (durations spread around each route's typical time, seeded)."""
        if time_scale < 0:
            raise ValueError("time_scale must not be negative")
        mode = Mode.make(router=router, siwx_reuse=siwx_reuse, body_402=body_402, extra_fields=extra_fields,
                         pricing_format=pricing_format, replay=replay, omit_extra=omit_extra)
        ids = network_ids(networks)
        merchant = merchant or DEFAULT_MERCHANT
        tempo = Mpp(recipient=merchant, fee_payer=tempo_fee_payer, strict=mpp_strict, settle=mpp_settle,
                    signin_only=mpp_signin_only) if TEMPO_TESTNET in ids else None
        self.state = State(time_scale=time_scale, faults=faults or Faults(), mode=mode,
                           merchant=merchant, blob_limit_bytes=blob_limit_bytes,
                           catalog=_catalog(catalog), networks=ids, timing=timing,
                           solana=_solana(solana_blockhash_ttl_s, solana_blockhash_hint) if any(
                               n.startswith("solana:") for n in ids) else None, mpp=tempo)
        self.app = build_app(self.state)
        self.port = port
        self._log_level, self._access_log = log_level, access_log
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the sandbox is not running; call start() or use it as a context manager")
        return f"http://{HOST}:{self.port}"

    @property
    def tempo_rpc_url(self) -> str | None:
        """The Tempo testnet JSON-RPC stub (``eth_gasPrice``, ``eth_chainId``), if the sandbox takes Tempo."""
        return self.url + "/_sandbox/tempo-rpc" if self.state.mpp is not None else None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 15.0) -> Sandbox:
        """Serve in a daemon thread; return once the socket is listening."""
        if self._server is not None:
            return self
        # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted connections when the
        # listening socket says so; without it Nagle + delayed ACK add ~40 ms to every response.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level=self._log_level, access_log=self._access_log,
                                lifespan="on", loop="asyncio", http="h11", ws="none",
                                timeout_graceful_shutdown=3)
        ready = threading.Event()
        server = _Server(config, ready)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                                  name=f"stablestudio-sandbox-{self.port}", daemon=True)
        self._server, self._thread, self._sock = server, thread, sock
        thread.start()
        if not ready.wait(timeout) or not server.started:
            self.stop()
            raise RuntimeError(f"the sandbox did not start on {HOST}:{self.port}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down cleanly and join the server thread (idempotent)."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.should_exit = True
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._sock.close()
        self._server = self._thread = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __del__(self) -> None:  # a forgotten sandbox should not keep its port
        try:
            self.stop(timeout=1.0)
        except Exception:
            pass

    # -- in-process view -----------------------------------------------------------------------

    @property
    def merchant(self) -> str:
        """The ``payTo`` address of Base Sepolia payments."""
        return self.state.merchant

    @property
    def networks(self) -> tuple[str, ...]:
        """The CAIP-2 ids of the networks this sandbox takes, in its 402's order."""
        return self.state.networks

    @property
    def takes_solana(self) -> bool:
        return self.state.solana is not None

    @property
    def solana_merchant(self) -> str | None:
        """The ``payTo`` address of Solana payments (its USDC account is what they credit)."""
        return self.state.solana.merchant if self.state.solana else None

    @property
    def solana_fee_payer(self) -> str | None:
        """The facilitator key in ``extra.feePayer`` (it signs the fee payer's slot when settling)."""
        return str(self.state.solana.fee_payer.pubkey()) if self.state.solana else None

    @property
    def solana_rpc_url(self) -> str | None:
        """A JSON-RPC endpoint answering ``getLatestBlockhash`` and ``getAccountInfo`` (the mint)."""
        return f"{self.url}/_sandbox/solana-rpc" if self.state.solana else None

    @property
    def faults(self) -> Faults:
        return self.state.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self.state.set_faults(faults)

    def set_faults(self, **changes: Any) -> Faults:
        """Change some fault settings (the rest stay); the dice restart from the seed."""
        self.state.set_faults(self.state.faults.replace(**changes))
        return self.state.faults

    @property
    def mode(self) -> Mode:
        return self.state.mode

    @property
    def catalog(self) -> Catalog:
        return self.state.catalog

    def set_catalog(self, catalog: Catalog | dict[str, Any]) -> None:
        """Serve another route table (``routes.json`` form): its ``/openapi.json`` changes with it."""
        self.state.set_catalog(_catalog(catalog))

    @property
    def settlements(self) -> list[dict[str, Any]]:
        """The settlement ledger, oldest first (copies)."""
        with self.state.lock:
            return [dict(s) for s in self.state.settlements]

    @property
    def jobs(self) -> dict[str, Job]:
        """Server-side job records by id (``job.status()``, ``job.payer``, ``job.view()``...)."""
        with self.state.lock:
            return dict(self.state.jobs)

    @property
    def uploads(self) -> dict[str, Any]:
        with self.state.lock:
            return dict(self.state.uploads)

    def __repr__(self) -> str:
        where = self.url if self._server else "stopped"
        mode = "router" if self.mode.router else "spec"
        return (f"<Sandbox {where} {mode} mode {'+'.join(self.networks)} merchant={self.merchant} "
                f"time_scale={self.state.time_scale}>")


def _catalog(catalog: Catalog | dict[str, Any] | None) -> Catalog | None:
    return Catalog(catalog) if isinstance(catalog, dict) else catalog


def _solana(ttl_s: float | None, hint: bool) -> Any:
    """The sandbox's Solana (``solders`` is imported only for a sandbox that takes Solana)."""
    try:
        import solders  # noqa: F401
    except ImportError:
        raise ImportError("A sandbox that takes Solana needs the solana extra: "
                          "pip install 'stablestudio-widgets[solana]'") from None
    from .solana import BLOCKHASH_TTL_S, Chain

    return Chain(blockhash_ttl_s=ttl_s or BLOCKHASH_TTL_S, hint=hint)
