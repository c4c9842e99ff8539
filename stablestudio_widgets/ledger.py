"""SQLite ledger of every signed payment and every job: the user's receipts and the reason a
paid result is never lost.

Rows are written before a request leaves and updated as it progresses, so a crash at any point
leaves enough to finish the job (``resume()``). One file, WAL mode, short transactions and a busy
timeout make it safe for several kernels at once. A signed payment payload is bearer money until
it expires, so it is kept only while a resume may need to re-send it (an open payment that is
still valid); after that the row keeps its hash. The directory is 0700 and the files 0600.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import platformdirs

from .boundary import MAX_ATOMIC, spreadsheet_text
from .networks import explorer_url, name_of
from .status import COUNTED_PAYMENTS, COUNTED_WHILE_VALID, FINAL, OPEN_PAYMENTS, SPENT_PAYLOADS

ENV_HOME = "STABLESTUDIO_HOME"
# Payment statuses (status.py): signed → sent → settled | refused (counts until it expires) |
# uncertain (may have settled; resume checks) | expired (validity ran out unsettled); unsent: it
# never left this machine.
DIGEST_PREFIX = "sha256:"

SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
  nonce TEXT PRIMARY KEY, kind TEXT NOT NULL, route TEXT, method TEXT NOT NULL, url TEXT NOT NULL,
  body TEXT, amount INTEGER NOT NULL, asset TEXT, network TEXT, pay_to TEXT, payer TEXT,
  valid_before INTEGER, payload TEXT NOT NULL, status TEXT NOT NULL, tx TEXT, receipt TEXT,
  job_id TEXT, upload_id TEXT, error TEXT, session TEXT, signed_at REAL NOT NULL, updated_at REAL NOT NULL,
  pay_method TEXT, dismissed_at REAL, ref TEXT);
CREATE INDEX IF NOT EXISTS payments_status ON payments(status);
CREATE INDEX IF NOT EXISTS payments_signed_at ON payments(signed_at);
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, base_url TEXT NOT NULL, route TEXT NOT NULL, model TEXT, media TEXT, prompt TEXT,
  params TEXT, status TEXT NOT NULL, amount INTEGER, nonce TEXT, payer TEXT, result_url TEXT,
  thumbnail_url TEXT, local_path TEXT, error TEXT, session TEXT,
  created_at REAL NOT NULL, updated_at REAL NOT NULL, finished_at REAL,
  variant TEXT, run_s REAL, reported_progress INTEGER, progress_shape TEXT);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE TABLE IF NOT EXISTS votes (
  id INTEGER PRIMARY KEY AUTOINCREMENT, comparison TEXT NOT NULL, prompt_index INTEGER, a TEXT, b TEXT,
  choice TEXT, job_id TEXT, rating INTEGER, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS votes_comparison ON votes(comparison);
CREATE TABLE IF NOT EXISTS comparisons (
  id TEXT PRIMARY KEY, spec TEXT NOT NULL, cells TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS terms (
  base_url TEXT NOT NULL, key TEXT NOT NULL, required TEXT NOT NULL, learned_at REAL NOT NULL,
  PRIMARY KEY (base_url, key));
"""


def _marks(statuses: tuple[str, ...]) -> str:
    return ", ".join(f"'{s}'" for s in statuses)  # our own vocabulary, never user input


#: Columns added since the first release (older rows hold NULL: an EVM ``exact`` payment).
#: Columns added since a ledger file could have been made, by table (they start empty).
MIGRATIONS = {"payments": (("pay_method", "TEXT"), ("dismissed_at", "REAL"), ("ref", "TEXT")),
              "jobs": (("variant", "TEXT"), ("run_s", "REAL"), ("reported_progress", "INTEGER"),
                       ("progress_shape", "TEXT"))}

# An amount as summed: a whole number of atomic units in range (boundary.atomic_amount), else nothing
# (a file edited by hand may hold text, a fraction, a negative or an absurd number there).
_AMOUNT = f"CASE WHEN typeof(amount) = 'integer' AND amount BETWEEN 0 AND {MAX_ATOMIC} THEN amount ELSE 0 END"

