"""The ledger state: typed records in dicts, their state keys, and the changes per block.

Theory of operation
-------------------
Operations read typed records (`ledger/types.py`) from `State` and write new ones back with
`put_*` / `delete_*`. Every write marks its state key dirty; `take_changes()` encodes only
the dirty records (sorted by key) and hands them to the commitment and the store as
`dict[bytes, bytes | None]` (None = deleted). A record that did not change is never
re-encoded.

`from_items` (and `StateLoader`, which `Chain.open` streams the store's rows through) rebuilds
a state from its encoded records in one pass, decoding each record strictly.

Savepoints make a transaction (or a whole block) all-or-nothing: `savepoint()` starts
journaling every write with the value it replaced, `rollback(sp)` undoes the writes since,
`release(sp)` keeps them. Operations validate every rule before their first write, so a
refused transaction never needs the journal; the executor still wraps each one in a
savepoint as a second line of defence, `check_transaction` uses one to dry-run, and a
proposer uses one per block.

State keys (the first byte names the namespace)
-----------------------------------------------
    b"a" + address(20)                       Account      -- an account's own entry: one key
    b"h" + len(id)(1) + id + address(20)     Holding      -- all holders of one instrument
                                                             share the prefix b"h"+len+id
    b"i" + id                                Instrument
    b"r" + id                                ReserveAttestation (latest; commodities)
    b"v" + address(20)                       Vasp
    b"k" + public_key(32)                    KeyBinding   -- recovered key -> its account
    b"d" + id                                HolidayCalendar -- an issuer's business days
    b"f" + len(name)(1) + name + YYYY-MM-DD   RateFixing   -- a published rate (version 3)
    b"P"                                     Parameters
    b"Q"                                     Policy
    b"C"                                     Programme (cap and outstanding, USD cents)
    b"S"                                     ValidatorSet (with pending changes)
    b"V"                                     ProtocolRecord (ledger/protocol.py; absent:
                                                             version 1, nothing scheduled)

Instrument ids are 1..32 ASCII characters, so the one-byte length prefix keeps every
instrument's holdings one contiguous key range (a prefix of one id is never confused with
another id). `holders_prefix(id)` gives that range's prefix.

Amounts are ints; there are no floats anywhere and nothing here iterates an unordered
collection in a way that affects state (the holders of an instrument are returned sorted).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date
from typing import Any

from ledger import codec
from ledger.debt_terms import FIXING, RateFixing, fixing_key
from ledger.protocol import PROTOCOL_KEY, ProtocolRecord
from ledger.types import (
    Account,
    Holding,
    HolidayCalendar,
    Instrument,
    KeyBinding,
    Kyc,
    Parameters,
    Policy,
    Programme,
    ReserveAttestation,
    ValidatorSet,
    Vasp,
)

ACCOUNT = b"a"
CALENDAR = b"d"  # business-day calendars ("days")
HOLDING = b"h"
_HOLDING_BYTE = HOLDING[0]
INSTRUMENT = b"i"
RESERVE = b"r"
VASP_PREFIX = b"v"
KEY_BINDING = b"k"
PARAMETERS_KEY = b"P"
POLICY_KEY = b"Q"
PROGRAMME_KEY = b"C"
VALIDATORS_KEY = b"S"

ADDRESS_SIZE = 20
MAX_INSTRUMENT_ID = 32

# Stored records are ours, but bound the decoder anyway: no record comes near these.
_RECORD_MAX_SIZE = 1 << 20
_RECORD_MAX_DEPTH = 8

_MISSING: Any = object()


def account_key(address: bytes) -> bytes:
    return ACCOUNT + address


def holders_prefix(instrument_id: str) -> bytes:
    raw = instrument_id.encode("ascii")
    return HOLDING + bytes((len(raw),)) + raw


def holding_key(instrument_id: str, address: bytes) -> bytes:
    return holders_prefix(instrument_id) + address


def instrument_key(instrument_id: str) -> bytes:
    return INSTRUMENT + instrument_id.encode("ascii")


def reserve_key(instrument_id: str) -> bytes:
    return RESERVE + instrument_id.encode("ascii")


def calendar_key(calendar_id: str) -> bytes:
    return CALENDAR + calendar_id.encode("ascii")


def vasp_key(address: bytes) -> bytes:
    return VASP_PREFIX + address


def key_binding_key(public_key: bytes) -> bytes:
    return KEY_BINDING + public_key


class State:
    """The whole ledger state, typed, with dirty tracking and savepoints.

    Read access is through the attributes (`accounts`, `instruments`, `holdings`, ...) and
    the small helpers below; never mutate those dicts directly -- write through `put_*` so the
    change is journaled and reaches the commitment.
    """

    __slots__ = (
        "accounts",
        "instruments",
        "holdings",
        "reserves",
        "vasps",
        "key_bindings",
        "calendars",
        "fixings",
        "singletons",
        "_prefix_cache",
        "_instrument_sets",
        "_dirty",
        "_journal",
        "_depth",
        "_observer",
    )

    def __init__(
        self,
        *,
        parameters: Parameters,
        policy: Policy,
        programme: Programme,
        validators: ValidatorSet,
    ) -> None:
        self.accounts: dict[bytes, Account] = {}
        self.instruments: dict[str, Instrument] = {}
        # instrument id -> address -> Holding (a holding with balance 0 does not exist)
        self.holdings: dict[str, dict[bytes, Holding]] = {}
        self.reserves: dict[str, ReserveAttestation] = {}
        self.vasps: dict[bytes, Vasp] = {}
        self.key_bindings: dict[bytes, KeyBinding] = {}
        self.calendars: dict[str, HolidayCalendar] = {}
        self.fixings: dict[tuple[str, date], RateFixing] = {}  # (index, day) -> fixing
        # The chain-wide records, keyed by their state key.
        self.singletons: dict[bytes, Any] = {
            PARAMETERS_KEY: parameters,
            POLICY_KEY: policy,
            PROGRAMME_KEY: programme,
            VALIDATORS_KEY: validators,
        }
        self._prefix_cache: dict[str, bytes] = {}
        # Equal `Account.instruments` tuples share one object (most investors hold the same
        # one or two instruments): memory at a million accounts, and a cheap identity check.
        self._instrument_sets: dict[tuple[str, ...], tuple[str, ...]] = {(): ()}
        # state key -> the record to encode at take_changes (None: deleted)
        self._dirty: dict[bytes, Any] = dict(self.singletons)
        # (container, subkey, previous value, state key, previous dirty entry)
        self._journal: list[tuple] = []
        self._depth = 0
        # Told of every holding write and of every account given another KYC file or
        # freeze, with the records in hand (`observe`); None: nobody listens.
        self._observer: Any = None

    # -- construction ---------------------------------------------------------------

    @classmethod
    def from_items(cls, items: Iterable[tuple[bytes, bytes]]) -> State:
        """Rebuild the state from (state key, record bytes) pairs, e.g. a store's contents.

        The result has no dirty keys: it is exactly what the store already holds.
        """
        loader = StateLoader()
        for key, raw in items:
            loader.add(key, raw)
        return loader.finish()

    # -- reads ----------------------------------------------------------------------

    @property
    def parameters(self) -> Parameters:
        return self.singletons[PARAMETERS_KEY]

    @property
    def policy(self) -> Policy:
        return self.singletons[POLICY_KEY]

    @property
    def programme(self) -> Programme:
        return self.singletons[PROGRAMME_KEY]

    @property
    def validator_set(self) -> ValidatorSet:
        return self.singletons[VALIDATORS_KEY]

    @property
    def protocol(self) -> ProtocolRecord:
        """The protocol version in force and the next one scheduled (ledger/protocol.py)."""
        return self.singletons.get(PROTOCOL_KEY, _FIRST_PROTOCOL)

    @property
    def protocol_version(self) -> int:
        """The version of the rules the current block runs under."""
        return self.protocol.version

    def balance(self, instrument_id: str, address: bytes) -> int:
        holding = self.holdings.get(instrument_id, {}).get(address)
        return 0 if holding is None else holding.balance

    def frozen_amount(self, instrument_id: str, address: bytes) -> int:
        holding = self.holdings.get(instrument_id, {}).get(address)
        return 0 if holding is None else holding.frozen

    def supply(self, instrument_id: str) -> int:
        return self.instruments[instrument_id].supply

    def holders(self, instrument_id: str) -> list[tuple[bytes, Holding]]:
        """The holders of an instrument, sorted by address (the state key order)."""
        return sorted(self.holdings.get(instrument_id, {}).items())

    def holder_count(self, instrument_id: str) -> int:
        return len(self.holdings.get(instrument_id, ()))

    def account_for_key(self, public_key: bytes, derived_address: bytes) -> Account | None:
        """The account a signing key currently authorises, or None.

        A recovered key is bound explicitly; any other key authorises the account at its own
        derived address unless that account's key has been replaced.
        """
        binding = self.key_bindings.get(public_key)
        address = binding.address if binding is not None else derived_address
        account = self.accounts.get(address)
        if account is None:
            return None
        if account.public_key is None:
            return account if binding is None else None
        return account if account.public_key == public_key else None

    # -- writes ---------------------------------------------------------------------

    def _write(self, container: dict, subkey: Any, value: Any, key: bytes) -> None:
        if self._depth:
            self._journal.append(
                (
                    container,
                    subkey,
                    container.get(subkey, _MISSING),
                    key,
                    self._dirty.get(key, _MISSING),
                )
            )
        if value is None:
            del container[subkey]
        else:
            container[subkey] = value
        self._dirty[key] = value

    def put_account(self, account: Account) -> None:
        """Store an account record. Its `instruments` are the state's to keep: an operation's
        copy of the record may predate a holding it has since created or emptied, so the
        list the state holds wins (for a new account: the instruments it already holds)."""
        address = account.address
        current = self.accounts.get(address)
        held = current.instruments if current is not None else self._held_by(address)
        if account.instruments is not held and account.instruments != held:
            account = account.with_instruments(held)
        self._write(self.accounts, address, account, ACCOUNT + address)
        observer = self._observer
        if observer is not None and (
            current is None
            or current.kyc is not account.kyc
            or current.frozen is not account.frozen
        ):
            holdings = self.holdings
            observer.account(
                address, current, account, [(i, holdings[i][address].balance) for i in held]
            )

    def _held_by(self, address: bytes) -> tuple[str, ...]:
        held = tuple(sorted(i for i, holders in self.holdings.items() if address in holders))
        return self._instrument_sets.setdefault(held, held)

    def put_holding(self, instrument_id: str, address: bytes, holding: Holding | None) -> None:
        """Set a holding; a zero balance (or None) deletes it, so holders are those with units."""
        prefix = self._prefix_cache.get(instrument_id)
        if prefix is None:
            prefix = self._prefix_cache[instrument_id] = holders_prefix(instrument_id)
        holdings = self.holdings[instrument_id]
        if holding is not None and holding.balance == 0:
            if holding.frozen:
                raise AssertionError(f"frozen {holding.frozen} units with a zero balance")
            holding = None
        old = holdings.get(address)
        if holding is None and old is None:
            return
        self._write(holdings, address, holding, prefix + address)
        if (old is None) is (holding is not None):  # the holding appeared or went away
            self._note_held(address, instrument_id, holding is not None)
        if self._observer is not None:
            self._observer.holding(instrument_id, address, old, holding)

    def _note_held(self, address: bytes, instrument_id: str, held: bool) -> None:
        """Keep the account's `instruments` in step with its holdings (no account yet: its
        creation picks them up, see `put_account`)."""
        account = self.accounts.get(address)
        if account is None:
            return
        others = [i for i in account.instruments if i != instrument_id]
        instruments = tuple(sorted([*others, instrument_id])) if held else tuple(others)
        instruments = self._instrument_sets.setdefault(instruments, instruments)
        self._write(
            self.accounts, address, account.with_instruments(instruments), ACCOUNT + address
        )

    def put_instrument(self, instrument: Instrument) -> None:
        if instrument.id not in self.holdings:
            # The holders map exists for every instrument; creating it is not a state change
            # (no key is dirtied), but a rollback must remove it again.
            if self._depth:
                self._journal.append((self.holdings, instrument.id, _MISSING, None, None))
            self.holdings[instrument.id] = {}
        self._write(self.instruments, instrument.id, instrument, instrument_key(instrument.id))

    def put_reserve(self, reserve: ReserveAttestation) -> None:
        self._write(self.reserves, reserve.instrument, reserve, reserve_key(reserve.instrument))

    def put_calendar(self, calendar: HolidayCalendar) -> None:
        self._write(self.calendars, calendar.id, calendar, calendar_key(calendar.id))

    def put_fixing(self, fixing: RateFixing) -> None:
        subkey = (fixing.name, fixing.day)
        self._write(self.fixings, subkey, fixing, fixing_key(fixing.name, fixing.day))

    def put_vasp(self, vasp: Vasp) -> None:
        self._write(self.vasps, vasp.address, vasp, vasp_key(vasp.address))

    def put_key_binding(self, public_key: bytes, binding: KeyBinding | None) -> None:
        if binding is None and public_key not in self.key_bindings:
            return
        self._write(self.key_bindings, public_key, binding, key_binding_key(public_key))

    def put_parameters(self, parameters: Parameters) -> None:
        self._write(self.singletons, PARAMETERS_KEY, parameters, PARAMETERS_KEY)

    def put_policy(self, policy: Policy) -> None:
        self._write(self.singletons, POLICY_KEY, policy, POLICY_KEY)

    def put_programme(self, programme: Programme) -> None:
        self._write(self.singletons, PROGRAMME_KEY, programme, PROGRAMME_KEY)

    def put_validator_set(self, validators: ValidatorSet) -> None:
        self._write(self.singletons, VALIDATORS_KEY, validators, VALIDATORS_KEY)

    def put_protocol(self, record: ProtocolRecord) -> None:
        self._write(self.singletons, PROTOCOL_KEY, record, PROTOCOL_KEY)

    # -- savepoints -----------------------------------------------------------------

    def observe(self, observer: Any) -> None:
        """Tell `observer` (None: nobody) of the writes from now on, as they happen:
        `holding(instrument id, address, old, new)` for every holding written,
        `account(address, old, new, [(instrument id, balance), ...])` for every account
        written with another KYC file or freeze object than before (or created), and
        `savepoint(token, outermost)` / `rollback(token)` so that it can take back what a
        rolled-back savepoint reported (ledger/supervision.py `SupervisionTally`). Only
        between savepoints: one open now could not be taken back from it."""
        if self._depth:
            raise AssertionError("observe() inside a savepoint")
        self._observer = observer

    def savepoint(self) -> int:
        """Start (or nest) journaling; returns a token for `rollback` / `release`."""
        self._depth += 1
        token = len(self._journal)
        if self._observer is not None:
            self._observer.savepoint(token, self._depth == 1)
        return token

    def rollback(self, token: int) -> None:
        """Undo every write since `savepoint()` returned `token`, newest first."""
        journal = self._journal
        dirty = self._dirty
        while len(journal) > token:
            container, subkey, previous, key, previous_dirty = journal.pop()
            if previous is _MISSING:
                container.pop(subkey, None)
            else:
                container[subkey] = previous
            if key is None:
                continue  # an index entry, not a state key
            if previous_dirty is _MISSING:
                dirty.pop(key, None)
            else:
                dirty[key] = previous_dirty
        if self._observer is not None:
            self._observer.rollback(token)
        self._end(token)

    def release(self, token: int) -> None:
        """Keep the writes since `token`; an enclosing savepoint can still undo them."""
        self._end(token)

    def _end(self, token: int) -> None:
        if self._depth <= 0:
            raise AssertionError("savepoint released or rolled back twice")
        self._depth -= 1
        if self._depth == 0:
            self._journal.clear()

    def values_before(self, token: int) -> dict[bytes, bytes | None]:
        """The encoded records, as they were when `savepoint()` returned `token`, of every
        state key written since (None: the key did not exist). From the journal, so it needs
        no store: how a node puts its state tree back when it abandons a block. Must be called
        inside that savepoint (before rolling it back)."""
        before: dict[bytes, bytes | None] = {}
        encode = codec.encode_presorted
        for _container, _subkey, previous, key, _dirty in self._journal[token:]:
            if key is None or key in before:
                continue  # an index entry, or a key whose first write was seen already
            before[key] = None if previous is _MISSING else encode(previous.to_map())
        return before

    def balance_changes_since(self, token: int) -> list[tuple[str, bytes, int, int]]:
        """Every balance the writes since `savepoint()` returned `token` changed, as
        (instrument id, address, signed change, balance after), in the order of each
        holding's first write; a holding written back to its old balance (a frozen amount
        changed, a payer paying itself) is left out. From the journal, like
        `unbalanced_supply_since`, so whatever writes a holding is seen, whichever operation
        it is. Must be called inside that savepoint."""
        # A holding's state key is HOLDING, the id's length, the id, the address
        # (`holding_key`): the key alone says that an entry is a holding, and of what.
        before: dict[bytes, tuple[dict, bytes, int]] = {}
        for container, subkey, previous, key, _dirty in self._journal[token:]:
            if key is not None and key[0] == _HOLDING_BYTE and key not in before:
                old = 0 if previous is _MISSING else previous.balance
                before[key] = (container, subkey, old)
        changes = []
        for key, (container, address, old) in before.items():
            holding = container.get(address)
            new = 0 if holding is None else holding.balance
            if new != old:
                changes.append((key[2:-ADDRESS_SIZE].decode("ascii"), address, new - old, new))
        return changes

    def unbalanced_supply_since(self, token: int) -> list[str]:
        """Money conservation over the writes since `savepoint()` returned `token`: for every
        instrument a write touched, the change of its supply equals the change of the sum of
        its balances. Walks the journal (the block's writes), not the state: a node checks it
        after every block at a cost proportional to the block (`ledger/transition.py`).
        Must be called inside that savepoint. Empty when money was conserved."""
        instrument_of = {id(holdings): i for i, holdings in self.holdings.items()}
        instrument_of_container = instrument_of.get
        instruments = self.instruments
        before_balance: dict[tuple[str, bytes], int] = {}
        before_supply: dict[str, int] = {}
        # Only the first write of a key in the block holds its value before the block.
        for container, subkey, previous, _key, _dirty in self._journal[token:]:
            instrument_id = instrument_of_container(id(container))
            if instrument_id is not None:
                slot = (instrument_id, subkey)
                if slot not in before_balance:
                    before_balance[slot] = 0 if previous is _MISSING else previous.balance
            elif container is instruments and subkey not in before_supply:
                before_supply[subkey] = 0 if previous is _MISSING else previous.supply
        balance_delta: dict[str, int] = {}
        for (instrument_id, address), before in before_balance.items():
            holding = self.holdings[instrument_id].get(address)
            after = 0 if holding is None else holding.balance
            balance_delta[instrument_id] = balance_delta.get(instrument_id, 0) + after - before
        problems = []
        for instrument_id in sorted(set(balance_delta) | set(before_supply)):
            instrument = self.instruments.get(instrument_id)
            supply_after = 0 if instrument is None else instrument.supply
            supply_delta = supply_after - before_supply.get(instrument_id, supply_after)
            moved = balance_delta.get(instrument_id, 0)
            if moved != supply_delta:
                problems.append(
                    f"{instrument_id}: balances changed by {moved}, supply by {supply_delta}"
                )
        return problems

    def invariant_violations(self) -> list[str]:
        """What should never be true, as sentences (empty when the state is sound).

        Supply equals the sum of balances; frozen amounts are within balances and no holding
        is empty; the programme's outstanding face value is the sum over non-cash instruments;
        every recovered key points to an account that uses it. For tests and audits: O(state).
        """
        problems = []
        outstanding = 0
        for instrument_id in sorted(self.instruments):
            instrument = self.instruments[instrument_id]
            holdings = self.holdings.get(instrument_id, {})
            total = sum(h.balance for h in holdings.values())
            if total != instrument.supply:
                problems.append(f"{instrument_id}: supply {instrument.supply} != balances {total}")
            if instrument.supply > instrument.cap:
                problems.append(f"{instrument_id}: supply {instrument.supply} > cap")
            for address, holding in sorted(holdings.items()):
                if not 0 <= holding.frozen <= holding.balance or holding.balance <= 0:
                    problems.append(f"{instrument_id}/{address.hex()}: bad holding {holding}")
            outstanding += instrument.supply * instrument.usd_face_value
        programme = self.programme
        if programme.outstanding_usd_cents != outstanding:
            problems.append(
                f"programme outstanding {programme.outstanding_usd_cents} != {outstanding}"
            )
        if programme.outstanding_usd_cents > programme.cap_usd_cents:
            problems.append("programme outstanding exceeds its cap")
        for key in sorted(self.key_bindings):
            account = self.accounts.get(self.key_bindings[key].address)
            if account is None or account.public_key != key:
                problems.append(f"key {key.hex()} is bound to an account that does not use it")
        held: dict[bytes, list[str]] = {}
        for instrument_id in sorted(self.holdings):
            for address in self.holdings[instrument_id]:
                held.setdefault(address, []).append(instrument_id)
        for address in sorted(self.accounts):
            listed = list(self.accounts[address].instruments)
            if listed != held.get(address, []):
                problems.append(
                    f"account {address.hex()} lists {listed} but holds {held.get(address, [])}"
                )
        return problems

    # -- export ---------------------------------------------------------------------

    def take_changes(self) -> dict[bytes, bytes | None]:
        """The encoded changes since the last call, sorted by state key; clears the dirty set.

        Allowed inside a savepoint: rolling it back afterwards restores both the records and
        the dirty set as they were at the savepoint (that is how a node abandons a block it
        executed but that was not decided).
        """
        dirty = self._dirty
        # Records' maps are built in key order (ledger/types.py), so the walk-free encoder
        # gives the canonical bytes; this runs for every write of every block.
        encode = codec.encode_presorted
        changes = {}
        for key in sorted(dirty):
            record = dirty[key]
            changes[key] = None if record is None else encode(record.to_map())
        dirty.clear()
        return changes

    @property
    def dirty_keys(self) -> list[bytes]:
        return sorted(self._dirty)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (state key, record bytes) pair, sorted by key: the full export."""
        records: list[tuple[bytes, Any]] = list(self.singletons.items())
        records += [(ACCOUNT + a, r) for a, r in self.accounts.items()]
        records += [(instrument_key(i), r) for i, r in self.instruments.items()]
        records += [(reserve_key(i), r) for i, r in self.reserves.items()]
        records += [(VASP_PREFIX + a, r) for a, r in self.vasps.items()]
        records += [(KEY_BINDING + k, r) for k, r in self.key_bindings.items()]
        records += [(calendar_key(c), r) for c, r in self.calendars.items()]
        records += [(fixing_key(*k), r) for k, r in self.fixings.items()]
        for instrument_id, holdings in self.holdings.items():
            prefix = holders_prefix(instrument_id)
            records += [(prefix + a, r) for a, r in holdings.items()]
        records.sort(key=lambda pair: pair[0])
        for key, record in records:
            yield key, codec.encode_presorted(record.to_map())


_SINGLETON_KEYS = (PARAMETERS_KEY, POLICY_KEY, PROGRAMME_KEY, VALIDATORS_KEY)
_FIRST_PROTOCOL = ProtocolRecord()  # a chain that never scheduled an upgrade


class StateLoader:
    """Builds a `State` from (state key, record bytes) pairs, one pair at a time.

    A node reopening a database with millions of records must not hold them twice: each pair
    is decoded and turned into its typed record as it arrives, so nothing but the records
    themselves stays in memory. `feed` passes the pairs on, so one pass over the store can
    also build the state tree (`Chain.open`).

    Records are decoded strictly (`codec.decode`): the store is ours, but a store holding
    garbage must stop the node rather than be interpreted. Equal KYC files are shared
    between accounts (records are immutable, so sharing is invisible), and a holding's
    address is the same bytes object as its account's: at a million investors each saves
    hundreds of bytes per account.
    """

    __slots__ = ("_singletons", "_records", "_kycs", "_instrument_sets")

    def __init__(self) -> None:
        self._singletons: dict[bytes, dict] = {}
        self._records = _Records()
        self._kycs: dict[Kyc, Kyc] = {}
        self._instrument_sets: dict[tuple[str, ...], tuple[str, ...]] = {(): ()}

    def feed(self, items: Iterable[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
        """Load each pair of `items`, then yield it on (for a second consumer)."""
        for key, raw in items:
            self.add(key, raw)
            yield key, raw

    def add(self, key: bytes, raw: bytes) -> None:
        value = codec.decode(raw, max_size=_RECORD_MAX_SIZE, max_depth=_RECORD_MAX_DEPTH)
        records = self._records
        kind, rest = key[:1], key[1:]
        if kind == ACCOUNT:
            account = Account.from_map(
                value, kycs=self._kycs, instrument_sets=self._instrument_sets
            )
            # Keyed by the record's own address object (one bytes object, not two), as long as
            # it is the key's address; a mismatch stays visible under the key, as stored.
            records.accounts[account.address if account.address == rest else rest] = account
        elif kind == HOLDING:
            size = rest[0]
            instrument_id = rest[1 : 1 + size].decode("ascii")
            address = rest[1 + size :]
            if len(address) != ADDRESS_SIZE:
                raise ValueError(f"bad holding key {key.hex()}")
            account = records.accounts.get(address)
            if account is not None:
                address = account.address  # one bytes object per address
            records.holdings.setdefault(instrument_id, {})[address] = Holding.from_map(value)
        elif kind == INSTRUMENT:
            instrument = Instrument.from_map(value)
            records.instruments[rest.decode("ascii")] = instrument
            records.holdings.setdefault(instrument.id, {})
        elif kind == RESERVE:
            records.reserves[rest.decode("ascii")] = ReserveAttestation.from_map(value)
        elif kind == VASP_PREFIX:
            records.vasps[rest] = Vasp.from_map(value)
        elif kind == KEY_BINDING:
            records.key_bindings[rest] = KeyBinding.from_map(value)
        elif kind == CALENDAR:
            records.calendars[rest.decode("ascii")] = HolidayCalendar.from_map(value)
        elif kind == FIXING:
            fixing = RateFixing.from_map(value)
            if fixing_key(fixing.name, fixing.day) != key:
                raise ValueError(f"rate fixing under the wrong key {key.hex()}")
            records.fixings[(fixing.name, fixing.day)] = fixing
        elif key in _SINGLETON_KEYS or key == PROTOCOL_KEY:
            self._singletons[key] = value
        else:
            raise ValueError(f"unknown state key namespace in {key.hex()}")

    def finish(self) -> State:
        """The state of every pair added; ValueError if a chain-wide record is missing."""
        decoded = self._singletons
        missing = set(_SINGLETON_KEYS) - decoded.keys()
        if missing:
            raise ValueError(f"state lacks the chain-wide records {sorted(missing)}")
        state = State(
            parameters=Parameters.from_map(decoded[PARAMETERS_KEY]),
            policy=Policy.from_map(decoded[POLICY_KEY]),
            programme=Programme.from_map(decoded[PROGRAMME_KEY]),
            validators=ValidatorSet.from_map(decoded[VALIDATORS_KEY]),
        )
        if PROTOCOL_KEY in decoded:
            state.singletons[PROTOCOL_KEY] = ProtocolRecord.from_map(decoded[PROTOCOL_KEY])
        records = self._records
        state.accounts = records.accounts
        state.instruments = records.instruments
        state.holdings = records.holdings
        state.reserves = records.reserves
        state.vasps = records.vasps
        state.key_bindings = records.key_bindings
        state.calendars = records.calendars
        state.fixings = records.fixings
        state._dirty.clear()
        state._instrument_sets = self._instrument_sets
        self._kycs.clear()
        return state


class _Records:
    """The keyed records of a state being loaded (see `StateLoader`)."""

    __slots__ = (
        "accounts",
        "instruments",
        "holdings",
        "reserves",
        "vasps",
        "key_bindings",
        "calendars",
        "fixings",
    )

    def __init__(self) -> None:
        self.accounts: dict[bytes, Account] = {}
        self.instruments: dict[str, Instrument] = {}
        self.holdings: dict[str, dict[bytes, Holding]] = {}
        self.reserves: dict[str, ReserveAttestation] = {}
        self.vasps: dict[bytes, Vasp] = {}
        self.key_bindings: dict[bytes, KeyBinding] = {}
        self.calendars: dict[str, HolidayCalendar] = {}
        self.fixings: dict[tuple[str, date], RateFixing] = {}
