"""Secrets at rest: file modes, what the ledger keeps of a signed payment, what widget state and
tracebacks hold. The attacker here is whoever reads the disk, a saved notebook or an error report."""

from __future__ import annotations

import json
import os
import stat
import traceback

import pytest
from eth_account import Account

from stablestudio_widgets import JobCard, StableStudio, Wallet, WalletError
from stablestudio_widgets.ledger import home

from ..conftest import until

pytestmark = pytest.mark.anyio


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def test_data_directory_and_ledger_are_private(hostile, client):
    ss = client(ledger=None)  # the default: $STABLESTUDIO_HOME/ledger.sqlite3
    job = await ss.generate("nano-banana", "a fox")
    await job.wait()
    data = home()
    assert mode(data) == 0o700
    files = [p for p in data.iterdir() if p.name.startswith("ledger.sqlite3")]
    assert {p.name for p in files} >= {"ledger.sqlite3", "ledger.sqlite3-wal", "ledger.sqlite3-shm"}
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}


async def test_a_settled_payment_keeps_only_a_hash_of_its_signature(hostile, client, tmp_path):
    ss = client()
    job = await ss.generate("nano-banana", "a fox")
    (got,) = hostile.paid()
    signature = got.payment["payload"]["signature"]
    (row,) = ss.ledger.payments()
    assert row["status"] == "settled" and row["payload"].startswith("sha256:")
    assert signature[2:].lower() not in json.dumps(row).lower()
    await job.wait()
    ss.ledger.close()
    for p in tmp_path.glob("ledger0.sqlite3*"):
        assert signature[2:].encode() not in p.read_bytes().lower(), p.name


def test_no_payment_signature_in_widget_state_for_a_real_wallet(hostile, tmp_path):
    real = Wallet.from_key(Account.create().key.hex())
    for wallet, shown in ((real, False), (Wallet.generate(), True)):  # the sandbox wallet's inspector may show it
        hostile.received.clear()
        ss = StableStudio(hostile.url, wallet, ledger=tmp_path / f"{shown}.db", time_scale=0.002)
        try:
            job = ss.generate("nano-banana", "a fox")
            job.wait()
            card = JobCard(job)
            (got,) = hostile.paid()
            secret = got.payment["payload"]["signature"][2:], got.authorization["nonce"][2:]
            proof = [s["signature"][2:] for s in hostile.sign_ins()]
            until(lambda card=card: card.job.get("inspector"))
            state = json.dumps(card.get_state()).lower()
            # (look for a signature's start: that is what older finished jobs' inspectors keep)
            assert all((s[:22].lower() in state) == shown for s in secret), wallet
            assert all((p[:22].lower() in state) == shown for p in proof), wallet
            card.close()
        finally:
            ss.close()


def test_keystore_password_and_ciphertext_stay_out_of_traceback_locals(tmp_path):
    keystore = Wallet.generate().export_keystore("the right password")
    path = tmp_path / "wallet.json"
    path.write_text(json.dumps(keystore))
    with pytest.raises(WalletError) as e:
        Wallet.from_keystore(path, "a wrong but close password")
    tb = traceback.TracebackException.from_exception(e.value, capture_locals=True)
    ours = [f for f in tb.stack if "stablestudio_widgets" in f.filename]
    assert ours and any(f.locals for f in ours)  # the package's frames, with their locals, as a reporter sees them
    text = "".join(traceback.StackSummary.from_list(ours).format()) + "".join(tb.format_exception_only())
    assert "a wrong but close password" not in text
    assert keystore["crypto"]["ciphertext"] not in text and keystore["crypto"]["mac"] not in text
    assert e.value.__context__ is None  # nothing hangs on to the decryption's frames
