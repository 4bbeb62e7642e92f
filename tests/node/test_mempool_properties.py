"""Property tests of the mempool's invariants under random admissions, blocks, empty blocks
(expiry) and proposer evictions, from investors of two VASPs, investors without one, a VASP
itself and an institution (the central bank):

- count and memory never exceed their bounds, nor the part of them other senders may use
  (the pool less the reserved room), nor a sender's or a VASP's share;
- the books are exact: every counter equals what the waiting transactions add up to;
- the reserved room is always there: the central bank's next transaction is admissible
  whatever the investors did;
- no transaction is admitted twice, and a block never holds one twice.

Also: `MempoolConfig` (node/config.py) and `MempoolLimits` have the same fields and defaults.
"""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.codes import Code
from ledger.tx import decode_signed_tx, tx_footprint
from node.config import _MEMPOOL_INTS, MempoolConfig
from node.mempool import Mempool, MempoolLimits
from tests.node.test_mempool import CHAIN_ID, commit, key, signed, view
from tests.node.test_mempool_defence import VASP_A, issue, squat_world

SENDERS = ("alice", "bob", "squatter-0", "squatter-1", "squatter-2", "b-client", VASP_A)
MEMO = (0, 1_500, 6_000)

_RAWS: dict[tuple[str, int, int], bytes] = {}


def investor_tx(sender: str, nonce: int, variant: int) -> bytes:
    k = (sender, nonce, variant)
    if k not in _RAWS:
        args = {"instrument": "PKR", "to": key("carol").address, "amount": 1 + variant}
        if MEMO[variant]:
            args["memo"] = b"m" * MEMO[variant]
        _RAWS[k] = signed(sender, nonce, "transfer", args).raw
    return _RAWS[k]


_ISSUES: dict[int, bytes] = {}


def institution_tx(nonce: int) -> bytes:
    if nonce not in _ISSUES:
        _ISSUES[nonce] = issue(nonce)
    return _ISSUES[nonce]


gossip = st.tuples(
    st.just("gossip"),
    st.sampled_from(SENDERS),
    st.sampled_from((0, 0, 0, 0, 1, 2, 7, -1)),  # from the sender's next unsent nonce
    st.integers(0, len(MEMO) - 1),
)
# Mostly admissions (one_of picks a branch about uniformly), so the pool fills and the
# bounds, shares and evictions are reached.
action = st.one_of(
    gossip,
    gossip,
    gossip,
    gossip,
    gossip,
    gossip,
    gossip,
    st.tuples(st.just("burst"), st.integers(0, len(MEMO) - 1)),
    st.tuples(st.just("burst"), st.integers(0, len(MEMO) - 1)),
    st.tuples(st.just("institution"), st.integers(0, 1)),
    st.tuples(st.just("block"), st.integers(0, 3)),
    st.tuples(st.just("empty_blocks"), st.integers(1, 4)),
    st.tuples(st.just("evict"), st.integers(0, 50)),
)

LIMITS = MempoolLimits(
    max_txs=8,
    max_bytes=90_000,
    nonce_window=6,
    max_txs_per_sender=4,
    max_bytes_per_sender=40_000,
    vasp_share_percent=40,
    reserved_percent=30,
    max_parked_per_sender=2,
    parked_share_percent=40,
    ttl_blocks=6,
    parked_ttl_blocks=3,
)


def check_books(mp: Mempool) -> None:
    book, limits = mp._book, mp.limits
    entries = book.entries
    assert len(mp) <= limits.max_txs and book.cost <= limits.max_bytes
    assert book.general[0] <= limits.general_txs and book.general[1] <= limits.general_bytes
    cost = sum(e.cost for e in entries.values())
    assert book.cost == cost and book.wire_bytes == sum(e.size for e in entries.values())
    assert all(e.cost == tx_footprint(e.tx) for e in entries.values())
    general = [0, 0]
    parked = [0, 0]
    groups: dict[bytes, list[int]] = {}
    for sender, waiting in book.senders.items():
        assert waiting.by_nonce and all(
            entries[i].tx.body.sender == sender for i in waiting.by_nonce.values()
        )
        ready = 0
        while waiting.base + ready in waiting.by_nonce:
            ready += 1
        assert waiting.ready == ready
        mine = [entries[i] for i in waiting.by_nonce.values()]
        assert (waiting.count, waiting.cost) == (len(mine), sum(e.cost for e in mine))
        if waiting.reserved:
            continue
        assert waiting.count <= limits.max_txs_per_sender
        assert waiting.cost <= limits.max_bytes_per_sender
        general[0] += waiting.count
        general[1] += waiting.cost
        late = [entries[i] for n, i in waiting.by_nonce.items() if n > waiting.base + ready]
        parked[0] += len(late)
        parked[1] += sum(e.cost for e in late)
        if waiting.group is not None:
            used = groups.setdefault(waiting.group, [0, 0])
            used[0] += waiting.count
            used[1] += waiting.cost
    assert book.general == general and book.parked == parked and book.groups == groups
    for used in groups.values():
        assert used[0] <= limits.vasp_txs and used[1] <= limits.vasp_bytes
    assert sum(len(w.by_nonce) for w in book.senders.values()) == len(entries)


