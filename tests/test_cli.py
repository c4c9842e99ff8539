"""The ``stablestudio`` command: the quickstart (the README's main job), generate and ledger."""

from __future__ import annotations

import re
import subprocess
import sys

from stablestudio_widgets.ledger import Ledger

from .conftest import sandbox_process


def cli(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stablestudio_widgets", *args], capture_output=True, text=True,
                          timeout=180, env=env)


def test_quickstart_pays_for_an_image_and_a_video(tmp_path):
    out = tmp_path / "qs"
    r = cli("quickstart", "--out", str(out), "--time-scale", "0.01")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("paid: job ") == 2 and "Base Sepolia" in r.stdout and "Spent $0.467" in r.stdout
    assert len(list(out.glob("*.png"))) == 1 and len(list(out.glob("*.mp4"))) == 1
    assert [p["status"] for p in Ledger(out / "ledger.sqlite3").payments()] == ["settled", "settled"]


def test_generate_and_refuse_before_paying(tmp_path):
    r = cli("generate", "--sandbox", "--time-scale", "0.01", "grok", "a cli fox", "-p", "aspect_ratio=16:9",
            "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "grok/generate: $0.07" in r.stdout and r.stdout.strip().endswith(".png")
    assert len(list(tmp_path.glob("*.png"))) == 1
    bad = cli("generate", "--sandbox", "grok", "x", "-p", "colour=red")
    assert bad.returncode == 1 and "InvalidParams" in bad.stderr and "Nothing was paid" in bad.stderr
    pricey = cli("generate", "--sandbox", "sora-2-pro", "x")
    assert pricey.returncode == 1 and "--confirm" in pricey.stderr and "confirm=True" not in pricey.stderr
    assert re.search(r"this costs \$\d+\.\d\d, above the confirmation threshold of \$1\.00", pricey.stderr)
    assert "Nothing was signed" in pricey.stderr


def test_generate_shows_progress_while_it_waits(tmp_path):
    """Like the card: the status and the time elapsed against the route's typical time."""
    r = cli("generate", "--sandbox", "--time-scale", "0.15", "grok-video", "a cli wave", "-p", "duration=3")
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if "typically ~" in line]
    assert lines and all(" s · typically ~3 s" in line for line in lines), r.stderr
    assert any(status in r.stderr for status in ("pending", "processing")), r.stderr


def test_ledger_summary_and_csv(tmp_path):
    assert cli("quickstart", "--out", str(tmp_path), "--time-scale", "0.01").returncode == 0
    r = cli("ledger", "--path", str(tmp_path / "ledger.sqlite3"), "--csv", str(tmp_path / "r.csv"))
    assert r.returncode == 0, r.stderr
    assert "in all $0.467" in r.stdout and "veo-3.1-fast/generate" in r.stdout and "settled" in r.stdout
    assert "nano-banana/generate" in (tmp_path / "r.csv").read_text()


def test_sandbox_command_takes_solana_and_a_solana_wallet_pays_it(tmp_path):
    """``stablestudio sandbox --network solana-devnet``: the printed exports are enough to pay on Solana."""
    import os

    with sandbox_process("--time-scale", "0.01", "--network", "base-sepolia", "--network",
                         "solana-devnet") as (_, banner, _url):
        exports = dict(line.split("export ", 1)[1].split("#")[0].strip().split("=", 1)
                       for line in banner.splitlines() if "export " in line)
        assert {"STABLESTUDIO_BASE_URL", "STABLESTUDIO_PRIVATE_KEY", "STABLESTUDIO_SOLANA_KEY"} <= exports.keys()
        assert "Solana Devnet (solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1)" in banner
        env = {**os.environ, "STABLESTUDIO_HOME": str(tmp_path), "STABLESTUDIO_BASE_URL":
               exports["STABLESTUDIO_BASE_URL"], "STABLESTUDIO_SOLANA_KEY": exports["STABLESTUDIO_SOLANA_KEY"]}
        env.pop("STABLESTUDIO_PRIVATE_KEY", None)
        r = cli("generate", "grok", "a fox paid from the command line", env=env)
        assert r.returncode == 0, r.stderr
        assert "on Solana Devnet" in r.stdout and "paid: job " in r.stdout
        ledger = cli("ledger", "--path", str(tmp_path / "ledger.sqlite3"), env=env)
        assert "settled" in ledger.stdout and "Solana Devnet" in ledger.stdout
