"""One node's ledger: the typed state, its commitment tree and its store, kept in step.

`Chain` is what the node's driver (and the ledger benchmark, and the stateful tests) use to
turn transactions into committed blocks:

    chain = Chain.open(path, genesis)              # genesis on first use, else reload
    pending = chain.build_block(txs, time_ms, proposer)   # a proposer assembles a block
    pending = chain.execute_block(block)           # or a validator checks a proposal
    chain.commit(pending, commit_certificate)      # one SQLite transaction
    chain.abandon()                                # or: the block was not decided

Theory of operation
-------------------
At most one block is *pending*: executed on top of the last committed state but not yet
committed. Executing it changes the in-memory state (inside a savepoint) and the state tree,
so the header's `app_hash` is known before anyone votes (immediate execution, see
docs/ARCHITECTURE.md). `commit` writes the block, its certificate, its transactions,
receipts, events and state changes in one store transaction, then releases the savepoint.
`abandon` rolls the state back through the savepoint and restores the tree by re-applying
the committed values of the changed keys, taken from the state's journal before the rollback
(no store read).

Validator-set changes: a `change_validators` transaction in block H only records the change
as pending; at the start of block H + VALSET_DELAY (2, the consensus core's delay) the chain
folds it into the validators, so the state at every height holds the set that signs the next
block and each header's `validators_hash` is the set in force at its height -- the same set
the node's `ValidatorSchedule` gives the consensus core.

Validator-set history: a block that brings a new set into force also writes a change point
into the store's meta table, in the block's transaction (`ledger/validator_history.py`);
`validator_history` holds the points that cover the last `MAX_EVIDENCE_AGE` heights, loaded
at opening and kept up to date by `commit`, so the node knows the sets its evidence window
needs after a restart without reading a block.

Reopening: the state and the tree are rebuilt from the store's state rows, and the tree's
root must equal the `app_hash` stored with the last block, else the database is refused.
Height 0 is the genesis state; its stored "hash" is the genesis hash, and block 1's
`prev_hash` is that hash.
"""

from __future__ import annotations

import gc
import itertools
import os
from collections.abc import Container, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields

from consensus.errors import LocalProtocolError
from ledger import codec
from ledger.block import (
    Block,
    Header,
    decode_header,
)
from ledger.commitment import StateTree
from ledger.crypto import ADDRESS_BYTES
from ledger.genesis import genesis_hash, state_from_genesis, validate_genesis
from ledger.ops.evidence import (
    MAX_EVIDENCE_AGE,
    MisbehaviourRecord,
    is_misbehaviour_key,
    misbehaviour_key,
    record_from_bytes,
)
from ledger.protocol import LATEST_VERSION, UnsupportedProtocol
from ledger.state import VALIDATORS_KEY, State, StateLoader
from ledger.store import (
    BlockRecord,
    CorruptDatabaseError,
    EventColumns,
    EventRecord,
    Store,
    TxColumns,
    TxRecord,
)
from ledger.supervision import SupervisionTally, full_snapshot
from ledger.supervision_store import indexed_height
from ledger.transition import BlockMismatch, CheckBlock, ProposeBlock, Tip, transition_block
from ledger.types import BALANCE_CHANGE, BlockContext, Event, Receipt
from ledger.validator_history import ChangePoint, encode_set, point_key, points_since


class ChainMisuse(LocalProtocolError, RuntimeError):
    """`commit` of a block that is not the pending one, or a second pending block: a bug."""


@dataclass(frozen=True, slots=True)
class PendingBlock:
    """A block executed on top of the committed state, waiting for `commit` or `abandon`."""

    block: Block
    receipts: tuple[Receipt, ...]
    changes: dict[bytes, bytes | None]
    dropped: tuple[Receipt, ...] = ()
    evidence_events: tuple[Event, ...] = ()  # `misbehaviour` events of the block itself

    @property
    def header(self) -> Header:
        return self.block.header


