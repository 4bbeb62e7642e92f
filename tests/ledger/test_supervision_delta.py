"""`SupervisionTally` (ledger/supervision.py) against a full count, on random blocks.

What matters: whatever a block writes -- holdings created, emptied, moved, frozen in part;
accounts created, given another KYC file (another VASP, country or category, or the same
groups in a new file), frozen or unfrozen, or only their nonce bumped -- the delta the index
applies equals the difference of two full counts of the state, before and after the block;
and the frozen list's rows are exactly the accounts and holdings whose freeze changed. The
tally is summed from the writes as they happen, so this is also the check that a savepoint
rolled back inside the block (a refused transaction, a dry-run) takes its writes' share
back, that writes made outside any savepoint (a tool between blocks) still count, and that
the sums, keyed by KYC file identity, count what a plain count counts.
"""

from __future__ import annotations

import dataclasses
from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.state import State
from ledger.supervision import SupervisionTally, full_snapshot
from ledger.types import (
    Account,
    Freeze,
    Holding,
    Instrument,
    Kyc,
    Parameters,
    Policy,
    Programme,
    ValidatorSet,
)

ADDRESSES = [bytes([i]) * 20 for i in range(1, 7)]
INSTRUMENTS = ("PKR", "GOLD")
VASPS = (None, b"\x50" * 20, b"\x51" * 20)
FILES = st.none() | st.builds(
    lambda vasp, country, category: Kyc(country, category, date(2030, 1, 1), b"\x09" * 20, vasp),
    st.sampled_from(VASPS),
    st.sampled_from(("PK", "AE")),
    st.sampled_from(("retail", "professional")),
)
FREEZES = st.none() | st.builds(
    Freeze, st.integers(1, 2), st.sampled_from(("s.1", "s.2")), st.just(1)
)
HOLDINGS = st.integers(0, 4).flatmap(
    lambda balance: st.builds(Holding, st.just(balance), st.integers(0, balance))
)
WRITE = st.one_of(
    st.tuples(
        st.just("holding"), st.sampled_from(ADDRESSES), st.sampled_from(INSTRUMENTS), HOLDINGS
    ),
    st.tuples(st.just("kyc"), st.sampled_from(ADDRESSES), FILES),
    st.tuples(st.just("freeze"), st.sampled_from(ADDRESSES), FREEZES),
    st.tuples(st.just("nonce"), st.sampled_from(ADDRESSES)),
)


def empty_state() -> State:
    state = State(
        parameters=Parameters(),
        policy=Policy({}),
        programme=Programme(10**12),
        validators=ValidatorSet(()),
    )
    for instrument_id in INSTRUMENTS:
        state.put_instrument(
            Instrument(
                instrument_id, "cash", instrument_id, None, "PKR", 1, 0, 10**9, 0, b"\0" * 20
            )
        )
    return state


def apply(state: State, write: tuple) -> None:
    kind, address = write[0], write[1]
    account = state.accounts.get(address)
    if kind == "holding":
        state.put_holding(write[2], address, write[3])
    elif kind == "kyc":
        state.put_account(dataclasses.replace(account or Account(address), kyc=write[2]))
    elif kind == "freeze":
        state.put_account(dataclasses.replace(account or Account(address), frozen=write[2]))
    elif account is not None:  # a nonce: the same KYC file and freeze objects
        state.put_account(dataclasses.replace(account, nonce=account.nonce + 1))


def counts(state: State) -> dict[tuple[str, str, str], tuple[int, int]]:
    return {slot[:3]: slot[3:] for slot in full_snapshot(state, 0).changed()}


def frozen_keys(state: State) -> dict[tuple[bytes, str], object]:
    found: dict[tuple[bytes, str], object] = {
        (a, ""): account.frozen for a, account in state.accounts.items() if account.frozen
    }
    for instrument_id, holders in state.holdings.items():
        for address, holding in holders.items():
            if holding.frozen:
                found[(address, instrument_id)] = holding.frozen
    return found


# A block: groups of writes, each in its own savepoint (a transaction) kept or rolled back.
BLOCK = st.lists(st.tuples(st.lists(WRITE, max_size=6), st.booleans()), max_size=8)


@settings(max_examples=150, deadline=None)
@given(st.lists(WRITE, max_size=25), st.lists(WRITE, max_size=6), BLOCK, st.booleans())
def test_tally_is_the_difference_of_two_full_counts(setup, between, block, abandon_first):
    state = empty_state()
    for write in setup:
        apply(state, write)
    tally = SupervisionTally(state)
    state.observe(tally)
    counted_before, frozen_before = counts(state), frozen_keys(state)
    for write in between:  # outside any savepoint: a tool writing the state between blocks
        apply(state, write)
    if abandon_first:  # a block executed and abandoned (not decided) takes nothing away
        token = state.savepoint()
        for writes, _ in block:
            for write in writes:
                apply(state, write)
        state.rollback(token)
    token = state.savepoint()
    for writes, keep in block:
        inner = state.savepoint()
        for write in writes:
            apply(state, write)
        if keep:
            state.release(inner)
        else:
            state.rollback(inner)
    delta = tally.delta(iter(()), 7)
    counted_after, frozen_after = counts(state), frozen_keys(state)
    state.release(token)
    tally.clear()

    expected = {}
    for slot in counted_before.keys() | counted_after.keys():
        total_before, holders_before = counted_before.get(slot, (0, 0))
        total_after, holders_after = counted_after.get(slot, (0, 0))
        if (total_after - total_before, holders_after - holders_before) != (0, 0):
            expected[slot] = (total_after - total_before, holders_after - holders_before)
    assert {c[:3]: c[3:] for c in delta.changed()} == expected

    assert sorted(delta.unfrozen) == sorted(frozen_before.keys() - frozen_after.keys())
    changed = {k for k, v in frozen_after.items() if frozen_before.get(k) != v}
    assert sorted((r.address, r.instrument) for r in delta.frozen) == sorted(changed)
    # the next block starts from nothing
    assert tally.delta(iter(()), 8).changed() == []
