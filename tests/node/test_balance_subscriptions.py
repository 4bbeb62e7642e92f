"""`balance_change.account='kz1...'` subscriptions (node/events.py): the query a deposit
watcher needs, matching exactly the transactions that changed the account's balance."""

from __future__ import annotations

import pytest

from ledger.crypto import address_to_text
from ledger.types import Event
from node.events import CommittedTx, Query, QueryError, parse_query

A = b"\x0a" * 20
B = b"\x0b" * 20
C = b"\x0c" * 20


def committed(*events: Event) -> CommittedTx:
    return CommittedTx(b"\x01" * 32, 5, 0, b"", 0, "", events)


def change(account: bytes, amount: int) -> Event:
    return Event(
        "balance_change",
        {
            "account": account,
            "amount": amount,
            "balance": 10,
            "cause": "transfer",
            "instrument": "X",
        },
    )


def test_the_query_parses_to_its_canonical_text():
    text = f"balance_change.account='{address_to_text(A)}'"
    query = parse_query(text)
    assert query == Query("Tx", balance_account=A)
    assert query.text == f"tm.event='Tx' AND {text}"
    assert parse_query(query.text) == query
    assert query.accounts == (A,)
    both = parse_query(f"account='{address_to_text(B)}' AND {text}")
    assert both.accounts == (B, A)
    for bad in ("balance_change.account='kz1nope'", "balance_change.amount='5'"):
        with pytest.raises(QueryError):
            parse_query(bad)


def test_it_matches_the_transactions_that_changed_the_balance_only():
    transfer = Event("transfer", {"amount": 5, "from": A, "instrument": "X", "to": B})
    paid = committed(transfer, change(A, -5), change(B, 5))
    named_only = committed(
        Event("frozen", {"account": C, "reason_code": 1, "legal_reference": "r"})
    )
    watch_a = parse_query(f"balance_change.account='{address_to_text(A)}'")
    watch_c = parse_query(f"balance_change.account='{address_to_text(C)}'")
    assert watch_a.matches_tx(paid) and not watch_a.matches_tx(named_only)
    assert not watch_c.matches_tx(paid)
    # account= also matches a transaction that merely names the account.
    assert parse_query(f"account='{address_to_text(C)}'").matches_tx(named_only)
    # A refused transaction has no events: it changes no balance.
    assert not watch_a.matches_tx(committed())
