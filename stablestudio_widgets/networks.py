"""The networks we can pay on: names, families, USDC, explorers, spelled once.

A network is a CAIP-2 id. Its *family* decides which key signs for it and how addresses
compare: EVM addresses are hex (case carries only a checksum), Solana addresses are base58
(case is part of the value, so they are never lowercased).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BASE, BASE_SEPOLIA = "eip155:8453", "eip155:84532"
SOLANA = "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"
SOLANA_DEVNET = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"
TEMPO, TEMPO_TESTNET = "eip155:4217", "eip155:42431"  # paid with MPP, not x402; the same EVM key signs

EVM, SVM = "evm", "solana"  # families
_TX_ID = re.compile(r"^(0x[0-9a-fA-F]{64}|[1-9A-HJ-NP-Za-km-z]{64,90})$")  # a hash or a base58 signature


@dataclass(frozen=True)
class Network:
    id: str
    name: str
    short: str  # what a user types: prefer_network="solana-devnet", --network base-sepolia
    usdc: str
    testnet: bool
    explorer: str  # "{tx}" is replaced by the transaction id

    @property
    def family(self) -> str:
        return family(self.id)


NETWORKS: dict[str, Network] = {n.id: n for n in (
    Network(BASE, "Base", "base", "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", False,
            "https://basescan.org/tx/{tx}"),
    Network(BASE_SEPOLIA, "Base Sepolia", "base-sepolia", "0x036CbD53842c5426634e7929541eC2318f3dCF7e", True,
            "https://sepolia.basescan.org/tx/{tx}"),
    Network(SOLANA, "Solana", "solana", "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", False,
            "https://explorer.solana.com/tx/{tx}"),
    Network(SOLANA_DEVNET, "Solana Devnet", "solana-devnet", "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU", True,
            "https://explorer.solana.com/tx/{tx}?cluster=devnet"),
    # Tempo's "USDC" is the charge currency: USDC.e on mainnet, pathUSD (the chain default) on testnet.
    Network(TEMPO, "Tempo", "tempo", "0x20C000000000000000000000b9537d11c60E8b50", False,
            "https://explore.tempo.xyz/tx/{tx}"),
    Network(TEMPO_TESTNET, "Tempo testnet", "tempo-testnet", "0x20c0000000000000000000000000000000000000", True,
            "https://explore.moderato.tempo.xyz/tx/{tx}"),
)}
#: Other stablecoins a network's charges may be in: Tempo testnet's AlphaUSD (listed by the service's discovery doc).
OTHER_ASSETS = {TEMPO_TESTNET: ("0x20c0000000000000000000000000000000000001",)}
NETWORK_NAMES = {n.id: n.name for n in NETWORKS.values()}
TESTNETS = frozenset(n.id for n in NETWORKS.values() if n.testnet)


def family(network: str) -> str | None:
    """``evm`` for ``eip155:*``, ``solana`` for ``solana:*``, None for anything else."""
    if network.startswith("eip155:"):
        return EVM
    if network.startswith("solana:"):
        return SVM
    return None


def resolve(name: str) -> str:
    """A CAIP-2 id from a CAIP-2 id or a short name (``base``, ``solana-devnet``)."""
    for n in NETWORKS.values():
        if name in (n.id, n.short):
            return n.id
    if family(name):
        return name
    raise ValueError(f"Unknown network {name!r}: use a CAIP-2 id or one of "
                     f"{', '.join(n.short for n in NETWORKS.values())}.")


def same_address(network: str, a: str, b: str) -> bool:
    """Address equality on ``network``: case-blind for EVM hex, exact for base58."""
    return a.lower() == b.lower() if family(network) == EVM else a == b


def is_usdc(network: str, asset: str) -> bool:
    """Is ``asset`` the network's own USD stablecoin (USDC; on Tempo its charge currencies)?"""
    n = NETWORKS.get(network)
    return n is not None and any(same_address(network, asset, a) for a in (n.usdc, *OTHER_ASSETS.get(network, ())))


def name_of(network: str | None) -> str | None:
    return NETWORK_NAMES.get(network or "", network)


def explorer_url(network: str | None, tx: str | None) -> str | None:
    """A link to ``tx`` on the network's explorer, only for a well-formed id (it came from the server)."""
    n = NETWORKS.get(network or "")
    return n.explorer.format(tx=tx) if n and tx and _TX_ID.match(tx) else None
