"""A JupyterLab (or Notebook 7) server on 127.0.0.1 and a notebook driver for Playwright: what the
browser tests share.

Everything is local and isolated: a random token, a free port, a temporary root directory with
its own Jupyter config, settings, workspaces and StableStudio home (so a developer's ledger,
keys and JupyterLab layout never leak into a test), and no network calls from JupyterLab itself
(no news, no update check, a read-only extension manager).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]

# JupyterLab user settings for the test server (written to its own user_settings_dir).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/themes.jupyterlab-settings": {"theme": "JupyterLab Light"},
    # No "Would you like to receive official Jupyter news?" toast, no update check from the page.
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
    # Nothing written behind the test's back (and no "file changed on disk" dialogs).
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    # A save keeps the widgets' state in the notebook (the tests of reopened notebooks use it).
    "@jupyter-widgets/jupyterlab-manager/plugin.jupyterlab-settings": {"saveState": True},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    """A running ``jupyter lab``; ``stop()`` shuts its kernels down, then the server."""

    url: str
    token: str
    root: Path
    proc: subprocess.Popen
    log_path: Path
    _log: Any = field(repr=False, default=None)
    app: str = "lab"  # or "notebook" (Notebook 7)

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"token {self.token}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=10, **kwargs)

    def notebook_url(self, name: str) -> str:
        if self.app == "notebook":
            return f"{self.url}/notebooks/{name}?token={self.token}"
        # ?reset: a fresh workspace, so no tab or layout survives from an earlier test
        return f"{self.url}/lab/tree/{name}?token={self.token}&reset"

    def kernels_idle(self) -> bool:
        """Every kernel of the server is idle (the server's own view; Notebook 7 has no status bar)."""
        kernels = self.api("GET", "/api/kernels").json()
        return bool(kernels) and all(k.get("execution_state") == "idle" for k in kernels)

    def shutdown_kernels(self) -> None:
        for session in self.api("GET", "/api/sessions").json():
            self.api("DELETE", f"/api/sessions/{session['id']}")
        for kernel in self.api("GET", "/api/kernels").json():
            self.api("DELETE", f"/api/kernels/{kernel['id']}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.shutdown_kernels()
                self.api("POST", "/api/shutdown")
            except httpx.HTTPError:
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        if self._log is not None:
            self._log.close()


def start_lab(root: Path, *, startup_timeout: float = 90.0, app: str = "lab") -> Lab:
    """Start ``jupyter lab`` (or ``jupyter notebook``, Notebook 7, with ``app="notebook"``) serving
    ``root`` (notebooks go there); returns once /api/status answers."""
    home = root.parent / (root.name + "-home")
    settings = home / "settings"
    for rel, value in LAB_SETTINGS.items():
        p = settings / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(value))
    (home / "workspaces").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("STABLESTUDIO_PRIVATE_KEY", "STABLESTUDIO_KEYSTORE", "STABLESTUDIO_BASE_URL")}
    # Kernel specs and lab extensions still come from sys.prefix/share/jupyter (the venv).
    env.update(JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_DATA_DIR=str(home / "data"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               IPYTHONDIR=str(home / "ipython"), STABLESTUDIO_HOME=str(home / "stablestudio"),
               PYTHONUNBUFFERED="1")
    port, token = free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyter", app,
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False", "--allow-root",
           f"--ServerApp.root_dir={root}"]
    if app == "lab":
        cmd += ["--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                "--LabApp.extension_manager=readonly",
                f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={home / 'workspaces'}"]
    else:
        cmd += [f"--JupyterNotebookApp.user_settings_dir={settings}",
                f"--JupyterNotebookApp.workspaces_dir={home / 'workspaces'}"]
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / ("jupyterlab.log" if app == "lab" else "notebook7.log")
    log = open(log_path, "w")  # noqa: SIM115 - closed by Lab.stop()
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    lab = Lab(f"http://127.0.0.1:{port}", token, root, proc, log_path, log, app)
    deadline = time.monotonic() + startup_timeout
    while True:
        if proc.poll() is not None:
            log.close()
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{lab.url}/api/status", params={"token": token}, timeout=2).status_code == 200:
                return lab
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            lab.stop()
            tail = log_path.read_text()[-3000:]
            raise RuntimeError(f"jupyter lab did not answer in {startup_timeout:.0f} s:\n{tail}")
        time.sleep(0.2)  # polling interval of a deadline loop, not a synchronisation


class Notebook:
    """One notebook open in JupyterLab: wait for its kernel, run cells, find widget outputs."""

    def __init__(self, page: Any, lab: Lab, name: str):
        self.page, self.lab, self.name = page, lab, name

    def open(self, timeout: float = 60_000) -> Notebook:
        from playwright.sync_api import expect

        self.page.goto(self.lab.notebook_url(self.name))
        self.panel = self.page.locator(".jp-NotebookPanel:visible")
        expect(self.panel).to_have_count(1, timeout=timeout)
        expect(self.panel.locator(".jp-Cell").first).to_be_visible(timeout=timeout)
        self.wait_idle(timeout)
        return self

    def wait_idle(self, timeout: float = 60_000) -> None:
        """Until the status bar reads "Python 3 (ipykernel) | Idle" (Notebook 7: the server says idle)."""
        from playwright.sync_api import expect

        if self.lab.app == "notebook":
            deadline = time.monotonic() + timeout / 1000
            while not self.lab.kernels_idle():
                if time.monotonic() > deadline:
                    raise AssertionError(f"the kernel of {self.name} is not idle after {timeout / 1000:.0f} s")
                time.sleep(0.2)  # polling interval of a deadline loop, not a synchronisation
            return
        idle = self.page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"\|\s*Idle$"))
        expect(idle).to_be_visible(timeout=timeout)

    def command(self, label: str) -> None:
        """Run a JupyterLab command through the command palette (as a user would)."""
        page = self.page
        page.keyboard.press("Control+Shift+C")
        page.locator("#command-palette input.lm-CommandPalette-input").fill(label)
        name = page.locator(".lm-CommandPalette-itemLabel", has_text=re.compile(f"^{re.escape(label)}$"))
        page.locator(".lm-CommandPalette-item", has=name).first.click()

    def run_all(self, timeout: float = 120_000) -> None:
        """Run All Cells and wait until every code cell has an execution count and the kernel is idle."""
        counted = self.panel.locator(".jp-CodeCell .jp-InputPrompt").filter(has_text=re.compile(r"\[\d+\]"))
        if counted.count():
            raise RuntimeError(f"{self.name} was saved with execution counts: clear its outputs first")
        self.panel.locator(".jp-Cell").first.click()
        self.menu("Run", "Run All Cells")
        self.wait_executed(timeout)

    def menu(self, menu: str, item: str) -> None:
        """Choose ``item`` from the menu bar's ``menu`` (JupyterLab and Notebook 7 alike)."""
        page = self.page
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{re.escape(menu)}$")).click()
        page.locator(".lm-Menu-item:visible .lm-Menu-itemLabel",
                     has_text=re.compile(f"^{re.escape(item)}$")).first.click()

    def wait_executed(self, timeout: float = 120_000) -> None:
        """Until every code cell has run; a traceback fails at once (Run All stops at an error)."""
        outcome = self.page.wait_for_function(
            """(panel) => {
                const error = [...panel.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]')]
                  .find((o) => /Traceback \\(most recent call last\\)|^\\w*Error\\b/m.test(o.textContent));
                if (error) return error.textContent;
                const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
                return prompts.length > 0 && prompts.every((p) => /\\[\\d+\\]/.test(p.textContent)) && "ok";
            }""", arg=self.panel.element_handle(), timeout=timeout).json_value()
        if outcome != "ok":
            raise AssertionError(f"a cell of {self.name} failed:\n{outcome}")
        self.wait_idle(timeout)

    def code_cell(self, index: int):
        """The index-th code cell (0-based), markdown cells not counted."""
        return self.panel.locator(".jp-CodeCell").nth(index)

    def output(self, index: int):
        return self.code_cell(index).locator(".jp-OutputArea-output")

    def append_and_run(self, code: str, timeout: float = 60_000):
        """Add a code cell at the end, type ``code`` into it and run it; returns the new cell."""
        page = self.page
        cells = self.panel.locator(".jp-Cell")
        n = cells.count()
        cells.last.locator(".jp-InputArea-prompt").click()  # select the last cell (command mode)
        page.keyboard.press("Escape")
        page.keyboard.press("b")  # insert a cell below, in command mode
        from playwright.sync_api import expect

        expect(cells).to_have_count(n + 1)
        cell = cells.nth(n)
        cell.locator(".cm-content").click()
        page.keyboard.insert_text(code)
        page.keyboard.press("Shift+Enter")
        self.page.wait_for_function(
            "(cell) => /\\[\\d+\\]/.test(cell.querySelector('.jp-InputPrompt').textContent)",
            arg=cell.element_handle(), timeout=timeout)
        return cell
