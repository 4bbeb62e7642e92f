"""Block sync: certificates are checked against the validator set, blocks must extend our
chain, requests are bounded and rotate among peers, and served responses stop at the tip."""

from __future__ import annotations

import pytest

from consensus.types import Commit, VoteType, vote_signing_bytes
from consensus.wire import encode_message
from ledger.chain import Chain
from node.driver import _verify
from node.messages import SyncedBlock, SyncRequest
from node.sync import SyncError, SyncState, check_synced_block, serve_sync_request
from node.validator_set import consensus_set, schedule_from_chain
from tests.node.test_driver import CHAIN_ID, GENESIS_MS, NAMES, genesis, instrument_tx, key

VALIDATOR_KEYS = [key("validator-" + n) for n in NAMES]


def certificate(height: int, block_hash: bytes, signers=VALIDATOR_KEYS, round_: int = 0) -> Commit:
    data = vote_signing_bytes(CHAIN_ID, VoteType.PRECOMMIT, height, round_, block_hash)
    sigs = sorted((k.address, k.sign(data)) for k in signers)
    return Commit(height, round_, block_hash, tuple(sigs))


@pytest.fixture
def source(tmp_path):
    """A chain with three committed blocks and real certificates."""
    chain = Chain.open(tmp_path / "source.db", genesis())
    for height in range(1, 4):
        pending = chain.build_block(
            [instrument_tx(height - 1, f"S{height}")], GENESIS_MS + height * 1000, b"p" * 20
        )
        cert = certificate(height, pending.header.hash)
        chain.commit(pending, encode_message(cert))
    yield chain
    chain.close()


def synced(chain: Chain, height: int, commit: Commit | None = None) -> SyncedBlock:
    stored = chain.store.blocks.block(height)
    raw = encode_message(commit) if commit else chain.store.blocks.commit(height)
    return SyncedBlock(stored.block, raw)


def test_a_valid_block_and_certificate_pass(source, tmp_path):
    follower = Chain.open(tmp_path / "follower.db", genesis())
    schedule = schedule_from_chain(follower)
    for height in range(1, 4):
        block, commit = check_synced_block(
            synced(source, height),
            height,
            follower.last_block_hash,
            schedule.for_height(height),
            CHAIN_ID,
            _verify,
        )
        follower.commit(follower.execute_block(block), encode_message(commit))
        schedule.record(height)
    assert follower.app_hash == source.app_hash
    follower.close()


def test_a_certificate_without_two_thirds_is_refused(source, tmp_path):
    valset = consensus_set(source.state.validator_set.validators)
    block_hash = source.store.blocks.block(1).hash
    weak = certificate(1, block_hash, VALIDATOR_KEYS[:2])  # 2 of 4 equal powers: not > 2/3
    with pytest.raises(SyncError, match="lacks"):
        check_synced_block(
            synced(source, 1, weak), 1, source_genesis_hash(), valset, CHAIN_ID, _verify
        )
    outsider = certificate(1, block_hash, VALIDATOR_KEYS[:2] + [key("intruder"), key("other")])
    with pytest.raises(SyncError, match="lacks"):
        check_synced_block(
            synced(source, 1, outsider), 1, source_genesis_hash(), valset, CHAIN_ID, _verify
        )
    # Three of four verify: accepted.
    strong = certificate(1, block_hash, VALIDATOR_KEYS[:3])
    check_synced_block(
        synced(source, 1, strong), 1, source_genesis_hash(), valset, CHAIN_ID, _verify
    )


def source_genesis_hash() -> bytes:
    from ledger.genesis import genesis_hash

    return genesis_hash(genesis())


def test_a_certificate_for_another_block_or_height_is_refused(source):
    valset = consensus_set(source.state.validator_set.validators)
    other = certificate(1, source.store.blocks.block(2).hash)
    with pytest.raises(SyncError, match="another block"):
        check_synced_block(
            synced(source, 1, other), 1, source_genesis_hash(), valset, CHAIN_ID, _verify
        )
    with pytest.raises(SyncError, match="expected block 2"):
        check_synced_block(synced(source, 1), 2, source_genesis_hash(), valset, CHAIN_ID, _verify)
    with pytest.raises(SyncError, match="does not extend"):
        check_synced_block(synced(source, 2), 2, b"\x00" * 32, valset, CHAIN_ID, _verify)
    with pytest.raises(SyncError, match="does not decode"):
        check_synced_block(
            SyncedBlock(b"junk", source.store.blocks.commit(1)), 1, b"", valset, CHAIN_ID, _verify
        )
    with pytest.raises(SyncError, match="no validator set"):
        check_synced_block(synced(source, 1), 1, source_genesis_hash(), None, CHAIN_ID, _verify)


def test_serve_stops_at_the_tip_and_at_the_byte_bound(source):
    response = serve_sync_request(source.store, SyncRequest(2, 10), 10**6)
    assert [b.block for b in response.blocks] == [
        source.store.blocks.block(h).block for h in (2, 3)
    ]
    assert serve_sync_request(source.store, SyncRequest(4, 10), 10**6).blocks == ()
    one = len(source.store.blocks.block(1).block) + len(source.store.blocks.commit(1)) + 100
    assert len(serve_sync_request(source.store, SyncRequest(1, 10), one).blocks) == 1
    assert len(serve_sync_request(source.store, SyncRequest(1, 2), 10**6).blocks) == 2


def test_sync_state_one_request_in_flight_timeouts_rotate():
    state = SyncState(batch=16, timeout_s=3)
    peers = (b"a", b"b", b"c")
    assert state.next_request(5, peers, now=0) is None  # not behind
    state.note_peer_height(b"b", 40)
    state.want(40)
    peer, request = state.next_request(5, peers, now=0)
    assert (peer, request) == (b"b", SyncRequest(6, 16))  # the peer that has the blocks
    assert state.next_request(5, peers, now=1) is None  # one outstanding at a time
    assert not state.accept_response(b"a")  # an unsolicited answer is not accepted
    # Timed out: asked again (the only peer ahead), and with nobody ahead, anyone.
    assert state.next_request(5, peers, now=3.5)[0] == b"b"
    assert state.accept_response(b"b")
    state.failed(b"b")  # b lied: its claim is forgotten
    peer, request = state.next_request(5, peers, now=4)
    assert peer in peers and request.max_blocks == 16
    state2 = SyncState(batch=16, timeout_s=3)
    state2.want(7)
    assert state2.next_request(5, peers, now=0)[1] == SyncRequest(6, 2)  # bounded by target
