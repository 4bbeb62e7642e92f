"""What the supervision reads need kept up to date per block: aggregates and the frozen list.

This module owns the *meaning* of the supervision index: which groups a holder falls in, how
one block's writes change the per-group totals and holder counts, and which accounts and
holdings are frozen (with the reason and legal reference of their freeze). It does no I/O:
the chain's `SupervisionTally` observes its state (`State.observe`) and turns what a block
wrote into a `SupervisionDelta` at commit, and `ledger/supervision_store.py` writes that in
the block's own SQLite transaction.

Groups (`DIMENSIONS`): a holder of an instrument counts in the group of its account's KYC
file -- `vasp` (the investor's VASP's address, hex), `country` (ISO 3166-1 alpha-2),
`category` ("retail", ...) -- or in `NO_GROUP` ("none") when its account has no KYC file (an
institution's own account) or no VASP. The `clients` dimension counts accounts, not holdings:
under instrument `CLIENTS` ("") and the VASP's group, the number of accounts whose KYC names
that VASP.

A block's delta is summed from its writes as they happen (`SupervisionTally`): each holding
write adds its balance change under its account's KYC file at that moment; an account given
another KYC file moves every balance it holds from the old file's groups to the new. Cost: an
append per holding written (the operation has the records in hand), a dict step per entry
at commit, three per KYC file touched; none per holder. `full_snapshot` counts a whole state
(a new chain, an index rebuilt at the tip, and the tests' recount).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ledger.state import State
from ledger.types import Account, Holding, Kyc

__all__ = [
    "CLIENTS",
    "DIMENSIONS",
    "HISTORY_PREFIXES",
    "NO_GROUP",
    "FrozenRow",
    "SupervisionDelta",
    "SupervisionTally",
    "full_snapshot",
    "groups_of",
]

DIMENSIONS = ("vasp", "country", "category")
NO_GROUP = "none"
CLIENTS = ""  # the pseudo-instrument of the `clients` dimension
CLIENTS_DIMENSION = "clients"
# State namespaces whose every change is kept with its height (accounts, holdings,
# instruments, reserve attestations, VASP licences, parameters, policy, programme): what
# `account` and the aggregates "as of a height" and `reserves` read (ledger/state.py keys).
HISTORY_PREFIXES = (b"a", b"h", b"i", b"r", b"v", b"P", b"Q", b"C")


@dataclass(frozen=True, slots=True)
class FrozenRow:
    """One frozen account (`instrument` "") or frozen amount of one holding. `reason_code`
    None: a holding whose frozen amount changed in a block without a freeze event (a forced
    transfer out of frozen units): its earlier reason stays."""

    address: bytes
    instrument: str
    reason_code: int | None
    legal_reference: str
    height: int


@dataclass(slots=True)
class SupervisionDelta:
    """One block's changes to the supervision index.

    `aggregates`: (instrument, dimension, group) -> [total change, holder count change];
    `frozen`: rows to write; `unfrozen`: (address, instrument) rows to delete."""

    aggregates: dict[tuple[str, str, str], list[int]] = field(default_factory=dict)
    frozen: list[FrozenRow] = field(default_factory=list)
    unfrozen: list[tuple[bytes, str]] = field(default_factory=list)

    def add(self, instrument: str, dimension: str, group: str, total: int, holders: int) -> None:
        slot = (instrument, dimension, group)
        found = self.aggregates.get(slot)
        if found is None:
            self.aggregates[slot] = [total, holders]
        else:
            found[0] += total
            found[1] += holders

    def changed(self) -> list[tuple[str, str, str, int, int]]:
        """The non-zero changes, sorted (deterministic writes)."""
        return sorted((*slot, d[0], d[1]) for slot, d in self.aggregates.items() if d[0] or d[1])


def groups_of(account: Account | None) -> tuple[str, str, str]:
    """The (vasp, country, category) groups of an account's holdings."""
    return _groups_of_kyc(None if account is None else account.kyc)


def _groups_of_kyc(kyc: Kyc | None) -> tuple[str, str, str]:
    if kyc is None:
        return (NO_GROUP, NO_GROUP, NO_GROUP)
    vasp = NO_GROUP if kyc.vasp is None else kyc.vasp.hex()
    return (vasp, kyc.country or NO_GROUP, kyc.category or NO_GROUP)


def _client_of(account: Account | None) -> str | None:
    kyc = None if account is None else account.kyc
    return None if kyc is None or kyc.vasp is None else kyc.vasp.hex()


