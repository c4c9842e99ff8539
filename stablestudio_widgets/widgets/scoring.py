"""A comparison's tables: one row per cell, and per model its wins, ties, win rate, mean rating
and cost per win. While a blind comparison is not revealed, every table names models only by their
letter ("Model A") and shows no route or price (prices tell models apart)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..boundary import spreadsheet_text

Counts = dict[str, dict[str, int]]


def vote_counts(keys: Iterable[str], votes: Iterable[dict[str, Any]]) -> Counts:
    """Wins, losses, ties and both-bad per cell key, from pairwise votes."""
    counts = {k: {"wins": 0, "losses": 0, "ties": 0, "both_bad": 0} for k in keys}
    for v in votes:
        a, b = counts[v["a"]], counts[v["b"]]
        if v["choice"] == "a":
            a["wins"], b["losses"] = a["wins"] + 1, b["losses"] + 1
        elif v["choice"] == "b":
            b["wins"], a["losses"] = b["wins"] + 1, a["losses"] + 1
        elif v["choice"] == "tie":
            a["ties"], b["ties"] = a["ties"] + 1, b["ties"] + 1
        else:
            a["both_bad"], b["both_bad"] = a["both_bad"] + 1, b["both_bad"] + 1
    return counts


def result_rows(cells: list[tuple[Any, dict[str, Any]]], prompts: list[str], counts: Counts,
                ratings: dict[str, int], name: Callable[[str], str], masked: bool) -> list[dict[str, Any]]:
    """One row per (cell, record); ``name(model)`` is what the model is called in the table."""
    rows = []
    for c, rec in cells:
        done = rec.get("finished_at") and rec.get("created_at")
        rows.append({
            "cell": c.key, "model": name(c.model), "route": "" if masked else c.route_id,
            "prompt_index": c.prompt_index, "prompt": prompts[c.prompt_index], "repeat": c.repeat,
            "cost_usd": None if masked else rec.get("cost_usd"), "status": rec.get("status", "not run"),
            "time_to_result_s": round((rec["finished_at"] - rec["created_at"]) / 1000, 3) if done else None,
            "job_id": rec.get("id") or c.job_id, "url": (rec.get("result") or {}).get("url"),
            "wins": counts[c.key]["wins"], "losses": counts[c.key]["losses"], "ties": counts[c.key]["ties"],
            "rating": ratings.get(c.key),
        })
    return rows


def summary_rows(results: list[dict[str, Any]], models: list[str], name: Callable[[str], str],
                 label: Callable[[str], str], counts: Counts, masked: bool) -> list[dict[str, Any]]:
    """Win rate (ties count half) or mean rating per model, with cost per win (hidden while masked)."""
    rows = []
    for m in models:
        mine = [r for r in results if r["model"] == name(m)]
        w, lo, t, bb = (sum(counts[r["cell"]][k] for r in mine) for k in ("wins", "losses", "ties", "both_bad"))
        votes = w + lo + t + bb
        ratings = [r["rating"] for r in mine if r["rating"] is not None]
        cost = None if masked else round(sum(r["cost_usd"] or 0 for r in mine), 6)
        rows.append({"model": name(m), "label": label(m), "wins": w, "losses": lo, "ties": t, "both_bad": bb,
                     "votes": votes, "win_rate": round((w + 0.5 * t) / votes, 4) if votes else None,
                     "mean_rating": round(sum(ratings) / len(ratings), 3) if ratings else None,
                     "cost_usd": cost, "cost_per_win": round(cost / w, 6) if w and cost is not None else None})
    return sorted(rows, key=lambda r: (-(r["win_rate"] or 0), -(r["mean_rating"] or 0)))


class Tables:
    """Compare's tables (rows, pandas DataFrames, CSV) from its cells, votes and ratings."""

    vote_mode: str
    blind: bool
    revealed: bool
    votes: list[dict[str, Any]]
    ratings: dict[str, int]
    _cells: list[Any]
    _spec: dict[str, Any]
    _record: Callable[[Any], dict[str, Any]]
    _letter: Callable[[str], str]
    _label: Callable[[str], str]

    def result_rows(self) -> list[dict[str, Any]]:
        """Per cell; while blind and not revealed, models by letter only, no route, no price."""
        return result_rows([(c, self._record(c)) for c in self._cells], self._spec["prompts"], self._counts(),
                           self.ratings, self._table_name, self._masked)

    def summary_rows(self) -> list[dict[str, Any]]:
        """Win rate (ties count half) or mean rating per model, with cost per win."""
        return summary_rows(self.result_rows(), self._spec["models"], self._table_name, self._label,
                            self._counts(), self._masked)

    def _counts(self) -> Counts:
        return vote_counts((c.key for c in self._cells), self.votes)

    @property
    def _masked(self) -> bool:
        return self.blind and not self.revealed

    def _table_name(self, model: str) -> str:
        return self._letter(model) if self._masked else model

    def results(self):
        """One row per cell: model, prompt, cost, time to result, status, vote outcome, rating (a DataFrame).
        While a blind comparison is not revealed, models show by letter, without route or price."""
        import pandas as pd

        return pd.DataFrame(self.result_rows()).drop(columns=self._unused_columns("rating"))

    def to_csv(self, path: str) -> str:
        """The results as CSV, no cell left to start a spreadsheet formula (job ids and URLs come
        from the service)."""
        self.results().apply(lambda column: column.map(spreadsheet_text)).to_csv(path, index=False)
        return path

    def summary_table(self):
        import pandas as pd

        return pd.DataFrame(self.summary_rows()).drop(columns=self._unused_columns("mean_rating"))

    def _unused_columns(self, *rating: str) -> list[str]:
        """Pairwise votes leave the rating columns empty: tables leave them out."""
        return list(rating) if self.vote_mode == "pairwise" else []
