"""The supervision index's SQL: per-group aggregates by height, the frozen list, state history.

`ledger/supervision.py` decides what a block changes; this module writes it, inside the
block's own SQLite transaction (`Store.commit_block` calls `write_block` between its BEGIN and
COMMIT), and reads it back. Three tables:

* `sup_groups (instrument, dimension, grp, height) -> total, holders`: one row each time a
  group's figures change, with the figures after that block. The figures of a group at height
  h are its row with the greatest height <= h; the current ones its last row. A summary reads
  one row per group (two b-tree seeks each: the next group, then its row at h), never a
  holder: its cost follows the number of groups (VASPs, countries, categories), not holders.
* `sup_frozen (address, instrument) -> reason_code, legal_reference, height`: what is frozen
  now; instrument "" is a whole-account freeze.
* the state history: every change of a state key in `supervision.HISTORY_PREFIXES`, with
  the height that wrote it (value None: deleted). A key's value at height h is its change with
  the greatest height <= h. A block's changes are ONE row of `history_log (height) -> blob`
  (an append at the end of an integer key, the state log's row format), and their keys go
  into `history_keys (index key, height)` one slice of keys a block, held back in memory
  meanwhile (ledger/held_index.py, the store's `_history_index`, rebuilt from the last
  `history_log` rows at opening): a million accounts' changes would otherwise land on
  ~3,000 scattered pages of a table that grows with the chain, every block (measured: +48 %
  CPU per block at 100k accounts). The index key is the state key behind its last byte (an
  address byte for accounts and holdings: uniform, as the held-back slicing needs). A block
  with more than `BULK_HISTORY` such changes (the genesis, a state written by a tool, an
  index rebuilt at the tip) writes them as rows of `history (key, height) -> value` instead,
  sorted; a lookup takes the later of the two.

`supervision.since` (meta): the first height the index describes. A store written before the
index existed gets it built from its state at the tip when the chain opens (`rebuild`), and
has no history before that height. `supervision.height`: the last block written into it (a
block written by a node without the index leaves it behind: the chain rebuilds at opening).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from itertools import chain
from typing import Any

import msgpack

from ledger.state_log import decode_log_row
from ledger.supervision import HISTORY_PREFIXES, SupervisionDelta

__all__ = [
    "SCHEMA",
    "ensure_tables",
    "frozen_page",
    "frozen_accounts",
    "groups",
    "history_changes",
    "history_heights",
    "history_latest",
    "history_log_since",
    "history_value",
    "index_key",
    "indexed_height",
    "rebuild",
    "since",
    "write_block",
]

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS sup_groups (
    instrument TEXT NOT NULL,
    dimension  TEXT NOT NULL,
    grp        TEXT NOT NULL,
    height     INTEGER NOT NULL,
    total      INTEGER NOT NULL,
    holders    INTEGER NOT NULL,
    PRIMARY KEY (instrument, dimension, grp, height)
) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS sup_frozen (
    address         BLOB NOT NULL,
    instrument      TEXT NOT NULL,
    reason_code     INTEGER,
    legal_reference TEXT NOT NULL,
    height          INTEGER NOT NULL,
    PRIMARY KEY (address, instrument)
) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS history (
    key    BLOB NOT NULL,
    height INTEGER NOT NULL,
    value  BLOB,
    PRIMARY KEY (key, height)
) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS history_log (
    height  INTEGER PRIMARY KEY NOT NULL,
    changes BLOB NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS history_keys (
    key    BLOB NOT NULL,
    height INTEGER NOT NULL,
    PRIMARY KEY (key, height)
) WITHOUT ROWID""",
)
BULK_HISTORY = 20_000
META_SINCE = "supervision.since"
META_HEIGHT = "supervision.height"
_UPSERT_META = (
    "INSERT INTO meta (key, value) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_PREFIXES = frozenset(HISTORY_PREFIXES)


def ensure_tables(conn: sqlite3.Connection) -> None:
    """Create the index's tables if missing (inside the caller's transaction)."""
    for statement in SCHEMA:
        conn.execute(statement)


def _meta_int(conn: sqlite3.Connection, key: str) -> int | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    try:
        return None if row is None else int(row[0])
    except ValueError:
        return None


def since(conn: sqlite3.Connection) -> int | None:
    return _meta_int(conn, META_SINCE)


def indexed_height(conn: sqlite3.Connection) -> int | None:
    return _meta_int(conn, META_HEIGHT)


def index_key(key: bytes) -> bytes:
    """A state key's key in `history_keys`: its last byte first (see the module docstring)."""
    return key[-1:] + key


def history_changes(changes: Mapping[bytes, bytes | None]) -> list[tuple[bytes, bytes | None]]:
    """The block's changes the history keeps, sorted by key."""
    prefixes = _PREFIXES
    if not prefixes:
        return []
    found = [item for item in changes.items() if item[0][:1] in prefixes]
    found.sort()  # a block's changes come sorted (`State.take_changes`): one pass then
    return found


def write_block(
    conn: sqlite3.Connection,
    height: int,
    delta: SupervisionDelta,
    history: list[tuple[bytes, bytes | None]],
) -> None:
    """One block's index writes (inside the block's transaction); `history` from
    `history_changes`. The held-back `history_keys` rows are the store's to write."""
    _write_groups(conn, height, delta.changed())
    _write_frozen(conn, delta)
    if len(history) > BULK_HISTORY:
        conn.executemany(
            "INSERT OR REPLACE INTO history (key, height, value) VALUES (?, ?, ?)",
            [(k, height, v) for k, v in history],
        )
    elif history:
        conn.execute(
            "INSERT INTO history_log (height, changes) VALUES (?, ?)",
            (height, _log_row(history)),
        )
    if height == 0:
        conn.execute(_UPSERT_META, (META_SINCE, b"0"))
    conn.execute(_UPSERT_META, (META_HEIGHT, str(height).encode()))


# A group's figures after a block: its last row's (none: 0, 0) plus the block's change, found
# by SQLite itself (one statement for the block, no Python round trip per group). The sums
# stay integers: a group's total is at most its instrument's supply, itself at most its cap
# (<= 2**63 - 1, ledger/ops/common.py MAX_AMOUNT), so SQLite's addition never overflows.
_WRITE_GROUP = (
    "INSERT OR REPLACE INTO sup_groups (instrument, dimension, grp, height, total, holders)"
    " SELECT ?1, ?2, ?3, ?4, ?5 + coalesce(max(total), 0), ?6 + coalesce(max(holders), 0)"
    " FROM (SELECT total, holders FROM sup_groups WHERE instrument = ?1 AND dimension = ?2"
    " AND grp = ?3 ORDER BY height DESC LIMIT 1)"
)


def _write_groups(
    conn: sqlite3.Connection, height: int, changed: Iterable[tuple[str, str, str, int, int]]
) -> None:
    conn.executemany(
        _WRITE_GROUP,
        [(i, d, g, height, total, holders) for i, d, g, total, holders in changed],
    )


def _log_row(history: list[tuple[bytes, bytes | None]]) -> bytes:
    """`state_log.encode_log_row` of the block's history (an array key, value, key,
    value...), straight from its pairs: no dict and no two lists of 3,000 entries first."""
    return msgpack.packb(list(chain.from_iterable(history)), use_bin_type=True)


def _write_frozen(conn: sqlite3.Connection, delta: SupervisionDelta) -> None:
    conn.executemany(
        "DELETE FROM sup_frozen WHERE address = ? AND instrument = ?", sorted(delta.unfrozen)
    )
    for row in delta.frozen:
        if row.reason_code is None:  # an amount changed without a freeze: keep the reason
            conn.execute(
                "INSERT INTO sup_frozen (address, instrument, reason_code, legal_reference,"
                " height) VALUES (?, ?, NULL, '', ?) ON CONFLICT DO NOTHING",
                (row.address, row.instrument, row.height),
            )
        else:
            conn.execute(
                "INSERT OR REPLACE INTO sup_frozen (address, instrument, reason_code,"
                " legal_reference, height) VALUES (?, ?, ?, ?, ?)",
                (row.address, row.instrument, row.reason_code, row.legal_reference, row.height),
            )


def rebuild(
    conn: sqlite3.Connection,
    height: int,
    snapshot: SupervisionDelta,
    held_back: Iterable[tuple[bytes, bytes | None]],
) -> None:
    """Start the index over from `snapshot` (`supervision.full_snapshot` of the state at
    `height`), with the current state as its history at `height`. `held_back`: the state
    log's changes not yet in the `state` table (they are the newer values)."""
    for table in ("sup_groups", "sup_frozen", "history", "history_log", "history_keys"):
        conn.execute(f"DELETE FROM {table}")
    _write_groups(conn, height, snapshot.changed())
    _write_frozen(conn, snapshot)
    for prefix in sorted(_PREFIXES):
        conn.execute(
            "INSERT INTO history (key, height, value) SELECT key, ?, value FROM state"
            " WHERE key >= ? AND key < ?",
            (height, prefix, bytes([prefix[0] + 1])),
        )
    conn.executemany(
        "INSERT OR REPLACE INTO history (key, height, value) VALUES (?, ?, ?)",
        [(k, height, v) for k, v in held_back if k[:1] in _PREFIXES],
    )
    conn.execute(_UPSERT_META, (META_SINCE, str(height).encode()))
    conn.execute(_UPSERT_META, (META_HEIGHT, str(height).encode()))


# ----------------------------------------------------------------------------- reads


def groups(
    conn: sqlite3.Connection,
    instrument: str | None,
    dimension: str,
    height: int | None,
    limit: int,
) -> list[tuple[str, str, int, int]]:
    """(instrument, group, total, holders) of every non-empty group of `dimension`, for one
    instrument or all (ordered by instrument, group), as of `height` (None: now); at most
    `limit` rows. One skip-scan step and one seek per group."""
    top = (1 << 62) if height is None else height
    found: list[tuple[str, str, int, int]] = []
    if instrument is None:
        cursor = ""  # "" is the `clients` pseudo-instrument: never listed here
        instruments = []
        while True:
            row = conn.execute(
                "SELECT instrument FROM sup_groups WHERE instrument > ? ORDER BY instrument"
                " LIMIT 1",
                (cursor,),
            ).fetchone()
            if row is None:
                break
            cursor = row[0]
            instruments.append(cursor)
    else:
        instruments = [instrument]
    for instrument_id in instruments:
        group = None
        while len(found) < limit:
            if group is None:
                row = conn.execute(
                    "SELECT grp FROM sup_groups WHERE instrument = ? AND dimension = ?"
                    " ORDER BY grp LIMIT 1",
                    (instrument_id, dimension),
                ).fetchone()
            else:
                row = conn.execute(
                    "SELECT grp FROM sup_groups WHERE instrument = ? AND dimension = ?"
                    " AND grp > ? ORDER BY grp LIMIT 1",
                    (instrument_id, dimension, group),
                ).fetchone()
            if row is None:
                break
            group = row[0]
            figures = conn.execute(
                "SELECT total, holders FROM sup_groups WHERE instrument = ? AND dimension = ?"
                " AND grp = ? AND height <= ? ORDER BY height DESC LIMIT 1",
                (instrument_id, dimension, group, top),
            ).fetchone()
            if figures is not None and figures[1]:
                found.append((instrument_id, group, figures[0], figures[1]))
    return found


def frozen_page(
    conn: sqlite3.Connection, limit: int, offset: int
) -> list[tuple[bytes, str, int | None, str, int]]:
    """(address, instrument, reason_code, legal_reference, height), by address."""
    return conn.execute(
        "SELECT address, instrument, reason_code, legal_reference, height FROM sup_frozen"
        " ORDER BY address, instrument LIMIT ? OFFSET ?",
        (limit, offset),
    ).fetchall()


def frozen_accounts(conn: sqlite3.Connection, addresses: list[bytes]) -> set[bytes]:
    """Which of `addresses` are frozen whole."""
    found: set[bytes] = set()
    for start in range(0, len(addresses), 500):
        chunk = addresses[start : start + 500]
        marks = ",".join("?" * len(chunk))
        found.update(
            address
            for (address,) in conn.execute(
                f"SELECT address FROM sup_frozen WHERE instrument = '' AND address IN ({marks})",
                chunk,
            )
        )
    return found


def history_heights(
    conn: sqlite3.Connection, key: bytes, held: list[int], height: int
) -> list[tuple[int, bool]]:
    """Every height <= `height` at which `key` changed, latest first, each with whether its
    value is in the `history` table (else in that height's `history_log` row). `held`: the
    key's held-back heights (the store's `_history_index`)."""
    found = {h: False for h in held if h <= height}
    found.update(
        (h, False)
        for (h,) in conn.execute(
            "SELECT height FROM history_keys WHERE key = ? AND height <= ?",
            (index_key(key), height),
        )
    )
    found.update(
        (h, True)
        for (h,) in conn.execute(
            "SELECT height FROM history WHERE key = ? AND height <= ?", (key, height)
        )
    )
    return sorted(found.items(), reverse=True)


def history_latest(
    conn: sqlite3.Connection, key: bytes, held: int | None, height: int
) -> tuple[int, bool] | None:
    """The last height <= `height` at which `key` changed and whether its value is in the
    `history` table; `held`: its latest held-back height <= `height` (None: none)."""
    best = None if held is None else (held, False)
    for table, in_table, lookup in (
        ("history_keys", False, index_key(key)),
        ("history", True, key),
    ):
        (found,) = conn.execute(
            f"SELECT max(height) FROM {table} WHERE key = ? AND height <= ?", (lookup, height)
        ).fetchone()
        if found is not None and (best is None or found > best[0]):
            best = (found, in_table)
    return best


def history_value(conn: sqlite3.Connection, key: bytes, height: int, in_table: bool) -> Any:
    """`key`'s value written at `height` (found by `history_heights`)."""
    if in_table:
        row = conn.execute(
            "SELECT value FROM history WHERE key = ? AND height = ?", (key, height)
        ).fetchone()
        return None if row is None else row[0]
    row = conn.execute("SELECT changes FROM history_log WHERE height = ?", (height,)).fetchone()
    if row is None:
        return None
    for logged, value in decode_log_row(row[0]):
        if logged == key:
            return value
    return None


def history_log_since(conn: sqlite3.Connection, low: int) -> Iterable[tuple[int, bytes, int]]:
    """(height, index key, height) of every logged change from height `low` on, in height
    order: how the store rebuilds its held-back `history_keys` rows at opening."""
    for height, blob in conn.execute(
        "SELECT height, changes FROM history_log WHERE height >= ? ORDER BY height", (low,)
    ).fetchall():
        for key, _ in decode_log_row(blob):
            yield height, index_key(key), height


def describe(conn: sqlite3.Connection) -> dict[str, Any]:
    """Where the index stands: {since, height} (None: not built)."""
    return {"since": since(conn), "height": indexed_height(conn)}
