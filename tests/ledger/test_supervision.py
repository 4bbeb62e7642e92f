"""The supervision index (ledger/supervision.py, ledger/supervision_store.py), kept per block.

What matters: after every block the per-group totals and holder counts equal a sum computed
from scratch over the state's holdings; the figures as of any earlier height are the ones that
held then; a holder whose KYC moves (another VASP, another country) moves with its balance;
a whole-account freeze and a partial one are listed with their reason and legal reference
and leave the list when lifted; the index survives a reopen and is rebuilt for a store that
lacks it; account records are readable as of a past height.
"""

from __future__ import annotations

import dataclasses

import pytest

from ledger import supervision_store as sup
from ledger.chain import Chain
from ledger.codes import Code
from ledger.state import account_key, holding_key
from ledger.state_log import decode_log_row, encode_log_row
from ledger.supervision_store import META_HEIGHT
from ledger.types import Account, Holding
from tests.ledger.test_chain import (
    DAY_MS,
    GENESIS_MS,
    Signer,
    genesis,
    key,
)

DIMENSIONS = ("vasp", "country", "category")


def expected_groups(state, dimension: str) -> list[tuple[str, str, int, int]]:
    """Independent: one pass over every holding of the state."""
    found: dict[tuple[str, str], list[int]] = {}
    for instrument_id, holders in state.holdings.items():
        for address, holding in holders.items():
            account = state.accounts.get(address)
            kyc = None if account is None else account.kyc
            if kyc is None:
                group = "none"
            elif dimension == "vasp":
                group = kyc.vasp.hex() if kyc.vasp else "none"
            else:
                group = getattr(kyc, dimension)
            slot = found.setdefault((instrument_id, group), [0, 0])
            slot[0] += holding.balance
            slot[1] += 1
    return sorted((i, g, t, c) for (i, g), (t, c) in found.items())


def indexed(chain: Chain, dimension: str, height: int | None = None):
    return chain.store.db.read_with(sup.groups, None, dimension, height, 10_000)


def commit(chain: Chain, txs: list[bytes], day: int) -> None:
    pending = chain.build_block(txs, GENESIS_MS + day * DAY_MS, key("validator-ministry").address)
    assert [r.code for r in pending.receipts] == [Code.OK] * len(txs), [
        r.log for r in pending.receipts
    ]
    chain.commit(pending, b"certificate")


def onboard(signer: Signer, name: str, country: str, category: str, vasp: str | None) -> bytes:
    args = {
        "investor": key(name).address,
        "country": country,
        "category": category,
        "kyc_expiry": "2030-01-01",
    }
    if vasp is not None:
        args["vasp"] = key(vasp).address
    return signer.tx("regulator", "onboard_investor", args)


def pay(signer: Signer, sender: str, to: str, amount: int) -> bytes:
    args = {"instrument": "PKR", "to": key(to).address, "amount": amount}
    return signer.tx(sender, "transfer", args)


def blocks(signer: Signer) -> list[list[bytes]]:
    cash = {
        "id": "PKR",
        "kind": "cash",
        "name": "Digital rupee",
        "currency": "PKR",
        "face_value": 1,
        "decimals": 2,
        "cap": 10**15,
    }
    return [
        [
            signer.tx("central-bank", "register_instrument", cash),
            signer.tx("regulator", "license_vasp", {"vasp": key("v1").address, "name": "One"}),
            signer.tx("regulator", "license_vasp", {"vasp": key("v2").address, "name": "Two"}),
        ],
        [
            onboard(signer, "alice", "PK", "retail", "v1"),
            onboard(signer, "bob", "AE", "professional", "v2"),
            onboard(signer, "carol", "PK", "retail", None),
            signer.tx(
                "central-bank",
                "issue",
                {"instrument": "PKR", "to": key("alice").address, "amount": 10_000},
            ),
        ],
        [pay(signer, "alice", "bob", 3_000), pay(signer, "alice", "carol", 1_000)],
        [onboard(signer, "bob", "GB", "professional", "v1")],  # moves with its 3,000
        [
            signer.tx(
                "regulator",
                "freeze",
                {"account": key("carol").address, "reason_code": 7, "legal_reference": "FIR-1"},
            ),
            signer.tx(
                "regulator",
                "freeze",
                {
                    "account": key("alice").address,
                    "reason_code": 9,
                    "legal_reference": "Court order 12",
                    "instrument": "PKR",
                    "amount": 500,
                },
            ),
        ],
        [pay(signer, "bob", "alice", 3_000)],  # bob's holding goes away
        [
            signer.tx(
                "regulator",
                "unfreeze",
                {"account": key("carol").address, "reason_code": 7, "legal_reference": "FIR-1"},
            )
        ],
    ]


def test_groups_match_a_full_count_after_every_block_and_as_of_every_height(tmp_path):
    chain = Chain.open(tmp_path / "node.db", genesis())
    signer = Signer()
    history: dict[int, dict[str, list]] = {}
    for day, txs in enumerate(blocks(signer), start=1):
        commit(chain, txs, day)
        history[chain.height] = {d: expected_groups(chain.state, d) for d in DIMENSIONS}
        for dimension in DIMENSIONS:
            assert indexed(chain, dimension) == history[chain.height][dimension]
    for height, figures in history.items():
        for dimension in DIMENSIONS:
            assert indexed(chain, dimension, height) == figures[dimension]
    # bob moved from v2/AE to v1/GB with his balance at height 4
    v1, v2 = key("v1").address.hex(), key("v2").address.hex()
    assert ("PKR", v2, 3_000, 1) in history[3]["vasp"]
    assert ("PKR", "GB", 3_000, 1) in history[4]["country"]
    assert ("PKR", v1, 9_000, 2) in history[4]["vasp"]
    assert all(g != v2 for _, g, _, _ in history[4]["vasp"])
    chain.close()


