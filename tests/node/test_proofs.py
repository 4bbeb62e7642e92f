"""Verifiable reads: `account` and `tx` with `prove: true` from a live node verify with
node/verify.py against the trusted validator set alone, and every forgery is refused: a
flipped byte in the record, in a balance, in the header, in a signature of the certificate, a
certificate checked against another validator set, a displayed field that differs from the
proven record, a tx audit path that does not lead to the header's txs_hash."""

from __future__ import annotations

import base64
import copy

import pytest
import trio

from consensus.wire import decode_message, encode_message
from ledger.crypto import address_to_text
from ledger.tx import decode_signed_tx
from node.verify import (
    ProofError,
    verify_account_absence,
    verify_account_proof,
    verify_tx_proof,
)
from tests.node.test_rpc_commit import (
    CHAIN_ID,
    b64,
    cash_tx,
    key,
    live_node,
    signed,
    validator_key,
)

TRUSTED = [(validator_key(0).public_key, 10)]


def _flip(text: str, at: int = -3) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[at] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


@pytest.fixture(scope="module")
def reads(tmp_path_factory):
    """An account with a balance and a tx, read with proofs from a live node."""
    central_bank = address_to_text(key("central-bank").address)

    async def main():
        async with live_node(tmp_path_factory.mktemp("proofs")) as node:
            registered = await node.acall("broadcast_tx_commit", {"tx": b64(cash_tx(0, "PKRC"))})
            assert registered["result"]["tx_result"]["code"] == 0
            issue = signed(
                "central-bank",
                1,
                "issue",
                {"instrument": "PKRC", "to": key("central-bank").address, "amount": 5},
            )
            issued = await node.acall("broadcast_tx_commit", {"tx": b64(issue)})
            # The forgery tests below need this balance: a refusal fails here, never skips.
            assert issued["result"]["tx_result"]["code"] == 0, issued["result"]
            account = await node.acall("account", {"address": central_bank, "prove": True})
            tx = await node.acall("tx", {"hash": registered["result"]["hash"], "prove": True})
            plain = await node.acall("account", {"address": central_bank})
            return account["result"], tx["result"], plain["result"]

    return trio.run(main)


def test_account_proof_verifies_against_the_trusted_set(reads):
    account, _, plain = reads
    state = verify_account_proof(
        account, TRUSTED, CHAIN_ID, address=address_to_text(key("central-bank").address)
    )
    assert state.address == key("central-bank").address
    assert state.account.nonce == 2
    assert state.height >= 2
    # The proven result shows what the plain read shows.
    assert {k: v for k, v in account.items() if k != "proof"} == plain
    assert [(i, h.balance) for i, h in state.balances] == [("PKRC", 5)]


def test_tx_proof_verifies(reads):
    _, tx, _ = reads
    included = verify_tx_proof(tx, TRUSTED, CHAIN_ID, tx_hash=tx["hash"])
    assert included.hash == decode_signed_tx(base64.b64decode(tx["tx"])).tx_id
    assert included.height == tx["height"] and included.index == tx["index"]


def forged(result: dict, edit) -> dict:
    copied = copy.deepcopy(result)
    edit(copied)
    return copied


def _flip_signature(proof: dict) -> None:
    commit = decode_message(base64.b64decode(proof["commit"]))
    (validator, signature), *rest = commit.signatures
    bad = bytes([signature[0] ^ 0x01]) + signature[1:]
    commit = type(commit)(commit.height, commit.round, commit.value_id, ((validator, bad), *rest))
    proof["commit"] = base64.b64encode(encode_message(commit)).decode()


ACCOUNT_FORGERIES = {
    "value byte": lambda r: r["proof"].__setitem__("value", _flip(r["proof"]["value"])),
    "proof byte": lambda r: r["proof"].__setitem__("proof", _flip(r["proof"]["proof"], 5)),
    "header byte": lambda r: r["proof"].__setitem__("header", _flip(r["proof"]["header"], 20)),
    "signature byte": lambda r: _flip_signature(r["proof"]),
    "height": lambda r: r["proof"].__setitem__("height", r["proof"]["height"] + 1),
    "displayed nonce": lambda r: r.__setitem__("nonce", r["nonce"] + 1),
    "other address": lambda r: r.__setitem__("address", address_to_text(key("regulator").address)),
    "no proof": lambda r: r.pop("proof"),
}


@pytest.mark.parametrize("name", sorted(ACCOUNT_FORGERIES))
def test_forged_account_proof_is_refused(reads, name):
    account = reads[0]
    with pytest.raises(ProofError):
        verify_account_proof(forged(account, ACCOUNT_FORGERIES[name]), TRUSTED, CHAIN_ID)


def test_forged_balance_is_refused(reads):
    account, _, _ = reads

    def more(r):
        r["balances"][0]["balance"] += 1

    def flip(r):
        entry = r["proof"]["balances"][0]
        entry["value"] = _flip(entry["value"])

    for edit in (more, flip):
        with pytest.raises(ProofError):
            verify_account_proof(forged(account, edit), TRUSTED, CHAIN_ID)


