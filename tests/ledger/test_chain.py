"""The ledger of one node (`ledger.chain.Chain`): blocks built, checked, committed and reopened.

What matters here: a proposer and a validator that execute the same block reach the same
header (app_hash, results_hash); a block whose header lies is refused and changes nothing;
an abandoned block leaves state and tree exactly as committed; a reopened database gives the
same state and app_hash; and each block lands in the store whole.
"""

from __future__ import annotations

import dataclasses

import pytest

from ledger import codec
from ledger.block import compute_txs_hash
from ledger.chain import Chain
from ledger.codes import Code, InvalidBlock
from ledger.commitment import StateTree, verify_proof
from ledger.crypto import generate_key
from ledger.genesis import default_genesis
from ledger.state import account_key
from ledger.store import CorruptDatabaseError
from ledger.tx import TxBody, sign_tx

CHAIN_ID = "khazana-chain-test"
GENESIS_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY_MS = 86_400_000
INSTITUTIONS = ("ministry", "central-bank", "regulator", "auditor")


def key(name: str):
    return generate_key(name.encode().ljust(32, b"\x00")[:32])


def genesis() -> dict:
    return default_genesis(
        validators=[(name, key("validator-" + name).public_key) for name in INSTITUTIONS],
        institutions={name: key(name).address for name in INSTITUTIONS},
        chain_id=CHAIN_ID,
        genesis_time_ms=GENESIS_MS,
    )


class Signer:
    """Signs transactions with the next nonce of each sender, as a wallet would."""

    def __init__(self) -> None:
        self.nonces: dict[str, int] = {}

    def tx(self, sender: str, op: str, args: dict) -> bytes:
        nonce = self.nonces.get(sender, 0)
        self.nonces[sender] = nonce + 1
        body = TxBody(CHAIN_ID, key(sender).address, nonce, op, args)
        return sign_tx(body, [key(sender)]).raw


def setup_txs(signer: Signer) -> list[bytes]:
    """Cash token, two investors, cash issued to alice."""
    return [
        signer.tx(
            "central-bank",
            "register_instrument",
            {
                "id": "PKR",
                "kind": "cash",
                "name": "Digital rupee",
                "currency": "PKR",
                "face_value": 1,
                "decimals": 2,
                "cap": 10**15,
            },
        ),
        *[
            signer.tx(
                "regulator",
                "onboard_investor",
                {
                    "investor": key(name).address,
                    "country": "PK",
                    "category": "retail",
                    "kyc_expiry": "2030-01-01",
                },
            )
            for name in ("alice", "bob")
        ],
        signer.tx(
            "central-bank",
            "issue",
            {"instrument": "PKR", "to": key("alice").address, "amount": 10_000},
        ),
    ]


def transfer(signer: Signer, sender: str, to: str, amount: int) -> bytes:
    return signer.tx(
        sender, "transfer", {"instrument": "PKR", "to": key(to).address, "amount": amount}
    )


def commit_next(chain: Chain, txs: list[bytes], day: int = 1):
    pending = chain.build_block(txs, GENESIS_MS + day * DAY_MS, key("validator-ministry").address)
    chain.commit(pending, b"certificate-%d" % pending.header.height)
    return pending


@pytest.fixture
def two_nodes(tmp_path):
    proposer = Chain.open(tmp_path / "a.db", genesis())
    validator = Chain.open(tmp_path / "b.db", genesis())
    yield proposer, validator
    proposer.close()
    validator.close()


def test_genesis_state_is_committed_at_height_zero(tmp_path):
    chain = Chain.open(tmp_path / "node.db", genesis())
    assert chain.height == 0
    assert chain.store.blocks.latest_height() == 0
    assert chain.store.blocks.app_hash(0) == chain.app_hash
    # The tree over the stored rows is the app_hash: nothing is in memory only.
    assert StateTree.from_items(chain.store.state.iter_state()).root == chain.app_hash
    chain.close()