class Chain:
    """The ledger of one node. Single owner: not thread-safe (the driver task owns it)."""

    def __init__(self, genesis: Mapping, store: Store, state: State, tree: StateTree) -> None:
        # Use `Chain.open`.
        self.genesis = genesis
        self.chain_id: str = genesis["chain_id"]
        self.genesis_hash = genesis_hash(genesis)
        self.store = store
        self.state = state
        self.tree = tree
        latest = store.blocks.latest_height()
        self.height: int = 0 if latest is None else latest
        self._last_hash: bytes
        self._last_time_ms: int
        # The commit certificate stored with the block at `height` (None at genesis): read
        # here, on the thread that opens the chain, so that the driver, which starts from it,
        # does not read SQLite on the event loop (issue 19).
        self.last_commit: bytes | None = None
        self._load_tip()
        self._pending: PendingBlock | None = None
        self._savepoint: int | None = None
        self._unsaved_meta: dict[str, bytes] = {}  # written with the next block
        self.validator_history: list[ChangePoint] = self._load_validator_history()
        # The supervision index's change, summed as the state is written (its records are
        # in hand then); turned into the block's `SupervisionDelta` at commit.
        self.supervision_tally = SupervisionTally(state)
        state.observe(self.supervision_tally)

    # ------------------------------------------------------------------ open / close

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        genesis: Mapping,
        *,
        store_options: Mapping[str, int] | None = None,
    ) -> Chain:
        """Open the node's database, writing the genesis state on first use.

        Raises the store's errors for a foreign or corrupt database, and
        `CorruptDatabaseError` when the stored state does not hash to the stored app_hash.
        `store_options` are `Store.open`'s sizing arguments (tests use small ones).
        """
        validate_genesis(genesis)
        store = Store.open(
            path,
            chain_id=genesis["chain_id"],
            genesis_hash=genesis_hash(genesis),
            **(store_options or {}),
        )
        try:
            latest = store.blocks.latest_height()
            if latest is None:
                state = state_from_genesis(genesis)
                changes = state.take_changes()
                tree = StateTree()
                app_hash = tree.apply(changes)
                store.commit_block(
                    BlockRecord(
                        height=0,
                        hash=genesis_hash(genesis),
                        header=b"",
                        block=codec.encode(dict(genesis)),
                        commit=b"",
                        app_hash=app_hash,
                        changes=changes,
                        # The genesis validators are in force from block 1 on.
                        meta={point_key(1): encode_set(state.validator_set.validators)},
                        supervision=full_snapshot(state, 0),
                    )
                )
            else:
                state, tree = _load_state(store)
                stored = store.blocks.app_hash(latest)
                if tree.root != stored:
                    raise CorruptDatabaseError(
                        f"state rows hash to {tree.root.hex()} but block {latest} committed "
                        f"app_hash {stored.hex() if stored else None}"
                    )
                if store.db.read_with(indexed_height) != latest:
                    # Written before the supervision index existed (or by a node without it):
                    # build it from the state at the tip (ledger/supervision_store.py).
                    store.indexes.rebuild_supervision(latest, full_snapshot(state, latest))
            return cls(genesis, store, state, tree)
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        if self._pending is not None:
            self.abandon()
        self.store.close()

    def _load_tip(self) -> None:
        if self.height == 0:
            self._last_hash = self.genesis_hash
            self._last_time_ms = self.genesis["genesis_time_ms"]
            return
        stored = self.store.blocks.block(self.height)
        header = decode_header(stored.header)
        self._last_hash = header.hash
        self._last_time_ms = header.time_ms
        self.last_commit = self.store.blocks.commit(self.height)

    def _load_validator_history(self) -> list[ChangePoint]:
        """The change points covering heights from `height - MAX_EVIDENCE_AGE` on. A store
        written before the history existed has none: then the set in force at the tip (the
        state's) is all this node can know, recorded as a point at the tip and saved with the
        next block; heights below it stay unknown (node/driver.py, "Unknowable sets")."""
        floor = max(self.height - MAX_EVIDENCE_AGE, 0)
        points = points_since(self.store, floor, limit=MAX_EVIDENCE_AGE + 1)
        if not points:
            seed = ChangePoint(max(self.height, 1), self.state.validator_set.validators)
            self._unsaved_meta[point_key(seed.height)] = encode_set(seed.validators)
            points = [seed]
        return points

    def _validator_change(self, height: int, changes: Mapping[bytes, object]) -> ChangePoint | None:
        """The point of block `height` if it brought a new set into force (promotion at its
        start), else None."""
        if VALIDATORS_KEY not in changes:
            return None  # the set's record was not even written: nothing changed
        validators = self.state.validator_set.validators
        if validators == self.validator_history[-1].validators:
            return None  # only the pending changes moved
        return ChangePoint(height, validators)

    def _add_validator_point(self, point: ChangePoint) -> None:
        self.validator_history.append(point)
        floor = point.height - MAX_EVIDENCE_AGE
        while len(self.validator_history) > 1 and self.validator_history[1].height <= floor:
            del self.validator_history[0]

    # ------------------------------------------------------------------ reads

    @property
    def app_hash(self) -> bytes:
        """The root of the committed state (of the pending block's state while one is pending)."""
        return self.tree.root

    @property
    def last_block_hash(self) -> bytes:
        return self._last_hash

    @property
    def last_time_ms(self) -> int:
        return self._last_time_ms

    @property
    def pending(self) -> PendingBlock | None:
        return self._pending

    def context(self, height: int, time_ms: int) -> BlockContext:
        return BlockContext(self.chain_id, height, time_ms)

    # ------------------------------------------------------------------ blocks

    def check_next_block_supported(self) -> None:
        """`UnsupportedProtocol` if the next block runs a protocol version this code does not
        (ledger/protocol.py): the node stops at the last block it can run, instead of
        waiting for one it could never execute."""
        height = self.height + 1
        version = self.state.protocol.version_at(height)
        if version > LATEST_VERSION:
            raise UnsupportedProtocol(height, version)

    def tip(self) -> Tip:
        """The committed block the next one must follow."""
        return Tip(self.chain_id, self.height, self._last_hash, self._last_time_ms)

    def build_block(
        self,
        txs: Sequence[bytes],
        time_ms: int,
        proposer: bytes,
        *,
        verified: Container[bytes] = (),
        evidence: Sequence[bytes] = (),
    ) -> PendingBlock:
        """Assemble and execute the next block from candidate transactions (a proposer).

        Transactions that cannot be in a block (bad signature, wrong nonce...) are left out and
        reported in `dropped`, so the caller can evict them from its mempool. `evidence` are
        block evidence items the caller has verified (`ledger/ops/evidence.py`); malformed,
        repeated, too old or already recorded ones are left out.
        """
        return self._run(ProposeBlock(txs, time_ms, proposer, evidence), verified)

    def execute_block(self, block: Block, *, verified: Container[bytes] = ()) -> PendingBlock:
        """Check a proposed block against the committed tip and execute it (a validator).

        Raises `InvalidBlock` (and changes nothing) when any header field disagrees with what
        executing the block gives, or when a transaction cannot be in a block.
        """
        return self._run(CheckBlock(block), verified)

    def _run(self, work: ProposeBlock | CheckBlock, verified: Container[bytes]) -> PendingBlock:
        """`transition_block` inside the pending block's savepoint; a refused block leaves the
        state and the tree as they were."""
        self._check_no_pending()
        self._savepoint = self.state.savepoint()
        try:
            outcome = transition_block(self.state, self.tree, self.tip(), work, verified=verified)
        except BlockMismatch:
            self._rollback_state_and_tree()  # the tree took the block's changes already
            raise
        except BaseException:
            self._rollback_state()
            raise
        self._pending = PendingBlock(
            outcome.block,
            outcome.receipts,
            outcome.changes,
            outcome.dropped,
            outcome.evidence_events,
        )
        return self._pending

    def commit(self, pending: PendingBlock, commit_certificate: bytes) -> None:
        """Make the pending block durable: block, certificate, txs, receipts, events and state
        changes in one SQLite transaction. Only then is the block part of the chain."""
        if pending is not self._pending:
            raise ChainMisuse("commit() of a block that is not the pending one")
        header = pending.header
        records = _tx_columns(header.height, pending.block.txs, pending.receipts)
        point = self._validator_change(header.height, pending.changes)
        meta = dict(self._unsaved_meta)
        if point is not None:
            meta[point_key(point.height)] = encode_set(point.validators)
        supervision = self.supervision_tally.delta(
            # Lazy: read only when a frozen amount changed (ledger/supervision.py `_Reasons`).
            ((e.type, e.attributes) for r in pending.receipts for e in r.events),
            header.height,
        )
        self.store.commit_block(
            BlockRecord(
                height=header.height,
                hash=header.hash,
                header=header.encoded,
                block=pending.block.encode(),
                commit=commit_certificate,
                app_hash=header.app_hash,
                txs=records,
                events=_event_columns(header.height, pending.receipts, pending.evidence_events),
                changes=pending.changes,
                meta=meta,
                supervision=supervision,
            )
        )
        self._unsaved_meta = {}
        self.supervision_tally.clear()
        if point is not None:
            self._add_validator_point(point)
        self.state.release(self._savepoint)
        self._savepoint = None
        self._pending = None
        self.height = header.height
        self._last_hash = header.hash
        self._last_time_ms = header.time_ms
        self.last_commit = commit_certificate

    def abandon(self) -> None:
        """Forget the pending block: state and tree return to the committed state."""
        pending = self._pending
        if pending is None:
            return
        self._rollback_state_and_tree()
        self._pending = None

    # ------------------------------------------------------------------ helpers

    def _check_no_pending(self) -> None:
        if self._pending is not None:
            raise ChainMisuse("a block is already pending: commit() or abandon() it first")

    def _rollback_state(self) -> None:
        if self._savepoint is not None:
            self.state.rollback(self._savepoint)
            self._savepoint = None
        # Changes taken by the transition were dirty marks of this block; the rollback
        # restored the records, and nothing else may be reported as changed.
        self.state.take_changes()

    def _rollback_state_and_tree(self) -> None:
        """Put the state and the tree back to the committed state. The committed values of
        the keys the block wrote come from the state's journal (`State.values_before`), not
        from the store: no SQLite read on the caller's thread while the store's worker thread
        may be writing (the driver abandons on the trio thread)."""
        committed = self.state.values_before(self._savepoint) if self._savepoint is not None else {}
        self._rollback_state()
        self.tree.apply(committed)


