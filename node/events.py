"""The in-process event bus: committed blocks and transactions, from the driver to subscribers.

What it owns: the `EventBus` the driver publishes every committed block to (`publish`, called
in the driver task right after `Chain.commit`), the subscribers (one per WebSocket client,
node/rpc/websocket.py) with their bounded queues, and the subscription query language.

Publishing never waits. Each subscriber has a bounded trio memory channel; `publish` matches
the block against the subscriber's queries and puts the matches there with `send_nowait`. A
subscriber whose queue is full is *dropped* at once: its channel is closed and `dropped` says
why, so its reader (the WebSocket task) sees the end of the channel and closes the connection
with that reason. A slow client therefore costs the driver one failed `send_nowait`, never a
wait, and never more memory than its queue.

Queries (a small, strict subset of Tendermint's language; anything else is refused with a
`QueryError` naming what is wrong):

    tm.event='NewBlock'
    tm.event='Tx'
    tm.event='Tx' AND tx.hash='<64 hex>'
    tm.event='Tx' AND account='kz1...'        the tx's sender or an account in its events
    tm.event='Tx' AND instrument='ID'         an instrument named in its events
    tm.event='Tx' AND balance_change.account='kz1...'
                                              a tx that changed the account's balance
                                              (a `balance_change` event of the account)

Conditions are joined by ` AND ` (any case), each is `key='value'` with a single-quoted value,
a key appears once, and `tm.event='Tx'` may be left out when another condition is given. The
canonical text of a query (`Query.text`) is what subscribe/unsubscribe match on, so
`account='kz1..'` and `tm.event='Tx' AND account='kz1..'` are the same subscription.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import trio

from consensus.errors import RemoteProtocolError
from ledger.block import Block
from ledger.codes import LedgerError
from ledger.crypto import address_from_text, address_to_text
from ledger.tx import decode_signed_tx
from ledger.types import BALANCE_CHANGE, Event, Receipt

NEW_BLOCK = "NewBlock"
TX = "Tx"
BALANCE_ACCOUNT = "balance_change.account"
_KEYS = ("tm.event", "tx.hash", "account", "instrument", BALANCE_ACCOUNT)
_CONDITION = re.compile(r"\s*([a-z._]+)\s*=\s*'([^']*)'\s*")
_AND = re.compile(r"\s+AND\s+", re.IGNORECASE)
MAX_QUERY_CHARS = 512
CHANGES_KEPT = 8  # blocks whose changed state keys the bus remembers (`changed_since`)
MAX_CHANGED_KEYS = 16_384  # a block writing more is remembered as "unknown" (bounded memory)


class QueryError(RemoteProtocolError, ValueError):
    """A subscription query outside the supported language (the message says why)."""


@dataclass(frozen=True, slots=True)
class Query:
    """One parsed subscription: an event kind and, for Tx, optional filters (all must hold)."""

    event: str  # NEW_BLOCK or TX
    tx_hash: bytes | None = None
    account: bytes | None = None
    instrument: str | None = None
    balance_account: bytes | None = None  # balance_change.account

    @property
    def accounts(self) -> tuple[bytes, ...]:
        """The accounts the query names (a reader must be allowed to read each)."""
        return tuple(a for a in (self.account, self.balance_account) if a is not None)

    @property
    def text(self) -> str:
        """The canonical text (keys in a fixed order), the subscription's name."""
        parts = [f"tm.event='{self.event}'"]
        if self.tx_hash is not None:
            parts.append(f"tx.hash='{self.tx_hash.hex()}'")
        if self.account is not None:
            parts.append(f"account='{address_to_text(self.account)}'")
        if self.instrument is not None:
            parts.append(f"instrument='{self.instrument}'")
        if self.balance_account is not None:
            parts.append(f"{BALANCE_ACCOUNT}='{address_to_text(self.balance_account)}'")
        return " AND ".join(parts)

    def matches_tx(self, tx: CommittedTx) -> bool:
        if self.event != TX:
            return False
        if self.tx_hash is not None and tx.hash != self.tx_hash:
            return False
        if self.account is not None and self.account not in tx.accounts():
            return False
        if self.balance_account is not None and not tx.changes_balance_of(self.balance_account):
            return False
        return self.instrument is None or self.instrument in tx.instruments()