def test_validator_reaches_the_proposers_header(two_nodes):
    proposer, validator = two_nodes
    signer = Signer()
    pending = proposer.build_block(setup_txs(signer), GENESIS_MS + DAY_MS, b"p" * 20)
    assert [r.code for r in pending.receipts] == [Code.OK] * 4
    checked = validator.execute_block(pending.block)
    assert checked.header == pending.header
    proposer.commit(pending, b"cert")
    validator.commit(checked, b"cert")
    assert proposer.app_hash == validator.app_hash == pending.header.app_hash
    assert validator.state.balance("PKR", key("alice").address) == 10_000


def test_block_with_a_false_app_hash_is_refused_and_changes_nothing(two_nodes):
    proposer, validator = two_nodes
    signer = Signer()
    pending = proposer.build_block(setup_txs(signer), GENESIS_MS + DAY_MS, b"p" * 20)
    lying_header = dataclasses.replace(pending.header, app_hash=b"\x01" * 32)
    lying = dataclasses.replace(pending.block, header=lying_header)
    before = validator.app_hash
    with pytest.raises(InvalidBlock, match="app_hash"):
        validator.execute_block(lying)
    assert validator.app_hash == before
    assert validator.pending is None
    assert validator.state.take_changes() == {}
    # and the honest block still executes afterwards
    validator.execute_block(pending.block)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("height", 5, "height"),
        ("prev_hash", b"\x02" * 32, "prev_hash"),
        ("time_ms", GENESIS_MS, "time"),
        ("chain_id", "other-chain", "chain"),
        ("validators_hash", b"\x03" * 32, "validators_hash"),
        ("txs_hash", b"\x04" * 32, "txs_hash"),
    ],
)
def test_header_fields_are_checked(two_nodes, field, value, message):
    proposer, validator = two_nodes
    pending = proposer.build_block(setup_txs(Signer()), GENESIS_MS + DAY_MS, b"p" * 20)
    bad = dataclasses.replace(
        pending.block, header=dataclasses.replace(pending.header, **{field: value})
    )
    with pytest.raises(InvalidBlock, match=message):
        validator.execute_block(bad)
    assert validator.pending is None


def test_replayed_transaction_is_left_out_by_a_proposer_and_refused_by_a_validator(two_nodes):
    proposer, validator = two_nodes
    signer = Signer()
    first = commit_next(proposer, setup_txs(signer))
    validator.commit(validator.execute_block(first.block), b"cert")
    replay = first.block.txs[:1]  # nonce 0 of central-bank, already executed
    pending = proposer.build_block(list(replay), GENESIS_MS + 2 * DAY_MS, b"p" * 20)
    assert pending.block.txs == ()
    assert [r.code for r in pending.dropped] == [Code.NONCE_USED]
    # A hostile proposer puts it in anyway: the validator refuses the block.
    header = dataclasses.replace(pending.header, txs_hash=compute_txs_hash(replay))
    hostile = dataclasses.replace(pending.block, header=header, txs=replay)
    with pytest.raises(InvalidBlock, match="NONCE_USED"):
        validator.execute_block(hostile)
    assert validator.pending is None and validator.state.take_changes() == {}


def test_abandon_restores_state_and_tree(two_nodes):
    proposer, _ = two_nodes
    signer = Signer()
    commit_next(proposer, setup_txs(signer))
    committed_root = proposer.app_hash
    alice = account_key(key("alice").address)
    committed_alice = proposer.store.state.get_state(alice)
    pending = proposer.build_block(
        [transfer(signer, "alice", "bob", 2_500)], GENESIS_MS + 2 * DAY_MS, b"p" * 20
    )
    assert pending.receipts[0].code == Code.OK
    assert proposer.app_hash != committed_root
    proposer.abandon()
    assert proposer.app_hash == committed_root
    assert proposer.state.balance("PKR", key("alice").address) == 10_000
    assert codec.encode(proposer.state.accounts[key("alice").address].to_map()) == committed_alice
    assert StateTree.from_items(proposer.store.state.iter_state()).root == committed_root