def _load_state(store: Store) -> tuple[State, StateTree]:
    """The committed state and its tree, from one pass over the store's state rows.

    The rows stream through the state loader into the tree, so a million-account state is
    never held as a list of rows next to its records. The cyclic garbage collector is off
    meanwhile: millions of new records (none in a cycle) would otherwise trigger full
    collections that re-walk everything loaded so far. One full collection at the end moves
    them all to the oldest generation, here rather than in the middle of the first block
    (measured at 1M accounts: that block took 2 s instead of 0.1 s).
    """
    loader = StateLoader()
    misbehaviour: list[MisbehaviourRecord] = []
    collecting = gc.isenabled()
    gc.disable()
    try:
        with store.state.state_snapshot() as snapshot:
            tree = StateTree.from_items(_load_rows(loader, misbehaviour, _rows(snapshot)))
        state = loader.finish()
    finally:
        if collecting:
            gc.enable()
    for record in misbehaviour:
        # Loaded state, not a change: written to the records directly (see ops/evidence.py).
        state.singletons[misbehaviour_key(record.evidence_hash)] = record
    gc.collect()
    return state, tree


def _load_rows(
    loader: StateLoader, misbehaviour: list[MisbehaviourRecord], rows
) -> Iterator[tuple[bytes, bytes]]:
    """Every row on to the tree; misbehaviour records to `misbehaviour`, the rest through
    the state loader (which does not know that namespace yet)."""
    for key, raw in rows:
        if is_misbehaviour_key(key):
            misbehaviour.append(record_from_bytes(raw))
        else:
            loader.add(key, raw)
        yield key, raw


