"""The private key never leaves the kernel: not in widget state, a saved notebook, log output,
exception text (even with captured locals), reprs, or the ledger."""

from __future__ import annotations

import json
import logging
import re
import traceback

import nbformat
import pytest
from eth_account import Account
from nbclient import NotebookClient

from stablestudio_widgets import (
    BudgetExceeded,
    Gallery,
    InvalidParams,
    JobCard,
    StableStudio,
    StableStudioError,
    Studio,
    Wallet,
)
from stablestudio_widgets.widgets.records import job_record

from .conftest import until


@pytest.fixture
def key():
    return Account.create().key.hex().removeprefix("0x")


def assert_no_key(text: str, key: str) -> None:
    """The key in any spelling: hex with or without 0x, any case, or its raw bytes as base64."""
    import base64

    lowered = text.lower()
    assert key.lower() not in lowered
    assert base64.b64encode(bytes.fromhex(key)).decode() not in text
    assert not re.search(key[:24], lowered)  # not even a prefix long enough to matter


def shown(job, studio, gallery, card) -> None:
    """Wait until every widget shows ``job`` finished, with its payment steps where it keeps them:
    a card reaches a widget ~50 ms after its job changed."""
    def finished(records) -> bool:
        return [(r.get("key"), r.get("status")) for r in records] == [(job.aio.key, "complete")]

    until(lambda: finished(studio.jobs) and finished(gallery.jobs) and finished([card.job])
          and studio.jobs[0]["inspector"] and card.job["inspector"])


def test_widget_state_reprs_and_exceptions_hold_no_key(sandbox, key, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    logging.getLogger().setLevel(logging.DEBUG)
    ss = StableStudio(sandbox.url, Wallet.from_key("0x" + key), ledger=tmp_path / "l.db", time_scale=0.002,
                      budget_usd=0.10)
    studio, gallery = Studio(ss), Gallery(ss)
    job = ss.generate("nano-banana", "a secretless fox")
    job.wait()
    card = JobCard(job)
    shown(job, studio, gallery, card)  # what goes to the front end is read once the cards are there
    texts = [repr(ss), repr(ss.wallet), str(ss.wallet), repr(job), json.dumps(job_record(job.aio), default=str)]
    for w in (studio, gallery, card):
        texts.append(json.dumps(w.get_state(), default=str))
    errors = []
    for attempt in (lambda: ss.generate("nano-banana", "over budget"),
                    lambda: ss.generate("nano-banana", "x", colour="red"),
                    lambda: Wallet.from_key("0x" + key[:-1] + "g")):
        with pytest.raises(StableStudioError) as e:
            attempt()
        errors.append(e.value)
    assert isinstance(errors[0], BudgetExceeded) and isinstance(errors[1], InvalidParams)
    for err in errors:
        texts.append(str(err))
        tb = traceback.TracebackException.from_exception(err, capture_locals=True)
        ours = [f for f in tb.stack if "stablestudio_widgets" in f.filename]
        assert ours, "the error was raised inside the package"
        texts.append("".join(traceback.StackSummary.from_list(ours).format()) + "".join(tb.format_exception_only()))
    texts.append(caplog.text)
    for t in texts:
        assert_no_key(t, key)
    ss.close()
    assert_no_key((tmp_path / "l.db").read_bytes().decode("latin-1"), key)
    for wal in tmp_path.glob("l.db-*"):
        assert_no_key(wal.read_bytes().decode("latin-1"), key)


NOTEBOOK = [
    "import logging; logging.basicConfig(level=logging.DEBUG)",
    "from stablestudio_widgets import StableStudio, Studio, Gallery\nss = StableStudio(time_scale=0.002)\nss",
    "Studio(ss)",
    "job = ss.generate('grok', 'a notebook that keeps secrets')\njob",
    "job.wait()",
    "Gallery(ss)",
    "print(repr(ss.wallet)); ss.ledger.to_dataframe()",
    "ss.generate('grok', 'x', colour='red')",
]


def test_saved_notebook_holds_no_key(sandbox, key, tmp_path, monkeypatch):
    monkeypatch.setenv("STABLESTUDIO_PRIVATE_KEY", "0x" + key)
    monkeypatch.setenv("STABLESTUDIO_BASE_URL", sandbox.url)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in NOTEBOOK]
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    path = tmp_path / "saved.ipynb"
    nbformat.write(nb, path)
    text = path.read_text()
    assert "InvalidParams" in text and "application/vnd.jupyter.widget-view+json" in text
    assert "widgets" in nb.metadata  # widget state was saved with the notebook
    assert Account.from_key("0x" + key).address in text  # the address may show; the key may not
    assert_no_key(text, key)


def assert_no_solana_key(text: str, keypair) -> None:
    """A Solana secret in any spelling: base58 (or a long prefix), hex, base64, the CLI's JSON array."""
    import base64

    secret = bytes(keypair)[:32]
    b58 = str(keypair)
    assert b58[:24] not in text
    assert secret.hex() not in text.lower() and secret.hex()[:24] not in text.lower()
    for raw in (secret, bytes(keypair)):
        assert base64.b64encode(raw).decode()[:24] not in text
    assert keypair.to_json()[:40] not in text.replace(" ", "")


def test_a_solana_key_stays_in_the_wallet(key, tmp_path, caplog):
    from solders.keypair import Keypair

    caplog.set_level(logging.DEBUG)
    kp = Keypair()
    (tmp_path / "id.json").write_text(kp.to_json())
    ss = StableStudio.sandbox(network="solana-devnet", wallet=Wallet.from_solana_key(tmp_path / "id.json"),
                              ledger=tmp_path / "s.db", time_scale=0.002, budget_usd=0.1)
    studio, gallery = Studio(ss), Gallery(ss)
    job = ss.generate("nano-banana", "a secretless fox on Solana")
    job.wait()
    card = JobCard(job)
    shown(job, studio, gallery, card)
    texts = [repr(ss), repr(ss.wallet), str(ss.wallet), repr(job), json.dumps(job_record(job.aio), default=str),
             json.dumps(card.get_state(), default=str)]
    texts += [json.dumps(w.get_state(), default=str) for w in (studio, gallery)]
    assert ss.wallet.solana_address in texts[1]
    for attempt in (lambda: ss.generate("nano-banana", "over budget"),
                    lambda: Wallet.from_solana_key(str(kp)[:-2] + "0O"),
                    lambda: Wallet.from_solana_key(kp.to_json()[:-5] + "]")):
        with pytest.raises(StableStudioError) as e:
            attempt()
        tb = traceback.TracebackException.from_exception(e.value, capture_locals=True)
        ours = [f for f in tb.stack if "stablestudio_widgets" in f.filename]
        texts.append("".join(traceback.StackSummary.from_list(ours).format()) + "".join(tb.format_exception_only()))
    texts.append(caplog.text)
    ss.close()
    texts.append((tmp_path / "s.db").read_bytes().decode("latin-1"))
    texts += [wal.read_bytes().decode("latin-1") for wal in tmp_path.glob("s.db-*")]
    for t in texts:
        assert_no_solana_key(t, kp)