class SupervisionTally:
    """The supervision index's change, summed as the state is written.

    `State.observe(tally)` has the state call `holding` for every holding it writes and
    `account` for every account whose KYC file or freeze object it replaces (a nonce or a
    role keeps both objects: the common case, not reported), with the records in hand:
    the operation has just read them, so this costs an append per write and no second visit
    to ~3,000 cold records at the end of the block. What is appended is the exact change of
    the index that write makes -- a balance change under the KYC file of its account *at
    that moment*; an account given another file moves each balance it holds from the old
    file to the new -- so the sum of a block's entries is the difference of the index
    before and after it, whatever the order of the writes.

    Savepoints: the state calls `savepoint(token)` and `rollback(token)` alongside its own
    journal, and a rollback drops the entries appended since (a refused transaction, a
    dry-run, an abandoned block take their share back). Writes made outside any savepoint
    (a tool writing the state between blocks, scripts/preload_state.py) are kept too and
    count in the next block. `delta` sums the entries of a block; the chain calls `clear`
    once that block is durable.
    """

    __slots__ = ("_state", "_balances", "_files", "_freezes", "_accounts", "_marks")

    def __init__(self, state: State) -> None:
        self._state = state  # the state observed: its accounts give a holding's KYC file
        # (instrument id, id(the account's KYC file), balance change, holder change): only
        # atomic values, so the garbage collector stops tracking the entries at its first
        # pass (the many thousands written between blocks by a tool included) ...
        self._balances: list[tuple[str, int, int, int]] = []
        # ... and the files themselves here, id -> file (None: no file, no account), which
        # also keeps every id unique until `clear`
        self._files: dict[int, Kyc | None] = {}
        # (address, instrument id, frozen amount before the write)
        self._freezes: list[tuple[bytes, str, int]] = []
        # (address, the account before the write or None)
        self._accounts: list[tuple[bytes, Account | None]] = []
        # savepoint token -> the three lengths when it was taken
        self._marks: dict[int, tuple[int, int, int]] = {}

    # -- called by the state, once per write (the hot path) ----------------------------

    def holding(
        self, instrument_id: str, address: bytes, old: Holding | None, new: Holding | None
    ) -> None:
        """A holding written: `old` before, `new` after (None: absent)."""
        if old is None:
            if new is None:
                return
            change, count = new.balance, 1
            if new.frozen:
                self._freezes.append((address, instrument_id, 0))
        elif new is None:
            change, count = -old.balance, -1
            if old.frozen:
                self._freezes.append((address, instrument_id, old.frozen))
        else:
            if old.frozen != new.frozen:
                self._freezes.append((address, instrument_id, old.frozen))
            change, count = new.balance - old.balance, 0
            if not change:
                return
        account = self._state.accounts.get(address)  # None: no account yet
        kyc = None if account is None else account.kyc
        file_id = id(kyc)
        if file_id not in self._files:
            self._files[file_id] = kyc
        self._balances.append((instrument_id, file_id, change, count))

    def account(
        self,
        address: bytes,
        old: Account | None,
        new: Account,
        balances: Iterable[tuple[str, int]],
    ) -> None:
        """An account written with another KYC file or freeze than `old` (None: it did not
        exist); `balances`: (instrument id, balance) of every holding it has."""
        old_kyc = None if old is None else old.kyc
        if old_kyc is not new.kyc:
            self._files[id(old_kyc)] = old_kyc
            self._files[id(new.kyc)] = new.kyc
            append = self._balances.append
            for instrument_id, balance in balances:
                append((instrument_id, id(old_kyc), -balance, -1))
                append((instrument_id, id(new.kyc), balance, 1))
        self._accounts.append((address, old))

    def savepoint(self, token: int, outermost: bool) -> None:
        if outermost:
            self._marks.clear()
        self._marks[token] = (len(self._balances), len(self._freezes), len(self._accounts))

    def rollback(self, token: int) -> None:
        balances, freezes, accounts = self._marks[token]
        del self._balances[balances:]
        del self._freezes[freezes:]
        del self._accounts[accounts:]

    # -- called by the chain, once per block ---------------------------------------------

    def delta(
        self, events: Iterable[tuple[str, Mapping[str, Any]]], height: int
    ) -> SupervisionDelta:
        """The index's change for the writes since the last `clear`, in the state as it is
        now. `events`: the block's (type, attributes), for the reasons of holding freezes (read
        only when a frozen amount changed, so a lazy iterable costs nothing in a block of
        transfers)."""
        state = self._state
        delta = SupervisionDelta()
        # Summed per (instrument, KYC file identity) first: one dict step per entry; the
        # groups are made once per file, then three dict steps per sum.
        # instrument id -> id(KYC file) -> [balance change, holder change]; the entries of one
        # instrument come in runs (a block of transfers has one), so its map is looked up
        # once per run.
        sums: dict[str, dict[int, list[int]]] = {}
        files = self._files
        last, bucket = None, {}
        for instrument_id, file_id, change, count in self._balances:
            if instrument_id is not last:
                last, bucket = instrument_id, sums.setdefault(instrument_id, {})
            found = bucket.get(file_id)
            if found is None:
                bucket[file_id] = [change, count]
            else:
                found[0] += change
                found[1] += count
        aggregates = delta.aggregates
        groups_cache: dict[int, tuple[str, str, str]] = {}
        for instrument_id, bucket in sums.items():
            for file_id, (total, count) in bucket.items():
                if not (total or count):
                    continue  # money that came and went in the block (a pay-back)
                groups = groups_cache.get(file_id)
                if groups is None:
                    groups = groups_cache[file_id] = _groups_of_kyc(files[file_id])
                for dimension, group in zip(DIMENSIONS, groups, strict=True):
                    slot = (instrument_id, dimension, group)
                    found = aggregates.get(slot)
                    if found is None:
                        aggregates[slot] = [total, count]
                    else:
                        found[0] += total
                        found[1] += count
        # The first entry of an account or holding holds its value before the block: every
        # later one was made on top of it (a rolled-back write took its entry with it).
        seen_accounts: set[bytes] = set()
        for address, old in self._accounts:
            if address not in seen_accounts:
                seen_accounts.add(address)
                _account_changes(delta, address, old, state.accounts.get(address), height)
        if self._freezes:
            reasons = _Reasons(events)
            seen: set[tuple[bytes, str]] = set()
            for address, instrument_id, old_frozen in self._freezes:
                if (address, instrument_id) in seen:
                    continue
                seen.add((address, instrument_id))
                new = state.holdings.get(instrument_id, {}).get(address)
                new_frozen = 0 if new is None else new.frozen
                _holding_freeze(
                    delta, address, instrument_id, old_frozen, new_frozen, reasons, height
                )
        return delta

    def clear(self) -> None:
        """Forget the entries summed: their block is durable."""
        self._balances.clear()
        self._files.clear()
        self._freezes.clear()
        self._accounts.clear()
        self._marks.clear()