def _rows(snapshot) -> Iterator[tuple[bytes, bytes]]:
    while batch := snapshot.fetch():
        yield from batch


# The records' fields, in order: the columns (`TxColumns`, `EventColumns`) hold one column
# per field but the implied ones (checked at import: a field added to a record must be given
# a column, and made by `_tx_columns` / `_event_columns`).
_TX_RECORD_FIELDS = ("tx_id", "height", "index", "raw", "code", "receipt")
_TX_COLUMN_FIELDS = ("height", "tx_ids", "raws", "codes", "receipts")
if (
    tuple(f.name for f in fields(TxRecord)) != _TX_RECORD_FIELDS
    or tuple(f.name for f in fields(TxColumns)) != _TX_COLUMN_FIELDS
):  # pragma: no cover
    raise ImportError("ledger.chain: TxRecord or TxColumns changed; update _tx_columns")
_EVENT_RECORD_FIELDS = (
    "height",
    "tx_index",
    "event_index",
    "type",
    "accounts",
    "instruments",
    "data",
)
_EVENT_COLUMN_FIELDS = (
    "height",
    "tx_indexes",
    "event_indexes",
    "types",
    "accounts",
    "instruments",
    "datas",
)
if (
    tuple(f.name for f in fields(EventRecord)) != _EVENT_RECORD_FIELDS
    or tuple(f.name for f in fields(EventColumns)) != _EVENT_COLUMN_FIELDS
):  # pragma: no cover
    raise ImportError("ledger.chain: EventRecord or EventColumns changed; update _event_columns")