def test_reopen_gives_the_same_state_and_app_hash(tmp_path):
    path = tmp_path / "node.db"
    chain = Chain.open(path, genesis())
    signer = Signer()
    commit_next(chain, setup_txs(signer), day=1)
    commit_next(chain, [transfer(signer, "alice", "bob", n) for n in (1, 2, 3)], day=2)
    root, height = chain.app_hash, chain.height
    alice_balance = chain.state.balance("PKR", key("alice").address)
    chain.close()

    reopened = Chain.open(path, genesis())
    assert (reopened.app_hash, reopened.height) == (root, height)
    assert reopened.state.balance("PKR", key("alice").address) == alice_balance == 10_000 - 6
    # the next block links to the last one and executes on the reloaded state
    commit_next(reopened, [transfer(signer, "bob", "alice", 6)], day=3)
    assert reopened.state.balance("PKR", key("alice").address) == 10_000
    reopened.close()


def test_last_commit_is_the_stored_certificate_of_the_tip_without_a_later_read(tmp_path):
    """The driver starts from `Chain.last_commit` on the trio thread: it must be the tip's
    stored certificate, kept in memory (read when the chain opens, on the store's thread)."""
    path = tmp_path / "node.db"
    chain = Chain.open(path, genesis())
    assert chain.last_commit is None  # genesis: no block, no certificate
    signer = Signer()
    commit_next(chain, setup_txs(signer), day=1)
    commit_next(chain, [transfer(signer, "alice", "bob", 1)], day=2)
    assert chain.last_commit == b"certificate-2" == chain.store.blocks.commit(2)
    pending = chain.build_block([], GENESIS_MS + 3 * DAY_MS, key("validator-ministry").address)
    chain.abandon()  # an abandoned block changes nothing
    assert pending.header.height == 3 and chain.last_commit == b"certificate-2"
    chain.close()
    reopened = Chain.open(path, genesis())
    reopened.close()  # the store is closed: the answer comes from memory
    assert reopened.last_commit == b"certificate-2"


def test_reopen_refuses_state_rows_that_do_not_hash_to_the_app_hash(tmp_path):
    import sqlite3

    path = tmp_path / "node.db"
    chain = Chain.open(path, genesis())
    commit_next(chain, setup_txs(Signer()))
    alice = account_key(key("alice").address)
    chain.close()
    # Someone edits a row behind the node's back.
    conn = sqlite3.connect(path)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    state_table = next(t for t in tables if "state" in t)
    conn.execute(f"DELETE FROM {state_table} WHERE key = ?", (alice,))
    conn.commit()
    conn.close()
    with pytest.raises(CorruptDatabaseError, match="app_hash"):
        Chain.open(path, genesis())


def test_committed_block_is_in_the_store_whole(tmp_path):
    chain = Chain.open(tmp_path / "node.db", genesis())
    signer = Signer()
    pending = commit_next(chain, setup_txs(signer))
    stored = chain.store.blocks.block(1)
    assert stored.header == pending.header.encoded
    assert chain.store.blocks.commit(1) == b"certificate-1"
    for index, receipt in enumerate(pending.receipts):
        record = chain.store.blocks.tx(receipt.tx_id)
        assert (record.height, record.index, record.code) == (1, index, 0)
    issued = chain.store.indexes.events(account=key("alice").address)
    assert any(codec.decode(e.data)["type"] == "issue" for e in issued)
    assert chain.store.indexes.events(instrument="PKR")


def test_account_entry_proves_against_the_committed_app_hash(tmp_path):
    chain = Chain.open(tmp_path / "node.db", genesis())
    commit_next(chain, setup_txs(Signer()))
    alice = account_key(key("alice").address)
    value = chain.store.state.get_state(alice)
    proof = chain.tree.prove(alice)
    header_app_hash = chain.store.blocks.app_hash(chain.height)
    assert verify_proof(header_app_hash, alice, value, proof)
    assert not verify_proof(header_app_hash, alice, value + b"\x00", proof)
    chain.close()
