"""The only holder of the private key.

The key lives in one private attribute of one object. It never appears in a repr, a pickle, a
copy, widget state, a log line or an exception message: errors about a key say what is wrong
with it, never what it is.
"""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data

from .errors import WalletError

ENV_KEY = "STABLESTUDIO_PRIVATE_KEY"
ENV_KEYSTORE = "STABLESTUDIO_KEYSTORE"
ENV_KEYSTORE_PASSWORD = "STABLESTUDIO_KEYSTORE_PASSWORD"


class Wallet:
    """An EVM account that signs payments and sign-ins; ``repr`` shows the address only."""

    __slots__ = ("__account", "sandbox")

    def __init__(self, account: Any, *, sandbox: bool = False):
        self.__account = account
        self.sandbox = sandbox

    @classmethod
    def from_key(cls, key: str, *, sandbox: bool = False) -> Wallet:
        """From a 0x-prefixed (or bare) 32-byte hex private key."""
        try:
            account = Account.from_key(key.strip())
        except Exception:
            account = None
        del key  # error reporters that capture locals (IPython verbose, Sentry) must not find it
        if account is None:
            raise WalletError("That private key is not valid: expected 32 bytes as 64 hex digits "
                              "(0x-prefixed or bare). The key itself is not shown.")
        return cls(account, sandbox=sandbox)

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
        """From ``STABLESTUDIO_PRIVATE_KEY`` or ``STABLESTUDIO_KEYSTORE``; says how to set one up if neither."""
        if os.environ.get(ENV_KEY):
            return cls.from_key(os.environ[ENV_KEY])
        if os.environ.get(ENV_KEYSTORE):
            return cls.from_keystore(os.environ[ENV_KEYSTORE])
        raise WalletError(
            f"No wallet configured. Set {ENV_KEY}=0x… (a funded Base wallet), or {ENV_KEYSTORE}=path/to/"
            f"keystore.json (password in {ENV_KEYSTORE_PASSWORD} or asked), or pass wallet=Wallet.from_key(…). "
            "To try everything without money, use StableStudio.sandbox().")

    @classmethod
    def generate(cls) -> Wallet:
        """A fresh throwaway key for the sandbox (testnet terms only; never fund it)."""
        return cls(Account.create(), sandbox=True)

    @property
    def address(self) -> str:
        return self.__account.address

    def sign_typed_data(self, full_message: dict[str, Any]) -> str:
        signed = self.__account.sign_message(encode_typed_data(full_message=full_message))
        return "0x" + signed.signature.hex().removeprefix("0x")

    def sign_message(self, text: str) -> str:
        signed = self.__account.sign_message(encode_defunct(text=text))
        return "0x" + signed.signature.hex().removeprefix("0x")

    def export_keystore(self, password: str) -> dict[str, Any]:
        """An encrypted keystore of this key (to save a sandbox or new wallet safely)."""
        return Account.encrypt(self.__account.key, password)

    def __repr__(self) -> str:
        return f"Wallet({self.address}{', sandbox' if self.sandbox else ''})"

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
        return Account.from_key(Account.decrypt(json.loads(text), password))
    except Exception:
        return None