def _tx_records(
    height: int, raws: Sequence[bytes], receipts: Sequence[Receipt]
) -> tuple[TxRecord, ...]:
    """The store's records of the block's transactions, in block order."""
    return _tx_columns(height, raws, receipts).records()


def _tx_columns(height: int, raws: Sequence[bytes], receipts: Sequence[Receipt]) -> TxColumns:
    """`_tx_records` as columns (what `Chain.commit` hands the store)."""
    if len(raws) != len(receipts):
        raise ValueError(f"{len(raws)} transactions but {len(receipts)} receipts")
    return TxColumns(
        height,
        [receipt.tx_id for receipt in receipts],
        list(raws),
        [int(receipt.code) for receipt in receipts],
        [receipt.encode() for receipt in receipts],
    )


def _event_records(
    height: int, receipts: Sequence[Receipt], block_events: Sequence[Event] = ()
) -> tuple[EventRecord, ...]:
    """The store's records of the block's events, in (tx_index, event_index) order; events of
    the block itself (misbehaviour evidence) have tx_index -1."""
    return _event_columns(height, receipts, block_events).records()


def _event_columns(
    height: int, receipts: Sequence[Receipt], block_events: Sequence[Event] = ()
) -> EventColumns:
    """`_event_records` as columns (what `Chain.commit` hands the store): no object per
    event, one append per field."""
    tx_indexes: list[int] = []
    event_indexes: list[int] = []
    types: list[str] = []
    accounts: list[tuple[bytes, ...]] = []
    instruments: list[tuple[str, ...]] = []
    datas: list[bytes] = []
    add_tx, add_index, add_type = tx_indexes.append, event_indexes.append, types.append
    add_accounts, add_instruments, add_data = accounts.append, instruments.append, datas.append
    for tx_index, events in itertools.chain(
        ((-1, block_events),), enumerate([r.events for r in receipts])
    ):
        for event_index, event in enumerate(events):
            type_ = event.type
            add_tx(tx_index)
            add_index(event_index)
            add_type(type_)
            add_data(event.encoded)
            if type_ == BALANCE_CHANGE and tx_index >= 0:
                # Two of every three events of a block of transfers: one account and one
                # instrument by construction (ledger/execute.py), no need to search for them.
                attributes = event.attributes
                add_accounts((attributes["account"],))
                add_instruments((attributes["instrument"],))
            elif type_ == "transfer" and (names := _transfer_names(event.attributes)):
                add_accounts(names[0])
                add_instruments(names[1])
            else:
                add_accounts(tuple(event.accounts()))
                add_instruments(tuple(event.instruments()))
    return EventColumns(height, tx_indexes, event_indexes, types, accounts, instruments, datas)


_TRANSFER_KEYS = frozenset({"amount", "from", "instrument", "to"})


def _transfer_names(
    attributes: Mapping[str, object],
) -> tuple[tuple[bytes, ...], tuple[str, ...]] | None:
    """`(tuple(event.accounts()), tuple(event.instruments()))` of a `transfer` event as
    `move_event` makes it (the other third of a block of transfers), without the two set
    walks and sorts; None for any other shape (the general code takes it)."""
    if attributes.keys() != _TRANSFER_KEYS:
        return None
    sender, receiver = attributes["from"], attributes["to"]
    instrument, amount = attributes["instrument"], attributes["amount"]
    if not (
        type(sender) is bytes
        and type(receiver) is bytes
        and len(sender) == ADDRESS_BYTES
        and len(receiver) == ADDRESS_BYTES
        and type(instrument) is str
        and type(amount) is not bytes
    ):
        return None
    if sender == receiver:
        return (sender,), (instrument,)
    return (sender, receiver) if sender < receiver else (receiver, sender), (instrument,)
