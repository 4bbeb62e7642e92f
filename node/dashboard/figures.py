"""What the supervision dashboard shows, read from one node over JSON-RPC.

What it owns: turning the node's answers (`status`, `validators`, `commit`, `instruments`,
`programme`, `holdings_summary`, `events`) into one bounded `overview` document for the page:
the programme cap gauge, supply and holders per instrument, holdings by VASP and by country,
recent freezes, forced transfers and suspensions, and chain health (height, observed block
interval, validators that signed the latest block).

Every figure is the node's own answer, never recomputed from partial data: a method the node
does not serve (an older node: -32601) or refuses (-32004: the dashboard's key lacks the
right) leaves its section `{"unavailable": "<why>"}` and the page says so. Every list is
capped (`MAX_*`), so the document stays small whatever the chain holds; the node's own
paging and answer budgets bound each call.

The observed block interval is measured here, from the heights seen at each refresh against
this process's monotonic clock, because a chain with a fixed chain-time step (the demo's one
day per block) has header times that say nothing about how fast blocks really come.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ledger.crypto import address_from_text
from node.client.errors import ClientError, RpcError

MAX_INSTRUMENTS = 200  # bars in the supply chart
MAX_GROUPS = 50  # bars in a holdings chart (the largest groups first)
MAX_ACTIONS = 20  # rows of recent supervisory actions
ACTION_WINDOWS = (100, 1_000, 10_000)  # blocks back from the tip, widened until enough
EVENTS_PAGE = 1_000  # events per `events` call
MAX_EVENT_PAGES = 5  # `events` calls per window: a busy window is read from its end only
ACTION_TYPES = ("frozen", "unfrozen", "forced_transfer", "vasp_suspended", "vasp_licensed")
HEIGHT_SAMPLES = 30  # (time, height) samples kept for the observed block interval


@dataclass
class HeightHistory:
    """(monotonic seconds, height) at each refresh: the observed block interval."""

    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=HEIGHT_SAMPLES))

    def note(self, height: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if not self.samples or self.samples[-1][1] != height:
            self.samples.append((now, height))

    def block_interval_ms(self) -> int | None:
        """Median milliseconds per block between consecutive samples that saw new blocks."""
        rates = [
            (t2 - t1) * 1000 / (h2 - h1)
            for (t1, h1), (t2, h2) in zip(self.samples, list(self.samples)[1:], strict=False)
            if h2 > h1
        ]
        return round(statistics.median(rates)) if rates else None


def _why(exc: Exception) -> str:
    if isinstance(exc, RpcError):
        if exc.code == -32601:
            return "this node does not serve it (an older release)"
        if exc.code == -32004:
            return f"refused to this dashboard's key: {exc.message}"
        return f"error {exc.code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


async def _section(call, method: str, params: dict | None = None) -> tuple[Any, str | None]:
    try:
        return await call(method, params or {}), None
    except ClientError as exc:
        return None, _why(exc)


def _largest(groups: list[dict], key: str, limit: int) -> list[dict]:
    return sorted(groups, key=lambda g: (-int(g.get(key, 0)), str(g.get("group"))))[:limit]


def shape_holdings(answer: dict) -> dict:
    """`holdings_summary` -> the chart's groups (largest total first, capped)."""
    groups = answer.get("groups", [])
    return {
        "by": answer.get("by"),
        "height": answer.get("height"),
        "groups": [
            {
                "group": g.get("group"),
                "total": int(g.get("total", 0)),
                "holders": int(g.get("holders", 0)),
            }
            for g in _largest(groups, "total", MAX_GROUPS)
        ],
        "more_groups": max(0, len(groups) - MAX_GROUPS),
    }


