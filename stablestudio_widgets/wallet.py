"""The only holder of the private keys: an EVM key, a Solana key, or both.

Each key lives in one private attribute of one object. It never appears in a repr, a pickle, a
copy, widget state, a log line or an exception message: errors about a key say what is wrong
with it, never what it is.
"""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path
from typing import Any

from .errors import WalletError
from .networks import EVM, NETWORKS, SVM

ENV_KEY = "STABLESTUDIO_PRIVATE_KEY"
ENV_KEYSTORE = "STABLESTUDIO_KEYSTORE"
ENV_KEYSTORE_PASSWORD = "STABLESTUDIO_KEYSTORE_PASSWORD"
ENV_SOLANA_KEY = "STABLESTUDIO_SOLANA_KEY"
SOLANA_EXTRA = "Solana needs the solana extra: pip install 'stablestudio-widgets[solana]'."


def eth() -> Any:
    """``eth_account.Account``, imported on first use: the signing stack takes longer to import than
    the rest of the package, and ``import stablestudio_widgets`` alone signs nothing."""
    from eth_account import Account

    return Account


def solders() -> Any:
    """The ``solders`` package, imported on first use so the EVM-only path never needs it."""
    try:
        import solders.compute_budget  # noqa: F401
        import solders.hash  # noqa: F401
        import solders.keypair  # noqa: F401
        import solders.pubkey  # noqa: F401
        import solders.signature  # noqa: F401
    except ImportError:
        raise WalletError(SOLANA_EXTRA) from None
    import solders as mod

    return mod


