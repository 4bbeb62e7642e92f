"""What the supervision reads need kept up to date per block: aggregates and the frozen list.

This module owns the *meaning* of the supervision index: which groups a holder falls in, how
one block's writes change the per-group totals and holder counts, and which accounts and
holdings are frozen (with the reason and legal reference of their freeze). It does no I/O:
`ledger/chain.py` computes a `SupervisionDelta` for each block from the block's journal (the
typed records before the block) and the state after it, and `ledger/supervision_store.py`
writes it in the block's own SQLite transaction.

Groups (`DIMENSIONS`): a holder of an instrument counts in the group of its account's KYC
file -- `vasp` (the investor's VASP's address, hex), `country` (ISO 3166-1 alpha-2),
`category` ("retail", ...) -- or in `NO_GROUP` ("none") when its account has no KYC file (an
institution's own account) or no VASP. The `clients` dimension counts accounts, not holdings:
under instrument `CLIENTS` ("") and the VASP's group, the number of accounts whose KYC names
that VASP.

A block's delta is computed from what changed only (`block_delta`): an account whose KYC
file moved it to other groups takes every balance it holds from the old groups to the new;
every other changed holding adds its balance change to its account's groups. Cost: a few dict
lookups per changed key, none per holder.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ledger.state import ACCOUNT, HOLDING, State, holders_prefix
from ledger.types import Account, Holding, Kyc

__all__ = [
    "CLIENTS",
    "DIMENSIONS",
    "HISTORY_PREFIXES",
    "NO_GROUP",
    "FrozenRow",
    "SupervisionDelta",
    "block_delta",
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

_A = ACCOUNT[0]
_H = HOLDING[0]
_ADDRESS = 20
_UNSEEN = object()


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


def holding_address(key: bytes) -> tuple[str, bytes]:
    """(instrument id, address) of a holding key (ledger/state.py `holding_key`)."""
    length = key[1]
    return key[2 : 2 + length].decode("ascii"), key[2 + length :]


def block_delta(
    state: State,
    before: Mapping[bytes, Any],
    events: Iterable[tuple[str, Mapping[str, Any]]],
    height: int,
) -> SupervisionDelta:
    """The supervision index's change for one block.

    `state`: after the block; `before`: state key -> typed record before the block (None:
    absent) for every account and holding key the block wrote (others may be present);
    `events`: the block's (type, attributes), for the reasons of holding freezes (read only
    when a frozen amount changed, so a lazy iterable costs nothing in a block of transfers).

    Two passes. Accounts first: one whose KYC file did not change (a nonce, a role: the
    common case, `replace` keeps the same Kyc object) keeps its groups, and its changed
    holdings are counted in the second pass; one whose KYC file changed (another VASP or
    country) moves every holding it has, changed or not, and is done here whole. Then each
    changed holding of the others: its balance change in its account's groups."""
    delta = SupervisionDelta()
    accounts = state.accounts
    holdings = state.holdings
    combined: dict[tuple[str, tuple[str, str, str]], list[int]] = {}
    moved: set[bytes] = set()  # addresses whose holdings were all counted in the first pass
    # address -> its KYC file after the block, for the accounts the first pass looked up:
    # the second pass then skips the big accounts map for them (a transfer's sender).
    files: dict[bytes, Kyc | None] = {}
    reasons = _Reasons(events)
    for key, old_account in before.items():
        if key[0] != _A or len(key) != 1 + _ADDRESS:
            continue
        address = key[1:]
        new_account = accounts.get(address)
        if old_account is not None and new_account is not None:
            if old_account.kyc is new_account.kyc and old_account.frozen is new_account.frozen:
                files[address] = new_account.kyc
                continue  # nothing the index shows changed
        _account_changes(delta, address, old_account, new_account, height)
        old_groups, new_groups = groups_of(old_account), groups_of(new_account)
        if old_groups == new_groups:
            files[address] = None if new_account is None else new_account.kyc
            continue
        moved.add(address)
        held = set(() if old_account is None else old_account.instruments)
        held.update(() if new_account is None else new_account.instruments)
        for instrument_id in held:
            hkey = holders_prefix(instrument_id) + address
            new = holdings.get(instrument_id, {}).get(address)
            old = before[hkey] if hkey in before else new
            if old is not None:
                _add(combined, (instrument_id, old_groups), -old.balance, -1)
            if new is not None:
                _add(combined, (instrument_id, new_groups), new.balance, 1)
            if hkey in before:
                _holding_freeze(delta, address, instrument_id, old, new, reasons, height)
    _holdings_pass(delta, state, before, moved, files, reasons, height, combined)
    # Per (instrument, the three groups) first: one dict step per holding, three at the end.
    for (instrument_id, groups), (total, count) in combined.items():
        if total or count:
            for dimension, group in zip(DIMENSIONS, groups, strict=True):
                delta.add(instrument_id, dimension, group, total, count)
    return delta


