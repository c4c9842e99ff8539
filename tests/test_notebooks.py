"""The shipped notebooks run top to bottom with no set-up (a real kernel, the sandbox, no wallet)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"


def run(name: str, tmp_path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


def outputs(nb) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def text_of(nb) -> str:
    return json.dumps(outputs(nb))


@pytest.mark.parametrize("name", ["quickstart.ipynb", "ab_compare.ipynb", "how_x402_pays.ipynb",
                                  "paying_on_solana.ipynb"])
def test_notebook_runs_top_to_bottom(name, tmp_path):
    nb = run(name, tmp_path)
    assert not [o for o in outputs(nb) if o["output_type"] == "error"]
    text = text_of(nb)
    if name == "quickstart.ipynb":
        assert text.count("application/vnd.jupyter.widget-view+json") >= 4  # Studio, two cards, Gallery
        assert "<img src=" in text and "<video src=" in text and "settled" in text
        assert "fees up to $0.02 on Tempo testnet" in text and "network='eip155:42431'" in text
    elif name == "ab_compare.ipynb":
        assert "6 generations for $0.334" in text and text.count("complete") >= 6
    elif name == "paying_on_solana.ipynb":
        assert "paid on Solana Devnet" in text and "TransferChecked" in text and "your Solana account" in text
        assert "ComputeBudget111111111111111111111111111111" in text and "exact-svm" in text
    else:
        assert "nonce_already_used" in text and "Chain ID: 84532" in text and "validBefore" in text
    path = tmp_path / name
    nbformat.write(nb, path)
    assert path.stat().st_size < 600_000  # URLs and small thumbnails, never media bytes