class Wallet:
    """Accounts that sign payments and sign-ins (EVM, Solana or both); ``repr`` shows addresses only."""

    __slots__ = ("__account", "__solana", "__signer", "sandbox")

    def __init__(self, account: Any = None, *, solana: Any = None, sandbox: bool = False):
        if account is None and solana is None:
            raise WalletError("A wallet needs an EVM key, a Solana key, or both.")
        self.__account = account
        self.__solana = solana
        self.sandbox = sandbox

    @classmethod
    def from_key(cls, key: str, *, sandbox: bool = False) -> Wallet:
        """From a 0x-prefixed (or bare) 32-byte hex private key."""
        try:
            account = eth().from_key(key.strip())
        except Exception:
            account = None
        del key  # error reporters that capture locals (IPython verbose, Sentry) must not find it
        if account is None:
            raise WalletError("That private key is not valid: expected 32 bytes as 64 hex digits "
                              "(0x-prefixed or bare). The key itself is not shown.")
        return cls(account, sandbox=sandbox)

    @classmethod
    def from_solana_key(cls, key: str | os.PathLike | list[int] | bytes, *, sandbox: bool = False) -> Wallet:
        """From a Solana secret key: base58 of the 64-byte secret (as wallets export it), the JSON
        array the Solana CLI writes (its text, a list of ints or bytes), or the path of such a file."""
        keypair, problem = _solana_keypair(key)
        del key  # error reporters that capture locals (IPython verbose, Sentry) must not find it
        if problem:
            raise WalletError(problem)
        return cls(solana=keypair, sandbox=sandbox)

    def with_solana_key(self, key: str | os.PathLike | list[int] | bytes) -> Wallet:
        """This wallet plus a Solana key (a wallet pays with whichever network the terms allow)."""
        keypair, problem = _solana_keypair(key)
        del key
        if problem:
            raise WalletError(problem)
        return Wallet(self.__account, solana=keypair, sandbox=self.sandbox)

    @classmethod
    def from_keystore(cls, path: str | os.PathLike, password: str | None = None) -> Wallet:
        """From an encrypted JSON keystore (password from the argument, the environment or a prompt)."""
        p = Path(path).expanduser()
        try:
            text = p.read_text()
        except OSError as e:
            raise WalletError(f"Cannot read keystore {p}: {e.__class__.__name__}.") from None
        if password is None:
            password = os.environ.get(ENV_KEYSTORE_PASSWORD)
        if password is None:
            password = getpass.getpass(f"Password for keystore {p.name}: ")
        account = _decrypt(text, password)
        # Error reporters that capture locals must find neither the password nor the ciphertext,
        # and the error is raised outside any ``except`` so no traceback of the decryption hangs on it.
        del text, password
        if account is None:
            raise WalletError(f"Cannot decrypt keystore {p}: wrong password or damaged file.")
        return cls(account)

    @classmethod
    def from_env(cls) -> Wallet:
        """From ``STABLESTUDIO_PRIVATE_KEY`` or ``STABLESTUDIO_KEYSTORE`` and/or
        ``STABLESTUDIO_SOLANA_KEY``; says how to set one up if none is set."""
        evm = None
        if os.environ.get(ENV_KEY):
            evm = cls.from_key(os.environ[ENV_KEY])
        elif os.environ.get(ENV_KEYSTORE):
            evm = cls.from_keystore(os.environ[ENV_KEYSTORE])
        if os.environ.get(ENV_SOLANA_KEY):
            return evm.with_solana_key(os.environ[ENV_SOLANA_KEY]) if evm else cls.from_solana_key(
                os.environ[ENV_SOLANA_KEY])
        if evm is not None:
            return evm
        raise WalletError(
            f"No wallet configured. Set {ENV_KEY}=0x… (a funded Base wallet), or {ENV_KEYSTORE}=path/to/"
            f"keystore.json (password in {ENV_KEYSTORE_PASSWORD} or asked), and/or {ENV_SOLANA_KEY}=<base58 "
            "secret or keypair file> (a funded Solana wallet), or pass wallet=Wallet.from_key(…). "
            "To try everything without money, use StableStudio.sandbox().")

    @classmethod
    def generate(cls, *, evm: bool = True, solana: bool = False) -> Wallet:
        """Fresh throwaway keys for the sandbox (testnet terms only; never fund them): an EVM key,
        a Solana key (``solana=True``), or both."""
        keypair = solders().keypair.Keypair() if solana else None
        return cls(eth().create() if evm else None, solana=keypair, sandbox=True)

    # --- who this wallet is ---------------------------------------------------------------------
    @property
    def address(self) -> str:
        """The main address: the EVM one when there is an EVM key, else the Solana one."""
        return self.__account.address if self.__account is not None else str(self.__solana.pubkey())

    @property
    def evm_address(self) -> str | None:
        return self.__account.address if self.__account is not None else None

    @property
    def solana_address(self) -> str | None:
        return str(self.__solana.pubkey()) if self.__solana is not None else None

    @property
    def addresses(self) -> dict[str, str]:
        """Family (``evm``, ``solana``) → address, for the keys this wallet holds."""
        out = {EVM: self.evm_address, SVM: self.solana_address}
        return {k: v for k, v in out.items() if v is not None}

    @property
    def networks(self) -> list[str]:
        """The networks this wallet may pay on: those of the key families it holds (an EVM key pays
        on Base and on Tempo, with MPP), and only testnets for a throwaway sandbox wallet."""
        return [n.id for n in NETWORKS.values() if n.family in self.addresses and (n.testnet or not self.sandbox)]

    def address_for(self, family: str | None) -> str | None:
        return self.addresses.get(family or "")

    # --- signing --------------------------------------------------------------------------------
    def _evm(self) -> Any:
        if self.__account is None:
            raise WalletError("This wallet has no EVM key: it cannot sign for an EVM network.")
        return self.__account

    def sign_typed_data(self, full_message: dict[str, Any]) -> str:
        from eth_account.messages import encode_typed_data

        return self._sign(encode_typed_data(full_message=full_message))

    def sign_encoded(self, signable: Any) -> str:
        """Sign an EIP-712 message already encoded as eth-account's ``SignableMessage`` (version 1:
        domain separator and struct hash)."""
        return self._sign(signable)

    def sign_message(self, text: str) -> str:
        from eth_account.messages import encode_defunct

        return self._sign(encode_defunct(text=text))

    def _sign(self, signable: Any) -> str:
        """EIP-191 signature (r, s, v) of a signable message, with the key object made once: eth-account
        makes it (and derives the public key) again on every call, a third of a poll's CPU; and with
        libsecp256k1 (coincurve, what eth-keys uses underneath) directly, without eth-keys' checks."""
        from eth_utils import keccak

        sig = self._secp256k1().sign_recoverable(keccak(b"\x19" + signable.version + signable.header + signable.body),
                                                 hasher=None)
        return "0x" + sig[:64].hex() + f"{sig[64] + 27:02x}"

    def _secp256k1(self) -> Any:
        """The EVM key as a libsecp256k1 (coincurve) key, made once."""
        try:
            return self.__signer
        except AttributeError:
            from coincurve import PrivateKey

            self.__signer = PrivateKey(bytes(self._evm().key))
            return self.__signer

    def sign_solana(self, message: bytes) -> bytes:
        """A raw Ed25519 signature (64 bytes) of ``message`` by the Solana key."""
        if self.__solana is None:
            raise WalletError("This wallet has no Solana key: it cannot sign for Solana. Add one with "
                              "Wallet.from_solana_key(…) or STABLESTUDIO_SOLANA_KEY.")
        return bytes(self.__solana.sign_message(message))

    def sign_hash(self, digest: bytes) -> bytes:
        """A raw secp256k1 signature ``r‖s‖v`` (v = 27/28) of a 32-byte digest, for protocols
        that define their own signing payload (a Tempo transaction). Never an EIP-191 message."""
        if len(digest) != 32:
            raise WalletError("sign_hash needs a 32-byte digest.")
        sig = self._secp256k1().sign_recoverable(bytes(digest), hasher=None)
        return sig[:64] + bytes([sig[64] + 27])

    def export_keystore(self, password: str) -> dict[str, Any]:
        """An encrypted keystore of the EVM key (to save a sandbox or new wallet safely)."""
        return eth().encrypt(self._evm().key, password)

    def __repr__(self) -> str:
        shown = ", ".join(self.addresses.values())
        return f"Wallet({shown}{', sandbox' if self.sandbox else ''})"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("A Wallet cannot be pickled or copied: the private key stays in this kernel.")

    def __copy__(self):
        raise TypeError("A Wallet cannot be copied: the private key stays in this kernel.")

    def __deepcopy__(self, memo):
        raise TypeError("A Wallet cannot be copied: the private key stays in this kernel.")