def gossip_one(mp: Mempool, state, height: int, sender: str, offset: int, variant: int) -> None:
    address = key(sender).address
    committed = state.accounts[address].nonce
    nonce = mp._book.expected_nonce(address, committed) + offset
    raw = investor_tx(sender, max(0, nonce), variant)
    was_waiting = mp.has(decode_signed_tx(raw).tx_id)
    before = len(mp)
    result = mp.add_gossiped(raw, view(state, height))
    if was_waiting:
        assert result.code == Code.ALREADY_IN_MEMPOOL and len(mp) == before
    elif result.code == 0:
        assert mp.has(result.tx_id)
        # Admitted once: the same bytes again are refused, by client or by peer.
        assert mp.admit(raw, view(state, height)).code == Code.ALREADY_IN_MEMPOOL


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(action, min_size=20, max_size=80))
def test_random_traffic_keeps_every_invariant(actions):
    state = squat_world(3)
    mp = Mempool(LIMITS, CHAIN_ID)
    height = 2
    bank = key("central-bank").address
    for act in actions:
        kind = act[0]
        if kind == "burst":  # every sender's next transaction at once: the pool fills
            for sender in SENDERS:
                gossip_one(mp, state, height, sender, 0, act[1])
        elif kind == "gossip":
            gossip_one(mp, state, height, *act[1:])
        elif kind == "institution":
            # Its next nonce: the first one it has not sent (after a proposer's eviction,
            # the gap it left).
            nonce = mp._book.expected_nonce(bank, state.accounts[bank].nonce)
            if nonce - state.accounts[bank].nonce < LIMITS.nonce_window:
                raw = institution_tx(nonce)
                # The reserved room: always admissible, whatever the investors hold.
                assert mp.check(raw, view(state, height)).code == 0
                if act[1]:
                    assert mp.admit(raw, view(state, height)).code == 0
        elif kind == "block":
            reaped = mp.reap(act[1], 10**9)
            ids = [t.tx_id for t in reaped]
            assert len(set(ids)) == len(ids)
            receipts = commit(state, reaped, height).receipts  # InvalidBlock would fail here
            height += 1
            mp.remove_committed([r.tx_id for r in receipts], view(state, height))
            assert not any(mp.has(i) for i in ids)
        elif kind == "empty_blocks":
            for _ in range(act[1]):
                commit(state, [], height)
                height += 1
                mp.remove_committed([], view(state, height))
            oldest = min((e.height for e in mp._book.entries.values()), default=height)
            assert height - oldest < LIMITS.ttl_blocks
        else:
            waiting = list(mp.verified_ids)
            if waiting:
                assert mp.evict(waiting[act[1] % len(waiting)])
        check_books(mp)


def test_config_and_limits_have_the_same_fields_defaults_and_keys():
    config_fields = {f.name: f.default for f in dataclasses.fields(MempoolConfig)}
    limit_fields = {f.name: f.default for f in dataclasses.fields(MempoolLimits)}
    assert config_fields == limit_fields
    assert set(_MEMPOOL_INTS) == set(limit_fields)
    # Every config range's bounds build valid limits (the config never admits what the pool
    # would refuse), and the defaults are inside the ranges.
    for name, (low, high) in _MEMPOOL_INTS.items():
        assert low <= limit_fields[name] <= high, name
        MempoolLimits(**{name: low})
    assert MempoolLimits.from_config(MempoolConfig()) == MempoolLimits()
