"""Real processes: an observer (`khazana init --observers 1`) follows four validators.

The observer starts after the validators have committed a few blocks (so it has to sync in),
then follows the chain. Checked over JSON-RPC while the network runs: `status` says role
observer, not catching up, and its latest height and hash are the validators' block at that
height; `block` answers the same hash and app_hash as every validator at every height. A
transaction broadcast through the observer reaches the validators and is committed. Checked
in the stores after the run: the observer's blocks agree with the validators', every
certificate verifies, and the observer's key signs no precommit in any certificate and no
vote in its own durable record -- it never votes.
"""

from __future__ import annotations

import pytest

from ledger.crypto import address_from_public_key
from tests.node.netsupport import (
    NAMES,
    Net,
    check_agreement,
    check_certificates,
    free_base_port,
    init_network,
)

OBSERVER = "observer-1"


@pytest.mark.skipif(init_network is None, reason="node/home.py (khazana init) not available")
def test_observer_follows_answers_status_and_block_and_never_votes(tmp_path):
    net = Net(tmp_path / "net", free_base_port(5), chain_id="khazana-obstest", observers=1)
    assert net.names == (*NAMES, OBSERVER)
    try:
        for name in NAMES:
            net.start(name)
        net.wait(lambda: all(net.height(n) >= 3 for n in NAMES), "first blocks on validators")
        first = [net.submit("ministry", i, f"O{i}") for i in range(3)]

        net.start(OBSERVER)
        target = max(net.height(n) for n in NAMES)
        net.wait(lambda: net.height(OBSERVER) >= target + 1, "the observer syncs in and follows")
        net.wait(
            lambda: all(net.rpc(OBSERVER, "tx", hash=h) for h in first),
            "the validators' transactions on the observer",
        )

        # A transaction through the observer is gossiped to the validators and committed.
        via_observer = net.submit(OBSERVER, len(first), "OBS")
        net.wait(
            lambda: all(net.rpc(n, "tx", hash=via_observer) for n in NAMES),
            "a transaction broadcast through the observer committed by the validators",
        )

        def observer_is_at_tip() -> bool:
            status = net.status(OBSERVER)
            sync = status["sync_info"]
            if sync["catching_up"]:
                return False
            height = sync["latest_block_height"]
            for name in NAMES:
                block = net.rpc(name, "block", height=height)
                assert block["block_id"]["hash"] == sync["latest_block_hash"], name
                assert block["block"]["header"]["app_hash"] == sync["latest_app_hash"], name
            # Following, not lagging: within two blocks of the slowest validator.
            return height >= min(net.height(n) for n in NAMES) - 2

        net.wait(observer_is_at_tip, "the observer at the validators' tip, not catching up")
        status = net.status(OBSERVER)
        assert status["node_info"]["role"] == "observer"
        assert status["node_info"]["network"] == net.chain_id
        assert status["validator_info"]["voting_power"] == 0

        top = status["sync_info"]["latest_block_height"]
        reference = net.hashes(OBSERVER, top)
        for name in NAMES:
            assert net.hashes(name, top) == reference, name
    finally:
        net.stop_all()

    views = {name: net.read_store(name) for name in net.names}
    for view in views.values():
        check_certificates(view, net.genesis)
    assert check_agreement(views) >= top
    observer_address = address_from_public_key(net.node_public_key(OBSERVER))
    validator_addresses = {address_from_public_key(net.node_public_key(n)) for n in NAMES}
    signers = {a for v in views.values() for e in v.blocks for a, _ in e.commit.signatures}
    assert observer_address not in signers
    assert signers <= validator_addresses and len(signers) >= 3
    record = views[OBSERVER].record
    assert record is None or (record.last_prevote, record.last_precommit) == (None, None)
    assert record is None or record.last_proposal is None