def test_a_balance_left_out_is_refused(reads):
    # The proven account record lists the instruments it holds: a node that hides a holding
    # (drops it with its proof) no longer matches it.
    account, _, _ = reads
    assert account["instruments"] == ["PKRC"]

    def hide(r):
        r["balances"].pop(0)
        r["proof"]["balances"].pop(0)

    with pytest.raises(ProofError, match="instruments the proven account record lists"):
        verify_account_proof(forged(account, hide), TRUSTED, CHAIN_ID)
    # ... nor can it hide the list itself: the shown field must equal the proven record's.
    with pytest.raises(ProofError):
        verify_account_proof(
            forged(account, lambda r: (hide(r), r.__setitem__("instruments", []))),
            TRUSTED,
            CHAIN_ID,
        )


def test_certificate_from_another_validator_set_or_chain_is_refused(reads):
    account, tx, _ = reads
    others = [(validator_key(i).public_key, 10) for i in range(1, 4)]
    with pytest.raises(ProofError, match="2/3"):
        verify_account_proof(account, others, CHAIN_ID)
    # The real signer is only a quarter of this set's power: below the quorum.
    with pytest.raises(ProofError, match="2/3"):
        verify_tx_proof(tx, [*TRUSTED, *others], CHAIN_ID)
    with pytest.raises(ProofError, match="chain"):
        verify_account_proof(account, TRUSTED, "another-chain")


TX_FORGERIES = {
    "path": lambda r: r["proof"].__setitem__("path", ["00" * 32, *r["proof"]["path"]]),
    "total": lambda r: r["proof"].__setitem__("total", r["proof"]["total"] + 1),
    "index": lambda r: r.__setitem__("index", r["index"] + 1),
    "tx bytes": lambda r: r.__setitem__("tx", _flip(r["tx"], -70)),
    "header byte": lambda r: r["proof"].__setitem__("header", _flip(r["proof"]["header"], 20)),
    "signature byte": lambda r: _flip_signature(r["proof"]),
    "height": lambda r: r.__setitem__("height", r["height"] + 1),
}


@pytest.mark.parametrize("name", sorted(TX_FORGERIES))
def test_forged_tx_proof_is_refused(reads, name):
    tx = reads[1]
    with pytest.raises(ProofError):
        verify_tx_proof(forged(tx, TX_FORGERIES[name]), TRUSTED, CHAIN_ID)


# --------------------------------------------------------------------------- absence


@pytest.fixture(scope="module")
def absence(tmp_path_factory):
    """`account` of an address with no account, with and without `prove`, from a live node."""
    stranger = address_to_text(key("nobody-here").address)

    async def main():
        async with live_node(tmp_path_factory.mktemp("absence")) as node:
            await node.wait_height(2)
            proven = await node.acall("account", {"address": stranger, "prove": True})
            plain = await node.acall("account", {"address": stranger})
            return stranger, proven["error"], plain["error"]

    return trio.run(main)


def test_a_missing_account_is_proven_absent_against_the_trusted_set(absence):
    stranger, proven, plain = absence
    assert proven["code"] == plain["code"] == -32001  # NOT_FOUND, with or without prove
    assert plain["data"] == f"no account {stranger}"  # the plain answer is unchanged
    assert proven["data"]["message"] == plain["data"]
    absent = verify_account_absence(proven["data"], TRUSTED, CHAIN_ID, address=stranger)
    assert absent.address == key("nobody-here").address and absent.height >= 1


ABSENCE_FORGERIES = {
    # "No such account" about one that exists: the proof is of another key's path.
    "existing account": lambda d: d.__setitem__(
        "address", address_to_text(key("central-bank").address)
    ),
    "proof byte": lambda d: d["proof"].__setitem__("proof", _flip(d["proof"]["proof"], 5)),
    "header byte": lambda d: d["proof"].__setitem__("header", _flip(d["proof"]["header"], 20)),
    "signature byte": lambda d: _flip_signature(d["proof"]),
    "no proof": lambda d: d.pop("proof"),
    "not an address": lambda d: d.__setitem__("address", "kz1nothing"),
}


@pytest.mark.parametrize("name", sorted(ABSENCE_FORGERIES))
def test_a_forged_absence_is_refused(absence, name):
    data = absence[1]["data"]
    with pytest.raises(ProofError):
        verify_account_absence(forged(data, ABSENCE_FORGERIES[name]), TRUSTED, CHAIN_ID)


def test_an_absence_is_checked_against_the_address_asked_and_the_chain(absence):
    data = absence[1]["data"]
    asked = address_to_text(key("regulator").address)
    with pytest.raises(ProofError, match="not"):
        verify_account_absence(data, TRUSTED, CHAIN_ID, address=asked)
    with pytest.raises(ProofError, match="chain"):
        verify_account_absence(data, TRUSTED, "another-chain")


def test_the_sdk_checks_an_absence_from_the_error_it_raised(absence):
    from node.client import ProofError as ClientProofError
    from node.client import TrustedValidators
    from node.client import verify_account_absence as sdk_verify_absence
    from node.client.errors import RpcError

    stranger, proven, _ = absence
    trusted = TrustedValidators(CHAIN_ID, (("validator-0", TRUSTED[0][0], TRUSTED[0][1]),))
    error = RpcError(proven["code"], proven["message"], proven["data"])
    assert sdk_verify_absence(error, trusted, stranger).height >= 1
    with pytest.raises(ClientProofError):  # a plain "not found" proves nothing
        sdk_verify_absence(RpcError(-32001, "Not found", f"no account {stranger}"), trusted)