def _decrypt(text: str, password: str) -> Any:
    """The account in a keystore, or None; no exception (and so no frame with the password) escapes."""
    try:
        return eth().from_key(eth().decrypt(json.loads(text), password))
    except Exception:
        return None
def _solana_keypair(key: Any) -> tuple[Any, str | None]:
    """A solders ``Keypair`` from any accepted form, or what is wrong with it (never what it is).
    It returns rather than raises, so no frame holding the key is left on a traceback."""
    Keypair = solders().keypair.Keypair
    raw: Any = key
    if isinstance(key, os.PathLike) or (isinstance(key, str) and any(c in key for c in "/.~\\")):
        # base58 has no '/', '.', '~' or '\\': this is the path of a keypair file
        try:
            raw = Path(key).expanduser().read_text()
        except OSError as e:
            return None, f"Cannot read the Solana keypair file {Path(key).name}: {e.__class__.__name__}."
    keypair = None
    try:
        if isinstance(raw, str) and raw.strip().startswith("["):
            raw = json.loads(raw)
        if isinstance(raw, (list, bytes, bytearray)):
            keypair = Keypair.from_bytes(bytes(raw))
        elif isinstance(raw, str):
            keypair = Keypair.from_base58_string(raw.strip())
    except (ValueError, TypeError, OverflowError):
        keypair = None
    del raw, key
    if keypair is None:
        return None, ("That Solana key is not valid: expected the 64-byte secret key as base58 (a wallet's export) "
                      "or as the JSON array of 64 numbers the Solana CLI writes (its text or the path of its "
                      "file). The key itself is not shown.")
    return keypair, None