# What counts against a budget: settled or possibly settled, and refused authorizations until they
# expire (the server holds a valid signature: it could still settle it).
_COUNTED = (f"(status IN ({_marks(COUNTED_PAYMENTS)}) OR (status IN ({_marks(COUNTED_WHILE_VALID)})"
            " AND valid_before > :now))")
_SPENT = _marks(SPENT_PAYLOADS)


def home() -> Path:
    """Where the ledger and cached results live (``STABLESTUDIO_HOME`` overrides); only the user
    may enter it (0700): it holds signed payments while they can settle."""
    p = Path(os.environ.get(ENV_HOME) or platformdirs.user_data_dir("stablestudio", appauthor=False))
    p.mkdir(mode=0o700, parents=True, exist_ok=True)
    if p.stat().st_mode & 0o077:
        p.chmod(0o700)
    return p


def digest(payload: str | None) -> str | None:
    """What a spent payload leaves behind: enough to recognise it, nothing that could settle."""
    if payload is None or payload.startswith(DIGEST_PREFIX):
        return payload
    return DIGEST_PREFIX + hashlib.sha256(payload.encode()).hexdigest()


def _private_file(path: str) -> None:
    """Create ``path`` (and tighten an existing one and its WAL files) to owner-only, 0600."""
    os.close(os.open(path, os.O_CREAT | os.O_RDWR | getattr(os, "O_NOFOLLOW", 0), 0o600))
    for p in (path, path + "-wal", path + "-shm"):
        if os.path.exists(p) and os.stat(p).st_mode & 0o077:
            os.chmod(p, 0o600)


def _period_start(period: str) -> float:
    now = datetime.now(timezone.utc)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        start = start.replace(day=1)
    return start.timestamp()


