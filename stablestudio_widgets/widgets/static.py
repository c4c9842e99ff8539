"""A widget's static copy: plain HTML of its cards (embedded thumbnails, prompts, prices, receipts)
shown in a second output under the live widget.

A saved notebook keeps it, so the results show where the widget cannot run: nbviewer, GitHub,
JupyterLab reopened without saved widget state ("model not found"). While the live view runs, its
front end hides the copy (the copy's class names the widget's ``_static_id``); the kernel updates
the copy (one ``update_display``) when the cards change.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

from ..errors import fmt_usd
from ..status import VOCABULARY

CARD = ("display:inline-block;vertical-align:top;width:176px;margin:4px;padding:6px;"
        "border:1px solid #c8c8c8;border-radius:6px;font:12px/1.35 system-ui,sans-serif")


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def safe_url(value: Any) -> str | None:
    """A URL from the service may go in src/href only if it is http(s) (or our own JPEG data URI)."""
    if isinstance(value, str) and value.startswith(("https://", "http://", "data:image/jpeg;base64,")):
        return value
    return None


def card_html(record: dict[str, Any], title: str | None = None) -> str:
    """One job record as a small card: thumbnail (linked to the media), title, status, prompt, cost, receipt."""
    status = VOCABULARY["job_status"].get(record.get("status") or "", {}).get("label", record.get("status") or "")
    res = record.get("result") or {}
    url = safe_url(res.get("url"))
    still = safe_url(res.get("thumb")) or safe_url(res.get("thumbnail_url")) or (
        url if record.get("media") == "image" else None)
    parts = [f'<div style="font-weight:600">{esc(title or record.get("label") or record.get("model") or "Job")}'
             f' <span style="font-weight:400;color:#555">· {esc(status)}</span></div>']
    if still:
        img = (f'<img src="{esc(still)}" alt="{esc(record.get("prompt") or "generated media")}" '
               'style="display:block;max-width:100%;max-height:176px;margin:4px 0">')
        parts.append(f'<a href="{esc(url)}" target="_blank" rel="noopener">{img}</a>' if url else img)
    if record.get("media") == "video" and url:
        parts.append(f'<div><a href="{esc(url)}" target="_blank" rel="noopener">▶ video</a></div>')
    if record.get("prompt"):
        parts.append(f'<div style="color:#333">{esc(record["prompt"])}</div>')
    chips = [f"{k}={v}" for k, v in (record.get("params") or {}).items()
             if k not in ("prompt", "image", "images", "lastFrame") and not isinstance(v, (list, dict))]
    if chips:
        parts.append(f'<div style="color:#555">{esc(" · ".join(chips))}</div>')
    money = []
    if record.get("cost_usd") is not None:
        money.append(f"<b>{esc(fmt_usd(record['cost_usd']))}</b>")
    receipt = record.get("receipt") or {}
    if receipt.get("transaction"):
        tx = receipt["transaction"]
        label = esc(f"tx {tx[:6]}…{tx[-4:]}")
        explorer = safe_url(receipt.get("explorer_url"))
        money.append(f'<a href="{esc(explorer)}">{label}</a>' if explorer
                     else f'<code title="{esc(tx)}">{label}</code>')
        if receipt.get("network_name"):
            money.append(esc(receipt["network_name"]))
    if money:
        parts.append(f'<div>{" ".join(money)}</div>')
    if record.get("error"):
        parts.append(f'<div style="color:#b00020">{esc(record["error"].get("message", ""))}</div>')
    return f'<div style="{CARD}">{"".join(parts)}</div>'


def page_html(static_id: str, heading: str, cards: Iterable[tuple[str | None, dict[str, Any]]],
              notes: Iterable[str] = ()) -> str:
    """The whole copy: a heading, notes (totals), the cards; ``ssw-static-<id>`` lets the live view hide it."""
    body = "".join(card_html(record, title) for title, record in cards) or '<p style="color:#555">No jobs yet.</p>'
    lines = "".join(f'<div style="color:#555">{esc(n)}</div>' for n in notes if n)
    return (f'<div class="ssw-static ssw-static-{esc(static_id)}" style="font:13px system-ui,sans-serif">'
            f'<div><b>{esc(heading)}</b> <span style="color:#555">— a static copy of the widget: '
            "re-run the cell for the live one.</span></div>"
            f"{lines}<div>{body}</div></div>")