def parse_query(text: object) -> Query:
    """The `Query` of `text`, or `QueryError`."""
    if type(text) is not str or not text.strip():
        raise QueryError("query must be a non-empty string, e.g. tm.event='NewBlock'")
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"query longer than {MAX_QUERY_CHARS} characters")
    values: dict[str, str] = {}
    for part in _AND.split(text.strip()):
        match = _CONDITION.fullmatch(part)
        if match is None:
            raise QueryError(f"cannot parse condition {part.strip()!r}: expected key='value'")
        key, value = match.groups()
        if key not in _KEYS:
            raise QueryError(f"unknown key {key!r}; supported: {', '.join(_KEYS)}")
        if key in values:
            raise QueryError(f"key {key!r} given twice")
        values[key] = value
    event = values.pop("tm.event", None)
    if event is None:
        if not values:  # unreachable with the grammar above, kept as a guard
            raise QueryError("query needs tm.event or a filter")
        event = TX
    if event not in (NEW_BLOCK, TX):
        raise QueryError(f"unknown tm.event {event!r}; supported: 'NewBlock', 'Tx'")
    if event == NEW_BLOCK and values:
        raise QueryError("tm.event='NewBlock' takes no other condition")
    tx_hash = account = balance_account = None
    if "tx.hash" in values:
        text_hash = values["tx.hash"].lower()
        if not re.fullmatch(r"[0-9a-f]{64}", text_hash):
            raise QueryError("tx.hash must be 64 hex characters")
        tx_hash = bytes.fromhex(text_hash)
    if "account" in values:
        try:
            account = address_from_text(values["account"])
        except LedgerError as exc:
            raise QueryError(f"account: {exc.message}") from None
    if BALANCE_ACCOUNT in values:
        try:
            balance_account = address_from_text(values[BALANCE_ACCOUNT])
        except LedgerError as exc:
            raise QueryError(f"{BALANCE_ACCOUNT}: {exc.message}") from None
    instrument = values.get("instrument")
    if instrument is not None and (not instrument or len(instrument) > 32):
        raise QueryError("instrument must be 1 to 32 characters")
    return Query(event, tx_hash, account, instrument, balance_account)


# ---- what is published ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommittedTx:
    """One transaction of a committed block with its verdict."""

    hash: bytes
    height: int
    index: int
    raw: bytes
    code: int
    log: str
    events: tuple[Event, ...]
    # Filled on first use (only account filters need the sender, which costs a decode).
    _accounts: list[frozenset[bytes]] = field(default_factory=list, repr=False, compare=False)

    def accounts(self) -> frozenset[bytes]:
        """The sender and every account the events name."""
        if not self._accounts:
            found = {a for e in self.events for a in e.accounts()}
            try:
                found.add(decode_signed_tx(self.raw).body.sender)
            except LedgerError:
                pass  # a committed tx always decodes; no sender to add otherwise
            self._accounts.append(frozenset(found))
        return self._accounts[0]

    def instruments(self) -> frozenset[str]:
        return frozenset(i for e in self.events for i in e.instruments())

    def changes_balance_of(self, account: bytes) -> bool:
        """Whether a `balance_change` event of the transaction is the account's."""
        return any(
            e.type == BALANCE_CHANGE and e.attributes.get("account") == account for e in self.events
        )


@dataclass(frozen=True, slots=True)
class CommittedBlock:
    """A committed block: its header bytes, hash and transactions with their receipts."""

    height: int
    hash: bytes
    header: bytes  # canonical header bytes
    txs: tuple[CommittedTx, ...]

    @classmethod
    def of(cls, block: Block, receipts: Sequence[Receipt]) -> CommittedBlock:
        header = block.header
        txs = tuple(
            CommittedTx(r.tx_id, header.height, i, raw, int(r.code), r.log, tuple(r.events))
            for i, (raw, r) in enumerate(zip(block.txs, receipts, strict=True))
        )
        return cls(header.height, header.hash, header.encoded, txs)


@dataclass(frozen=True, slots=True)
class Notification:
    """One matched event for one subscription (`query` is the subscription's canonical text)."""

    query: str
    block: CommittedBlock
    tx: CommittedTx | None  # None for NewBlock


# ---- subscribers --------------------------------------------------------------------------


