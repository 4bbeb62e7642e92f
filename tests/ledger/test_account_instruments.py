"""`Account.instruments`: every account record names the instruments it holds units of.

The list is the state's to keep (`State.put_holding`), not the operations': it appears with a
holding's first unit and goes with its last, survives an operation rewriting the account
from an older copy, is rolled back with the rest, and reloads from the store as it was. It is
what lets a proof of an account's record prove that its listed balances are all of them.
"""

from __future__ import annotations

import dataclasses

from ledger.state import State
from ledger.types import Account, Holding
from tests.ledger.test_ops_harness import Chain
from tests.ledger.test_ops_transfers import BOND, send, world


def listed(chain: Chain, name: str) -> tuple[str, ...]:
    return chain.state.accounts[chain.addr(name)].instruments


def test_an_account_lists_what_it_holds_and_only_that():
    chain = world()
    assert listed(chain, "alice") == ("PKBOND28", "PKR")  # sorted
    assert listed(chain, "bob") == ("PKR",)
    chain.ok("alice", "transfer", send(chain, amount=40))
    assert listed(chain, "bob") == ("PKBOND28", "PKR")  # the first unit adds it
    chain.ok("bob", "transfer", send(chain, to="alice", amount=40))
    assert listed(chain, "bob") == ("PKR",)  # the last unit removes it
    assert chain.state.invariant_violations() == []


def test_a_refused_transfer_leaves_the_list_as_it_was():
    chain = world()
    chain.run("bob", "transfer", send(chain, to="alice", amount=1))  # bob holds no bonds
    assert listed(chain, "bob") == ("PKR",) and listed(chain, "alice") == ("PKBOND28", "PKR")
    assert chain.state.invariant_violations() == []


def test_an_older_copy_of_the_account_cannot_undo_the_list():
    chain = world()
    state = chain.state
    bob = chain.addr("bob")
    stale = state.accounts[bob]  # read before the holding appears, as an operation might
    state.put_holding(BOND, bob, Holding(5))
    state.put_account(dataclasses.replace(stale, name="Bob"))  # written back afterwards
    assert state.accounts[bob].instruments == ("PKBOND28", "PKR")
    assert state.accounts[bob].name == "Bob"
    assert state.invariant_violations() == [f"{BOND}: supply 100 != balances 105"]


def test_a_rollback_restores_the_list_and_a_reload_gives_it_back():
    chain = world()
    state = chain.state
    bob = chain.addr("bob")
    token = state.savepoint()
    state.put_holding(BOND, bob, Holding(5))
    assert state.accounts[bob].instruments == ("PKBOND28", "PKR")
    state.rollback(token)
    assert state.accounts[bob].instruments == ("PKR",)
    reloaded = State.from_items(state.items())
    assert reloaded.accounts == state.accounts
    # Equal lists share one tuple after the reload (memory at a million accounts).
    alice, carol = reloaded.accounts[chain.addr("alice")], reloaded.accounts[bob]
    assert alice.instruments is not carol.instruments  # different lists
    chain.investor("carol")
    chain.issue("PKR", "carol", 5, issuer="central-bank")
    again = State.from_items(chain.state.items())
    assert again.accounts[bob].instruments is again.accounts[chain.addr("carol")].instruments


def test_an_account_created_after_its_first_holding_lists_it():
    chain = world()
    state = chain.state
    newcomer = bytes(range(20))
    state.put_holding("PKR", newcomer, Holding(7))  # no account yet
    state.put_account(Account(newcomer))
    assert state.accounts[newcomer].instruments == ("PKR",)


def test_the_invariant_notices_a_list_out_of_step():
    chain = world()
    state = chain.state
    bob = chain.addr("bob")
    state.accounts[bob] = dataclasses.replace(state.accounts[bob], instruments=())  # bypass
    assert any("lists [] but holds ['PKR']" in p for p in state.invariant_violations())