def shape_actions(events: list[dict]) -> list[dict]:
    """The latest supervisory actions, newest first."""
    picked = [e for e in events if e.get("type") in ACTION_TYPES]
    picked.sort(key=lambda e: (e["height"], e.get("tx_index", 0), e.get("event_index", 0)))
    return [
        {"height": e["height"], "type": e["type"], "attributes": e.get("attributes", {})}
        for e in reversed(picked[-MAX_ACTIONS:])
    ]


def signers_of(commit: dict, validators: list[dict]) -> list[str]:
    """Names (or addresses) of the validators whose precommit is in a block's certificate."""
    signed = {s["validator"] for s in commit["signed_header"]["commit"]["signatures"]}
    names = []
    for v in validators:
        if address_from_text(v["address"]).hex() in signed:
            names.append(v.get("name") or v["address"])
    return names


async def recent_actions(call, height: int) -> dict:
    """The newest supervisory actions: `events` is in chain order (oldest first), so read a
    window ending at the tip, widening it until it holds MAX_ACTIONS actions or the widest
    window is read. A window with more than MAX_EVENT_PAGES pages is not read whole: it says
    so (`partial`) rather than show stale rows as the newest."""
    rows: list[dict] = []
    since = height
    for window in ACTION_WINDOWS:
        since = max(1, height - window + 1)
        events: list[dict] = []
        for page in range(1, MAX_EVENT_PAGES + 1):
            answer, why = await _section(
                call, "events", {"from_height": since, "per_page": EVENTS_PAGE, "page": page}
            )
            if answer is None:
                return {"unavailable": why}
            events += answer["events"]
            if len(answer["events"]) < EVENTS_PAGE:
                break
        else:
            return {"rows": rows, "since_height": since, "partial": True}
        rows = shape_actions(events)
        if len(rows) >= MAX_ACTIONS or since == 1:
            break
    return {"rows": rows, "since_height": since, "partial": False}


async def overview(call, history: HeightHistory) -> dict:
    """Everything the page shows, from one node. `call(method, params)` is an SDK call."""
    status, why = await _section(call, "status")
    if status is None:
        return {"unavailable": why}
    sync = status["sync_info"]
    height = int(sync["latest_block_height"])
    history.note(height)
    doc: dict[str, Any] = {
        "chain_id": status["node_info"]["network"],
        "node": status["node_info"]["moniker"],
        "health": {
            "height": height,
            "catching_up": bool(sync["catching_up"]),
            "latest_block_time_ms": sync["latest_block_time"],
            "observed_block_interval_ms": history.block_interval_ms(),
        },
    }
    validators, why = await _section(call, "validators")
    if validators is not None and height > 0:
        doc["health"]["validators"] = [
            v.get("name") or v["address"] for v in validators["validators"]
        ]
        commit, why = await _section(call, "commit", {"height": height})
        if commit is not None:
            doc["health"]["signed_latest_block"] = signers_of(commit, validators["validators"])
    if why:
        doc["health"]["validators_unavailable"] = why

    programme, why = await _section(call, "programme")
    doc["programme"] = programme if programme is not None else {"unavailable": why}

    listed, why = await _section(call, "instruments", {"limit": 100})
    if listed is None:
        doc["instruments"] = {"unavailable": why}
    else:
        rows = list(listed["instruments"])
        after = listed.get("next")
        while after is not None and len(rows) < MAX_INSTRUMENTS:
            page, why = await _section(call, "instruments", {"after": after, "limit": 100})
            if page is None:
                break
            rows += page["instruments"]
            after = page.get("next")
        doc["instruments"] = {
            "rows": [
                {"id": r["id"], "kind": r.get("kind"), "supply": int(r.get("supply", 0))}
                for r in rows[:MAX_INSTRUMENTS]
            ],
            "more": after is not None,
        }

    for by in ("vasp", "country"):
        answer, why = await _section(call, "holdings_summary", {"by": by})
        doc[f"holdings_by_{by}"] = shape_holdings(answer) if answer else {"unavailable": why}

    if height > 0:
        doc["recent_actions"] = await recent_actions(call, height)
    return doc