class BusFull(Exception):
    """No room for another subscriber (the connection limit)."""


class Subscriber:
    """One client's queries and bounded queue. Used from trio tasks of one thread only."""

    def __init__(self, bus: EventBus, queue_size: int, max_queries: int) -> None:
        self._bus = bus
        self._send, self.receive = trio.open_memory_channel[Notification](queue_size)
        self.queue_size = queue_size
        self.max_queries = max_queries
        self.queries: dict[str, Query] = {}  # canonical text -> query, in subscribe order
        self.dropped: str | None = None

    def subscribe(self, query: Query) -> None:
        """Add `query`; `QueryError` if already subscribed or over the per-client limit."""
        if query.text in self.queries:
            raise QueryError(f"already subscribed to {query.text}")
        if len(self.queries) >= self.max_queries:
            raise QueryError(f"at most {self.max_queries} subscriptions per client")
        self.queries[query.text] = query

    def unsubscribe(self, query: Query) -> None:
        if self.queries.pop(query.text, None) is None:
            raise QueryError(f"not subscribed to {query.text}")

    def unsubscribe_all(self) -> None:
        self.queries.clear()

    def close(self) -> None:
        self._bus._remove(self)
        self._send.close()

    def _offer(self, notification: Notification) -> bool:
        try:
            self._send.send_nowait(notification)
        except trio.WouldBlock:
            self.dropped = f"too slow: {self.queue_size} events waiting unread"
            self.close()
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self.close()
            return False
        return True


class EventBus:
    """Committed blocks fan out to subscribers; see the module docstring."""

    def __init__(self, max_subscribers: int = 64) -> None:
        self.max_subscribers = max_subscribers
        self._subscribers: dict[int, Subscriber] = {}  # by id(), insertion ordered
        self.published = 0
        self.dropped = 0
        # The state keys each of the last CHANGES_KEPT blocks wrote, by published count:
        # readers of state that follows the chain (node/rpc/scopes.py's principals) forget
        # only what a block changed. None: not known (a block published without its changes).
        self._changes: deque[tuple[int, frozenset[bytes] | None]] = deque(maxlen=CHANGES_KEPT)

    def __len__(self) -> int:
        return len(self._subscribers)

    def open(self, queue_size: int = 256, max_queries: int = 16) -> Subscriber:
        if len(self._subscribers) >= self.max_subscribers:
            raise BusFull(f"at most {self.max_subscribers} subscribers")
        subscriber = Subscriber(self, queue_size, max_queries)
        self._subscribers[id(subscriber)] = subscriber
        return subscriber

    def _remove(self, subscriber: Subscriber) -> None:
        self._subscribers.pop(id(subscriber), None)

    def publish(self, block: CommittedBlock, changed: Iterable[bytes] | None = None) -> None:
        """Offer `block` to every subscriber: never waits (see the module docstring).
        `changed`: the state keys the block wrote (for `changed_since`), if known."""
        self.published += 1
        keys = None if changed is None else frozenset(changed)
        if keys is not None and len(keys) > MAX_CHANGED_KEYS:
            keys = None  # a huge block: its readers start over rather than keep the set
        self._changes.append((self.published, keys))
        for subscriber in list(self._subscribers.values()):
            if not self._deliver(subscriber, block):
                self.dropped += 1

    def changed_since(self, published: int) -> frozenset[bytes] | None:
        """The state keys written by the blocks published after the `published`-th, or None
        if any of them is not known (too far back, or published without its changes)."""
        if published >= self.published:
            return frozenset()
        missing = self.published - published
        recent = list(self._changes)[-missing:] if missing <= len(self._changes) else None
        if recent is None or len(recent) < missing:
            return None
        out: set[bytes] = set()
        for _, keys in recent:
            if keys is None:
                return None
            out |= keys
        return frozenset(out)

    @staticmethod
    def _deliver(subscriber: Subscriber, block: CommittedBlock) -> bool:
        for text, query in list(subscriber.queries.items()):
            if query.event == NEW_BLOCK:
                if not subscriber._offer(Notification(text, block, None)):
                    return False
                continue
            for tx in block.txs:
                if query.matches_tx(tx) and not subscriber._offer(Notification(text, block, tx)):
                    return False
        return True
