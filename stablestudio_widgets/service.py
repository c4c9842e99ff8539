"""The wire to one StableStudio host: one pooled ``httpx.AsyncClient``, free retries for requests
that cannot cost anything, and Sign-In-With-X for the job and upload-confirm routes.

Paid requests are not sent from here: :mod:`payments` owns them, because their retries must
re-send the very same signature.
"""

from __future__ import annotations

import asyncio
import functools
import random
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from . import mpp, siwx, tempo_charge
from .errors import AuthError, PaymentRequiredError, ServiceError
from .networks import BASE, BASE_SEPOLIA, EVM, SOLANA, SOLANA_DEVNET, SVM, TEMPO, TEMPO_TESTNET
from .policy import is_loopback
from .schedule import parse_retry_after
from .wallet import Wallet

DEFAULT_BASE_URL = "https://stablestudio.dev"
LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=32)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for the process: making one loads the CA bundle (tens of ms, a visible stall in
    a notebook), so every client and download shares it."""
    return httpx.create_ssl_context()


def default_transport() -> httpx.AsyncBaseTransport:
    """What a client sends through unless given ``transport=``: httpx's pool on asyncio sockets
    (imported here, as httpx imports httpcore: not at ``import stablestudio_widgets``)."""
    from .sockets import AsyncioTransport

    return AsyncioTransport(verify=tls_context(), limits=LIMITS)


class Service:
    """Pooled HTTP to ``base_url`` on behalf of ``wallet``; counts what it sends in ``stats``."""

    def __init__(self, base_url: str, wallet: Wallet, *, timeout: float = 60.0, max_retries: int = 4,
                 time_scale: float = 1.0, transport: httpx.AsyncBaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self.wallet = wallet
        self.max_retries = max_retries
        self.time_scale = time_scale
        # Testnet sign-ins only towards a loopback sandbox; the real service is on Base and Solana.
        local = is_loopback(self.base_url)
        self.chains = {EVM: [BASE_SEPOLIA, BASE] if local else [BASE],
                       SVM: [SOLANA_DEVNET, SOLANA] if local else [SOLANA]}
        self.http = httpx.AsyncClient(
            base_url=self.base_url, timeout=httpx.Timeout(timeout, connect=10.0),
            transport=transport or default_transport(), limits=LIMITS, follow_redirects=False,
            verify=tls_context())
        self.stats = {"requests": 0, "signatures": 0, "siwx_signatures": 0}
        self._targets: dict[str, httpx.URL] = {}
        # The last signed SIWX payload per URI, for the inspector; a real wallet's without its signature.
        self.siwx_signed: dict[str, dict[str, Any]] = {}
        self.sandbox = wallet.sandbox and is_loopback(self.base_url)

    async def aclose(self) -> None:
        await self.http.aclose()

    def url(self, path: str) -> str:
        return self.base_url + path

    def target(self, path: str) -> httpx.URL:
        """``path`` on the service as a parsed URL, made once per path: httpx would otherwise parse and
        join it with the base URL again on every request (a tenth of a request's CPU)."""
        url = self._targets.get(path)
        if url is None:
            if len(self._targets) >= 512:
                self._targets.clear()
            url = self._targets[path] = httpx.URL(self.base_url + path)
        return url

    @property
    def chain_ids(self) -> list[str]:
        """The sign-in chains of the wallet's main address."""
        return self.chains_of(self.wallet.address)

    def chains_of(self, address: str) -> list[str]:
        """The chains ``address`` (one of the wallet's) signs in on, in order of preference."""
        fam = next((f for f, a in self.wallet.addresses.items() if a == address), None)
        if fam is None:
            raise AuthError(f"{address} is not an address of this wallet; it cannot sign in as it.")
        return self.chains[fam]

    def backoff(self, attempt: int) -> float:
        """Exponential, jittered, and scaled with the sandbox's clock."""
        return min(0.5 * 2**attempt, 8.0) * max(self.time_scale, 0.01) * (0.8 + 0.4 * random.random())

    async def retrying(self, send: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
        """An unpaid request: transport errors, 429 and 5xx are retried freely (nothing can be charged)."""
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            try:
                self.stats["requests"] += 1
                r = await send()
            except httpx.TransportError as e:
                last = e
                await asyncio.sleep(self.backoff(attempt))
                continue
            if (r.status_code == 429 or r.status_code >= 500) and attempt < self.max_retries:
                await asyncio.sleep(parse_retry_after(r.headers.get("retry-after")) or self.backoff(attempt))
                continue
            return r
        raise ServiceError(f"The service could not be reached at {self.base_url}: {type(last).__name__}: {last}. "
                           "Nothing was paid.") from None

    async def unpaid(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.retrying(lambda: self.http.request(method, self.target(path), **kwargs))

    async def get_bounded(self, path: str, limit: int) -> tuple[int, bytes]:
        """``GET path`` reading at most ``limit`` bytes of (decoded) body: a larger answer is a
        :class:`ServiceError`, never a large allocation. Returns (status, body)."""
        async def send() -> httpx.Response:
            async with self.http.stream("GET", path, headers={"accept": "application/json"}) as r:
                if int(r.headers.get("content-length") or 0) > limit:
                    raise ServiceError(f"{path} is larger than {limit} bytes; not read.", status=r.status_code)
                chunks, size = [], 0
                async for chunk in r.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise ServiceError(f"{path} is larger than {limit} bytes; not read.", status=r.status_code)
                    chunks.append(chunk)
                keep = {k: v for k, v in r.headers.items() if k.lower() == "retry-after"}  # the body is decoded
                return httpx.Response(r.status_code, headers=keep, content=b"".join(chunks))
        r = await self.retrying(send)
        return r.status_code, r.content

    # --- Sign-In-With-X ----------------------------------------------------------------------
    async def signed_in(self, method: str, path: str, *, as_: str | None = None, **kwargs: Any) -> httpx.Response:
        """A request with a fresh SIGN-IN-WITH-X proof (servers accept each nonce once), signed
        as ``as_`` (one of the wallet's addresses: jobs belong to the address that paid; default
        the main one).

        A 402 means the proof was refused: with a challenge we sign that challenge, without one
        we sign afresh; either way we try once more, and a second refusal is an :class:`AuthError`.
        """
        chains = self.chains_of(as_ or self.wallet.address)
        params = kwargs.get("params")
        url = str(self.http.build_request(method, path, params=params).url) if params else self.url(path)
        uri = url.split("?", 1)[0]
        r = await self.retrying(lambda: self._send_signed(method, path, self._own_proof(uri, chains), kwargs))
        if r.status_code != 402:
            return r
        error, extensions = siwx.refusal(r.headers.get("payment-required"), json_or_none(r))
        info = siwx.challenge_info(extensions, url=url, chains=chains)
        proof = self._mpp_proof(r, uri, as_ or self.wallet.address) if info is None else None
        if proof is not None:  # the route offers the MPP $0 proof instead of a SIWX challenge
            r = await self.retrying(lambda: self.http.request(method, self.target(path),
                                                              headers={"Authorization": proof}, **kwargs))
        else:
            header = self._sign(uri, info) if info is not None else self._own_proof(uri, chains)
            r = await self.retrying(lambda: self._send_signed(method, path, header, kwargs))
        if r.status_code == 402:
            again, _ = siwx.refusal(r.headers.get("payment-required"), json_or_none(r))
            raise AuthError(f"Sign-in to {path} was refused twice, the second time with a fresh signature: "
                            f"{again or error or 'no reason given'}.")
        return r

    def _mpp_proof(self, r: httpx.Response, uri: str, address: str) -> str | None:
        """An ``Authorization: Payment`` $0 proof for the 402's zero-amount Tempo challenge, if it
        offers one we may sign: for this host (its realm), on Tempo (testnet only from loopback),
        as ``address`` when that is our EVM address. The proof is single-use, like a SIWX nonce."""
        if address != self.wallet.evm_address:
            return None
        allowed = {TEMPO, TEMPO_TESTNET} if is_loopback(self.base_url) else {TEMPO}
        for ch in mpp.parse_challenges(r.headers.get_list("www-authenticate"))[0]:
            try:
                charge = tempo_charge.parse_charge(ch)
            except PaymentRequiredError:
                continue
            if charge.amount == 0 and charge.network in allowed and ch.realm == siwx.host_of(uri):
                self.stats["siwx_signatures"] += 1
                return tempo_charge.sign_proof(self.wallet, charge).header
        return None

    def _send_signed(self, method: str, path: str, header: str, kwargs: dict[str, Any]) -> Awaitable[httpx.Response]:
        return self.http.request(method, self.target(path), headers={siwx.HEADER: header}, **kwargs)

    def _own_proof(self, uri: str, chains: list[str]) -> str:
        return self._sign(uri, siwx.own_info(uri, chains[0]))

    def _sign(self, uri: str, info: dict[str, Any]) -> str:
        header, payload = siwx.sign(self.wallet, info)
        self.siwx_signed[uri] = payload if self.sandbox else {**payload, "signature": "(not shown for a real wallet)"}
        self.stats["siwx_signatures"] += 1
        return header


def json_or_none(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return None