class Ledger:
    """Payments and jobs in one SQLite file (``":memory:"`` for a throwaway ledger)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = str(path) if path is not None else str(home() / "ledger.sqlite3")
        self._lock = threading.RLock()
        if self.path != ":memory:":
            _private_file(self.path)  # SQLite gives its -wal and -shm files the same mode
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.create_function("digest", 1, digest, deterministic=True)
        self._db.execute("PRAGMA busy_timeout=30000")
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        with self._lock:
            self._db.executescript(SCHEMA)
            for table, added in MIGRATIONS.items():
                columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
                for name, decl in added:
                    if name not in columns:  # a ledger written by an older version: add the column
                        self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
            self._db.execute("CREATE INDEX IF NOT EXISTS jobs_kind ON jobs(route, variant)")
        self.forget_expired_payloads()

    def _tx(self):
        return _Transaction(self)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"Ledger({self.path!r})"

    # --- payments ---------------------------------------------------------------------------
    def record_payment(self, *, nonce: str, kind: str, route: str | None, method: str, url: str,
                       body: Any, amount: int, asset: str, network: str, pay_to: str, payer: str,
                       valid_before: int, payload: str, session: str, pay_method: str = "exact-evm",
                       ref: str | None = None) -> None:
        """``nonce`` is the credential's single-use id; ``valid_before`` its deadline (after it, the
        payment can no longer settle); ``pay_method`` which method can resend ``payload``; ``ref``
        what asked for it (a comparison's cell), so a restart finds the very payment."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO payments (nonce, kind, route, method, url, body, amount, asset, network, pay_to,"
                " payer, valid_before, payload, status, session, signed_at, updated_at, pay_method, ref)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,'signed',?,?,?,?,?)",
                (nonce, kind, route, method, url, json.dumps(body), amount, asset, network, pay_to, payer,
                 valid_before, payload, session, now, now, pay_method, ref))

    def update_payment(self, nonce: str, **fields: Any) -> None:
        """Update a payment; once its status says it can no longer be re-sent, its payload becomes a hash."""
        if "receipt" in fields and not isinstance(fields["receipt"], (str, type(None))):
            fields["receipt"] = json.dumps(fields["receipt"])
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._tx() as db:
            db.execute(f"UPDATE payments SET {cols}, updated_at=? WHERE nonce=?",
                       (*fields.values(), time.time(), nonce))
            db.execute(f"UPDATE payments SET payload = digest(payload) WHERE nonce=? AND status IN ({_SPENT})",
                       (nonce,))

    def forget_expired_payloads(self) -> None:
        """Signed payloads past their validity can no longer settle: keep only their hashes."""
        with self._tx() as db:
            db.execute(f"UPDATE payments SET payload = digest(payload) WHERE valid_before < ? AND payload NOT LIKE"
                       f" '{DIGEST_PREFIX}%'", (time.time(),))

    def payment(self, nonce: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM payments WHERE nonce=?", (nonce,))

    def receipt(self, nonce: str) -> dict[str, Any] | None:
        """What the ledger knows of a payment's settlement, shaped like ``Receipt.to_dict()``: the
        service's receipt when it gave one (with its explorer link), else the network and payer."""
        p = self.payment(nonce)
        if p is None:
            return None
        return {"success": p["status"] == "settled", "transaction": p["tx"], "network": p["network"],
                "network_name": name_of(p["network"]), "payer": p["payer"], "amount": p["amount"],
                "explorer_url": _explorer_link(p), "error_reason": None}

    def payments(self, *, status: str | tuple[str, ...] | None = None, session: str | None = None) -> list[dict]:
        where, args = self._where(status=status, session=session)
        return self._all(f"SELECT * FROM payments{where} ORDER BY signed_at", args)

    def open_payments(self) -> list[dict[str, Any]]:
        """Payments that may have bought something we do not know: possibly settled ones, and
        settled generations whose job id never reached the ledger (a crash in between)."""
        self.forget_expired_payloads()
        marks = ",".join("?" * len(OPEN_PAYMENTS))
        return self._all(f"SELECT * FROM payments WHERE (status IN ({marks}) OR (status = 'settled' AND"
                         " kind = 'generate')) AND job_id IS NULL AND upload_id IS NULL ORDER BY signed_at",
                         OPEN_PAYMENTS)

    # --- jobs ---------------------------------------------------------------------------------
    def record_job(self, *, id: str, base_url: str, route: str, model: str, media: str, prompt: str | None,
                   params: dict, status: str, amount: int | None, nonce: str | None, payer: str | None,
                   session: str, created_at: float, variant: str | None = None) -> None:
        """A paid job, and the payment (``nonce``) that bought it learns its id: one transaction."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs (id, base_url, route, model, media, prompt, params, status, amount, nonce,"
                " payer, session, created_at, updated_at, variant) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(id) DO NOTHING",
                (id, base_url, route, model, media, prompt, json.dumps(params), status, amount, nonce, payer,
                 session, created_at, now, variant))
            if nonce:
                db.execute("UPDATE payments SET job_id=?, updated_at=? WHERE nonce=?", (id, now, nonce))

    def update_job(self, job_id: str, **fields: Any) -> None:
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._tx() as db:
            db.execute(f"UPDATE jobs SET {cols}, updated_at=? WHERE id=?", (*fields.values(), time.time(), job_id))

    def job(self, job_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM jobs WHERE id=?", (job_id,))

    def jobs(self, *, status: str | tuple[str, ...] | None = None, session: str | None = None,
             limit: int | None = None) -> list[dict[str, Any]]:
        where, args = self._where(status=status, session=session)
        lim = f" LIMIT {int(limit)}" if limit else ""
        return self._all(f"SELECT * FROM jobs{where} ORDER BY created_at DESC{lim}", args)

    def run_times(self, base_url: str, route: str, variant: str, limit: int = 20) -> list[tuple[float, bool]]:
        """How long this wallet's latest finished jobs of one kind ran (the service's seconds), oldest
        first, and whether the service reported their progress: what the next job's polls start from."""
        rows = self._all("SELECT run_s, reported_progress FROM jobs WHERE base_url=? AND route=? AND variant=?"
                         " AND run_s IS NOT NULL ORDER BY created_at DESC LIMIT ?", (base_url, route, variant, limit))
        return [(float(r["run_s"]), bool(r["reported_progress"])) for r in reversed(rows)]

    def progress_shapes(self, base_url: str, route: str, limit: int = 20) -> list[Any]:
        """Where the progress readings of this wallet's latest finished jobs of a route fell in their
        runs ([[share, percent], …] each, oldest first): unchecked JSON, the poll plan bounds it."""
        rows = self._all("SELECT progress_shape FROM jobs WHERE base_url=? AND route=? AND progress_shape IS NOT NULL"
                         " ORDER BY created_at DESC LIMIT ?", (base_url, route, limit))
        out = []
        for r in reversed(rows):
            try:
                out.append(json.loads(r["progress_shape"]))
            except (TypeError, ValueError, RecursionError):
                continue
        return out

    def reports_progress(self, base_url: str) -> bool:
        """Whether the service at ``base_url`` has said how far along a job of ours was."""
        return self._one("SELECT 1 FROM jobs WHERE base_url=? AND reported_progress=1 LIMIT 1", (base_url,)) is not None

    def unfinished_jobs(self, base_url: str) -> list[dict[str, Any]]:
        """Jobs that may still finish ("lost" and "timeout" are looked at again by resume())."""
        marks = ",".join("?" * len(FINAL))
        return self._all(f"SELECT * FROM jobs WHERE base_url=? AND status NOT IN ({marks}) ORDER BY created_at",
                         (base_url, *sorted(FINAL)))

    # --- payment terms learned from the service ------------------------------------------------
    def save_terms(self, base_url: str, key: str, required: dict[str, Any], learned_at: float) -> None:
        """Terms a payment settled on, so the next kernel pays in one round trip (wire data: they are
        checked again, like fresh ones, before they are used)."""
        with self._tx() as db:
            db.execute("INSERT INTO terms (base_url, key, required, learned_at) VALUES (?,?,?,?)"
                       " ON CONFLICT(base_url, key) DO UPDATE SET required=excluded.required,"
                       " learned_at=excluded.learned_at", (base_url, key, json.dumps(required), learned_at))

    def stored_terms(self, base_url: str, key: str) -> tuple[Any, float] | None:
        """The terms kept for ``key`` and when they were learned, or None."""
        row = self._one("SELECT required, learned_at FROM terms WHERE base_url=? AND key=?", (base_url, key))
        if row is None:
            return None
        try:
            return json.loads(row["required"]), float(row["learned_at"])
        except (TypeError, ValueError):
            return None

    def forget_terms(self, base_url: str, key: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM terms WHERE base_url=? AND key=?", (base_url, key))

    # --- votes and comparisons --------------------------------------------------------------
    def save_comparison(self, comparison: str, spec: dict, cells: list) -> None:
        now = time.time()
        with self._tx() as db:
            db.execute("INSERT INTO comparisons (id, spec, cells, created_at, updated_at) VALUES (?,?,?,?,?)"
                       " ON CONFLICT(id) DO UPDATE SET spec=excluded.spec, cells=excluded.cells,"
                       " updated_at=excluded.updated_at", (comparison, json.dumps(spec), json.dumps(cells), now, now))

    def comparison(self, comparison: str) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM comparisons WHERE id=?", (comparison,))
        if row:
            row["spec"], row["cells"] = json.loads(row["spec"]), json.loads(row["cells"])
        return row

    def record_vote(self, comparison: str, *, prompt_index: int | None = None, a: str | None = None,
                    b: str | None = None, choice: str | None = None, job_id: str | None = None,
                    rating: int | None = None) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO votes (comparison, prompt_index, a, b, choice, job_id, rating, created_at)"
                       " VALUES (?,?,?,?,?,?,?,?)",
                       (comparison, prompt_index, a, b, choice, job_id, rating, time.time()))

    def votes(self, comparison: str) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM votes WHERE comparison=? ORDER BY id", (comparison,))

    # --- answers ------------------------------------------------------------------------------
    def spent_atomic(self, *, since: float | None = None, session: str | None = None, route: str | None = None) -> int:
        """Settled plus possibly-settled payments, and refused ones while their authorization is still
        valid (counted, to stay on the safe side of a budget)."""
        q = f"SELECT COALESCE(SUM({_AMOUNT}), 0) FROM payments WHERE {_COUNTED}"
        args: dict[str, Any] = {"now": time.time()}
        for col, val, op in (("signed_at", since, ">="), ("session", session, "="), ("route", route, "=")):
            if val is not None:
                q += f" AND {col} {op} :{col}"
                args[col] = val
        with self._lock:
            return int(self._db.execute(q, args).fetchone()[0])

    def spent_usd(self, *, since: float | None = None, session: str | None = None, route: str | None = None) -> float:
        return self.spent_atomic(since=since, session=session, route=route) / 1e6

    def spent_in_period(self, period: str = "day") -> int:
        return self.spent_atomic(since=_period_start(period))

    def spent_today_usd(self) -> float:
        return self.spent_in_period("day") / 1e6

    def spent_by_route_usd(self) -> dict[str, float]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT COALESCE(route, kind) AS r, SUM({_AMOUNT}) FROM payments WHERE {_COUNTED}"
                " GROUP BY r ORDER BY r", {"now": time.time()}).fetchall()
        return {r[0]: r[1] / 1e6 for r in rows}

    def receipts(self) -> list[dict[str, Any]]:
        """One row per payment joined with its job: what was paid, on which network, for what, and
        what came of it (with the explorer link of its transaction when it is on a public chain)."""
        rows = self._all(
            "SELECT p.signed_at, p.kind, p.route, p.amount / 1e6 AS amount_usd, p.network, p.pay_to, p.payer,"
            " p.status AS payment_status, p.tx, p.nonce, COALESCE(p.job_id, p.upload_id) AS job_id,"
            " j.status AS job_status, j.prompt, j.result_url, j.local_path, j.error, p.receipt"
            " FROM payments p LEFT JOIN jobs j ON j.id = p.job_id ORDER BY p.signed_at", ())
        for row in rows:
            row["network_name"] = name_of(row["network"])
            row["explorer_url"] = _explorer_link(row)
            del row["receipt"]
        return rows

    def to_dataframe(self):
        """Receipts as a pandas DataFrame (pandas is optional: ``pip install pandas``)."""
        import pandas as pd

        df = pd.DataFrame(self.receipts())
        if not df.empty:
            df["signed_at"] = pd.to_datetime(df["signed_at"], unit="s", utc=True)
        return df

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Receipts as CSV; job ids, errors and URLs come from the service, so no cell is left to
        start a spreadsheet formula (``boundary.spreadsheet_text``)."""
        rows = [{k: spreadsheet_text(v) for k, v in row.items()} for row in self.receipts()]
        p = Path(path)
        with p.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["signed_at"])
            w.writeheader()
            w.writerows(rows)
        return p

    # --- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _where(**filters: Any) -> tuple[str, tuple]:
        parts, args = [], []
        for col, val in filters.items():
            if val is None:
                continue
            vals = (val,) if isinstance(val, str) else tuple(val)
            parts.append(f"{col} IN ({','.join('?' * len(vals))})")
            args.extend(vals)
        return (" WHERE " + " AND ".join(parts) if parts else ""), tuple(args)

    def _one(self, q: str, args: tuple) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(q, args).fetchone()
        return dict(row) if row else None

    def _all(self, q: str, args: tuple) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._db.execute(q, args).fetchall()]


def _explorer_link(row: dict[str, Any]) -> str | None:
    """The explorer link of a payment row, rebuilt from its network and transaction (a ledger file
    is read back as untrusted data); only for a settlement the service said is on a public chain."""
    try:
        stored = json.loads(row.get("receipt") or "null")
    except ValueError:
        return None
    on_chain = isinstance(stored, dict) and bool(stored.get("explorer_url"))
    return explorer_url(row.get("network"), row.get("tx")) if on_chain else None


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` under the process lock: one writer at a time, across kernels too."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    def __enter__(self) -> sqlite3.Connection:
        self.ledger._lock.acquire()
        self.ledger._db.execute("BEGIN IMMEDIATE")
        return self.ledger._db

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.ledger._db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.ledger._lock.release()
