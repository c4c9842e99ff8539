"""A benchmark's sandbox runs in a process of its own, so its CPU never counts as the client's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def start(script: str, *args: str) -> tuple[subprocess.Popen, str]:
    """Run ``script`` (which prints "listening on <url>" first, and stops when its stdin closes);
    return the process and the URL."""
    proc = subprocess.Popen([sys.executable, "-c", script, *args], cwd=REPO, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    line = proc.stdout.readline() if proc.stdout else ""
    m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"the sandbox did not start: {line!r}")
    return proc, m.group(1)