def _account_changes(
    delta: SupervisionDelta,
    address: bytes,
    old: Account | None,
    new: Account | None,
    height: int,
) -> None:
    old_client, new_client = _client_of(old), _client_of(new)
    if old_client != new_client:
        if old_client is not None:
            delta.add(CLIENTS, CLIENTS_DIMENSION, old_client, 0, -1)
        if new_client is not None:
            delta.add(CLIENTS, CLIENTS_DIMENSION, new_client, 0, 1)
    old_freeze = None if old is None else old.frozen
    new_freeze = None if new is None else new.frozen
    if new_freeze is not None and new_freeze != old_freeze:
        delta.frozen.append(
            FrozenRow(
                address, "", new_freeze.reason_code, new_freeze.legal_reference, new_freeze.height
            )
        )
    elif new_freeze is None and old_freeze is not None:
        delta.unfrozen.append((address, ""))


def _holding_freeze(
    delta: SupervisionDelta,
    address: bytes,
    instrument_id: str,
    old_frozen: int,
    new_frozen: int,
    reasons: _Reasons,
    height: int,
) -> None:
    if new_frozen == old_frozen:
        return
    if new_frozen == 0:
        delta.unfrozen.append((address, instrument_id))
        return
    reason = reasons.get((address, instrument_id))
    if reason is None:
        delta.frozen.append(FrozenRow(address, instrument_id, None, "", height))
    else:
        delta.frozen.append(FrozenRow(address, instrument_id, reason[0], reason[1], height))


class _Reasons:
    """The block's freeze reasons (`_freeze_reasons`), read from its events the first time
    one is asked for: most blocks change no frozen amount and never read them."""

    __slots__ = ("_events", "_found")

    def __init__(self, events: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        self._events = events
        self._found: dict[tuple[bytes, str], tuple[int, str]] | None = None

    def get(self, slot: tuple[bytes, str]) -> tuple[int, str] | None:
        if self._found is None:
            self._found = _freeze_reasons(self._events)
        return self._found.get(slot)


def _freeze_reasons(
    events: Iterable[tuple[str, Mapping[str, Any]]],
) -> dict[tuple[bytes, str], tuple[int, str]]:
    """(account, instrument) -> (reason code, legal reference) of the block's last partial
    freeze of it (ledger/ops/accounts.py `_freeze_event`)."""
    found = {}
    for kind, attributes in events:
        if kind != "frozen" or "instrument" not in attributes:
            continue
        account, instrument_id = attributes.get("account"), attributes.get("instrument")
        code, reference = attributes.get("reason_code"), attributes.get("legal_reference")
        if isinstance(account, bytes) and isinstance(instrument_id, str):
            found[(account, instrument_id)] = (code, reference)
    return found


def full_snapshot(state: State, height: int) -> SupervisionDelta:
    """The whole index of `state` as one delta from nothing: for a new chain (genesis) and
    for a store written before the index existed. O(state): once per store."""
    delta = SupervisionDelta()
    accounts = state.accounts
    for instrument_id in sorted(state.holdings):
        for address, holding in state.holdings[instrument_id].items():
            for dimension, group in zip(DIMENSIONS, groups_of(accounts.get(address)), strict=True):
                delta.add(instrument_id, dimension, group, holding.balance, 1)
            if holding.frozen:
                delta.frozen.append(FrozenRow(address, instrument_id, None, "", height))
    for address in sorted(accounts):
        _account_changes(delta, address, None, accounts[address], height)
    return delta