@pytest.mark.parametrize("slices", [2, 64])  # history keys merged into their table, or held
def test_frozen_list_and_clients_and_account_history(tmp_path, slices):
    path = tmp_path / "node.db"
    options = {"index_slices": slices}
    chain = Chain.open(path, genesis(), store_options=options)
    signer = Signer()
    steps = blocks(signer)
    for day, txs in enumerate(steps[:5], start=1):
        commit(chain, txs, day)
    carol, alice = key("carol").address, key("alice").address
    rows = chain.store.db.read_with(sup.frozen_page, 10, 0)
    assert sorted(rows) == sorted(
        [(carol, "", 7, "FIR-1", 5), (alice, "PKR", 9, "Court order 12", 5)]
    )
    assert chain.store.db.read_with(sup.frozen_accounts, [alice, carol]) == {carol}
    clients = chain.store.db.read_with(sup.groups, "", "clients", None, 100)
    # bob moved to v1 at height 4: v2 has no client left (an empty group is not listed)
    assert [(g, c) for _, g, _, c in clients] == [(key("v1").address.hex(), 2)]
    # as of height 3 bob was v2's client
    then = chain.store.db.read_with(sup.groups, "", "clients", 3, 100)
    assert sorted((g, c) for _, g, _, c in then) == sorted(
        [(key("v1").address.hex(), 1), (key("v2").address.hex(), 1)]
    )
    # the account and its balance as of height 3 (before the freeze at 5)
    old_account, old_holding = chain.store.indexes.history_at(
        [account_key(carol), holding_key("PKR", alice)], 3
    )
    assert old_account is not None and b"FIR-1" not in old_account
    assert old_holding is not None
    for day, txs in enumerate(steps[5:], start=6):
        commit(chain, txs, day)
    rows = chain.store.db.read_with(sup.frozen_page, 10, 0)
    assert rows == [(alice, "PKR", 9, "Court order 12", 5)]
    figures = {d: indexed(chain, d) for d in DIMENSIONS}
    keys = [account_key(key(n).address) for n in ("alice", "bob", "carol")]
    keys += [holding_key("PKR", key(n).address) for n in ("alice", "bob", "carol")]
    past = {h: chain.store.indexes.history_at(keys, h) for h in range(chain.height + 1)}
    # every value as of every height is the state then: the last one is the state now
    assert past[chain.height] == [chain.store.state.get_state(k) for k in keys]
    assert past[0] == [None] * len(keys) and past[3] != past[4]
    chain.close()
    # reopened: the same index and history (the held-back history keys rebuilt from the
    # log); a store without the index (meta gone) gets it rebuilt at the tip
    chain = Chain.open(path, genesis(), store_options=options)
    assert {d: indexed(chain, d) for d in DIMENSIONS} == figures
    assert {h: chain.store.indexes.history_at(keys, h) for h in past} == past
    chain.store.db.write_meta(META_HEIGHT, b"-1")
    chain.close()
    chain = Chain.open(path, genesis(), store_options=options)
    assert {d: indexed(chain, d) for d in DIMENSIONS} == figures
    assert chain.store.db.read_with(sup.since) == chain.height
    assert chain.store.db.read_with(sup.frozen_page, 10, 0) == [(alice, "PKR", None, "", 7)]
    chain.close()


def test_history_log_row_is_the_state_log_format():
    """The history's row is packed straight from the block's pairs; it must read back as the
    state log's rows do (ledger/state_log.py), deletions (None) included."""
    history = [(b"a" + bytes([i]) * 20, None if i % 3 == 0 else bytes([i]) * i) for i in range(9)]
    row = sup._log_row(history)
    assert row == encode_log_row(dict(history))
    assert decode_log_row(row) == history


def test_writes_between_blocks_count_in_the_next_one(tmp_path):
    """A tool writing the state outside any block (scripts/preload_state.py) has its writes
    summed into the next block's delta; a proposal abandoned meanwhile takes nothing away."""
    chain = Chain.open(tmp_path / "node.db", genesis())
    signer = Signer()
    for day, txs in enumerate(blocks(signer)[:3], start=1):
        commit(chain, txs, day)
    state = chain.state
    kyc = state.accounts[key("alice").address].kyc  # PK, retail, VASP v1
    for index in range(5):
        address = bytes([0xE0 + index]) * 20
        state.put_account(Account(address, kyc=kyc))
        state.put_holding("PKR", address, Holding(100 * (index + 1)))
    instrument = state.instruments["PKR"]
    state.put_instrument(dataclasses.replace(instrument, supply=instrument.supply + 1_500))
    pending = chain.build_block([], GENESIS_MS + 4 * DAY_MS, key("validator-ministry").address)
    chain.abandon()
    commit(chain, [], 4)
    for dimension in DIMENSIONS:
        assert indexed(chain, dimension) == expected_groups(chain.state, dimension)
    # alice 6,000 and carol 1,000 (PK) and the five new holders 1,500
    assert ("PKR", "PK", 8_500, 7) in indexed(chain, "country")
    assert pending.header.height == chain.height
    chain.close()