def _holdings_pass(
    delta: SupervisionDelta,
    state: State,
    before: Mapping[bytes, Any],
    moved: set[bytes],
    known: dict[bytes, Kyc | None],
    reasons: _Reasons,
    height: int,
    combined: dict[tuple[str, tuple[str, str, str]], list[int]],
) -> None:
    """The second pass of `block_delta`: each changed holding of an account that did not
    move, its balance change summed per (instrument, the account's KYC file) and added to
    `combined` per (instrument, groups) at the end. The hot loop of a block's index (~2,000
    holdings a block of transfers), so it does the least per key: the key's instrument
    part is looked up once per instrument (no decode, no holders-map lookup per key), the
    sums are keyed by the KYC file's identity (no group triple per key; the file of an
    account the first pass looked up comes from `known`), and a holding
    whose frozen amount did not change goes no further."""
    accounts = state.accounts
    holdings = state.holdings
    # the key's instrument part (HOLDING, length, id) -> (instrument id, its holders map,
    # id(KYC file) -> [total change, holder count change])
    by_prefix: dict[bytes, tuple[str, dict, dict[int, list[int]]]] = {}
    files: dict[int, Any] = {}  # id(KYC file) -> the file (None: no file, no account)
    for key, old in before.items():
        if key[0] != _H:
            continue
        cut = 2 + key[1]
        address = key[cut:]
        if moved and address in moved:
            continue
        prefix = key[:cut]
        found = by_prefix.get(prefix)
        if found is None:
            instrument_id = prefix[2:].decode("ascii")
            found = by_prefix[prefix] = (instrument_id, holdings.get(instrument_id, {}), {})
        new = found[1].get(address)
        if old is None:
            if new is None:
                continue  # created and emptied in the block: no change
            change, count, freeze = new.balance, 1, new.frozen
        elif new is None:
            change, count, freeze = -old.balance, -1, old.frozen
        else:
            change, count, freeze = new.balance - old.balance, 0, old.frozen != new.frozen
        if change or count:
            kyc = known.get(address, _UNSEEN)
            if kyc is _UNSEEN:
                account = accounts.get(address)
                kyc = None if account is None else account.kyc
            sums = found[2]
            slot = sums.get(id(kyc))
            if slot is None:
                sums[id(kyc)] = [change, count]
                files[id(kyc)] = kyc
            else:
                slot[0] += change
                slot[1] += count
        if freeze:
            _holding_freeze(delta, address, found[0], old, new, reasons, height)
    groups_cache: dict[int, tuple[str, str, str]] = {}
    for instrument_id, _holders, sums in by_prefix.values():
        for file_id, (total, count) in sums.items():
            groups = groups_cache.get(file_id)
            if groups is None:
                groups = groups_cache[file_id] = _groups_of_kyc(files[file_id])
            _add(combined, (instrument_id, groups), total, count)


def _add(combined: dict, slot: tuple, total: int, count: int) -> None:
    found = combined.get(slot)
    if found is None:
        combined[slot] = [total, count]
    else:
        found[0] += total
        found[1] += count


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
    old: Holding | None,
    new: Holding | None,
    reasons: _Reasons,
    height: int,
) -> None:
    old_frozen = 0 if old is None else old.frozen
    new_frozen = 0 if new is None else new.frozen
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
