"""Protocol versions: an upgrade the institutions schedule comes into force at its height on
every node, a node replaying history runs each block under the version of its height, and a
node too old for a version stops before that height instead of forking."""

from __future__ import annotations

import pytest

from ledger.chain import Chain
from ledger.codes import Code
from ledger.genesis import GenesisError, default_genesis, validate_genesis
from ledger.protocol import LATEST_VERSION, PROTOCOL_KEY, UnsupportedProtocol
from ledger.tx import TxBody, sign_tx
from tests.ledger.test_chain import (
    CHAIN_ID,
    DAY_MS,
    GENESIS_MS,
    INSTITUTIONS,
    key,
)

PROPOSER = key("validator-ministry").address


def genesis_at(version: int | None) -> dict:
    doc = default_genesis(
        validators=[(name, key("validator-" + name).public_key) for name in INSTITUTIONS],
        institutions={name: key(name).address for name in INSTITUTIONS},
        chain_id=CHAIN_ID,
        genesis_time_ms=GENESIS_MS,
    )
    if version is None:
        del doc["protocol_version"]  # a genesis written before versions existed
    else:
        doc["protocol_version"] = version
    return doc


class Institutions:
    """Signs with the next nonce of each sender, co-signed by other institutions."""

    def __init__(self) -> None:
        self.nonces: dict[str, int] = {}

    def tx(self, sender: str, op: str, args: dict, cosigners: tuple[str, ...] = ()) -> bytes:
        nonce = self.nonces.get(sender, 0)
        self.nonces[sender] = nonce + 1
        body = TxBody(CHAIN_ID, key(sender).address, nonce, op, args)
        return sign_tx(body, [key(sender), *(key(c) for c in cosigners)]).raw


def upgrade(
    signer: Institutions, version: int, height: int, cosigners=("central-bank", "regulator")
):
    return signer.tx(
        "ministry", "schedule_upgrade", {"version": version, "height": height}, cosigners
    )


def next_block(chain: Chain, txs: list[bytes]):
    day = chain.height + 1
    pending = chain.build_block(txs, GENESIS_MS + day * DAY_MS, PROPOSER)
    chain.commit(pending, b"certificate-%d" % pending.header.height)
    return pending


@pytest.fixture
def chains(tmp_path):
    opened = []

    def open_chain(name: str, version: int | None) -> Chain:
        chain = Chain.open(tmp_path / f"{name}.db", genesis_at(version))
        opened.append(chain)
        return chain

    yield open_chain
    for chain in opened:
        chain.close()


def test_a_genesis_from_before_versions_runs_version_1_and_stores_no_record(chains):
    chain = chains("old", None)
    assert chain.state.protocol_version == 1
    assert chain.store.state.get_state(PROTOCOL_KEY) is None
    new = chains("new", LATEST_VERSION)
    assert new.state.protocol_version == LATEST_VERSION
    assert new.store.state.get_state(PROTOCOL_KEY) is not None
    assert new.app_hash != chain.app_hash


def test_an_upgrade_comes_into_force_at_its_height_and_a_replay_from_genesis_agrees(chains):
    live = chains("live", 1)
    signer = Institutions()
    first = next_block(live, [upgrade(signer, 2, 4)])
    assert first.receipts[0].code == Code.OK, first.receipts[0].log
    assert (live.state.protocol.next_version, live.state.protocol.next_height) == (2, 4)
    blocks = [first]
    versions = [live.state.protocol_version]
    for _ in range(4):
        blocks.append(next_block(live, []))
        versions.append(live.state.protocol_version)
    # Block 4 is the first to run under version 2 (heights 1..5).
    assert versions == [1, 1, 1, 2, 2]
    assert live.state.protocol.next_height == 0
    # A node that joins later replays every block under the version of its height.
    replay = chains("replay", 1)
    for pending in blocks:
        replayed = replay.execute_block(pending.block)
        assert replayed.header.app_hash == pending.header.app_hash
        replay.commit(replayed, b"c")
    assert replay.state.protocol == live.state.protocol
    # And a node reopened from its database keeps the version.
    live.close()
    reopened = chains("live", 1)
    assert reopened.state.protocol_version == 2


def test_a_node_too_old_for_a_version_stops_before_its_height(chains):
    chain = chains("old-code", LATEST_VERSION)
    signer = Institutions()
    scheduled = next_block(chain, [upgrade(signer, LATEST_VERSION + 1, 3)])
    assert scheduled.receipts[0].code == Code.OK, scheduled.receipts[0].log
    next_block(chain, [])  # height 2: still the version this code runs
    root, height = chain.app_hash, chain.height
    with pytest.raises(UnsupportedProtocol, match=f"version {LATEST_VERSION + 1}"):
        chain.build_block([], GENESIS_MS + 30 * DAY_MS, PROPOSER)
    assert (chain.app_hash, chain.height, chain.pending) == (root, height, None)
    assert chain.state.protocol_version == LATEST_VERSION


@pytest.mark.parametrize(
    ("version", "height", "cosigners", "code"),
    [
        (1, 10, ("central-bank", "regulator"), Code.BAD_FIELD),  # not newer than version 1
        (2, 1, ("central-bank", "regulator"), Code.BAD_FIELD),  # not after this block
        (2, 10, ("central-bank",), Code.MISSING_APPROVALS),  # set_policy needs three
    ],
)
def test_refused_upgrades(chains, version, height, cosigners, code):
    chain = chains("refusals", 1)
    signer = Institutions()
    block = next_block(chain, [upgrade(signer, version, height, cosigners)])
    assert block.receipts[0].code == code, block.receipts[0].log
    assert chain.state.protocol.next_height == 0


@pytest.mark.parametrize("version", [0, LATEST_VERSION + 1, "2", True])
def test_a_genesis_naming_a_version_this_node_does_not_run_is_refused(version):
    doc = genesis_at(1)
    doc["protocol_version"] = version
    with pytest.raises(GenesisError, match="protocol_version"):
        validate_genesis(doc)


def test_version_2_counts_institutions_where_version_1_counted_keys(chains):
    """The first rule change behind a version: a second key of the regulator (granted with
    the ministry's co-signature, as version 1 allowed) satisfies a two-approval rule with the
    regulator's first key under version 1, and no longer from the block that runs version 2."""
    chain = chains("rules", 1)
    signer = Institutions()
    deputy = key("regulator-deputy")
    grant = signer.tx(
        "regulator",
        "grant_role",
        {"account": deputy.address, "role": "regulator"},
        ("ministry",),
    )
    assert next_block(chain, [grant]).receipts[0].code == Code.OK

    def change_parameter(days: int) -> bytes:
        body = TxBody(
            CHAIN_ID,
            key("regulator").address,
            signer.nonces.get("regulator", 0),
            "set_parameter",
            {"name": "closed_period_days", "value": days},
        )
        signer.nonces["regulator"] = body.nonce + 1
        return sign_tx(body, [key("regulator"), deputy]).raw

    assert next_block(chain, [change_parameter(20)]).receipts[0].code == Code.OK
    assert chain.state.parameters.closed_period_days == 20
    upgrade_at = chain.height + 2
    assert next_block(chain, [upgrade(signer, 2, upgrade_at)]).receipts[0].code == Code.OK
    refused = next_block(chain, [change_parameter(25)])  # height upgrade_at: version 2
    assert chain.state.protocol_version == 2 and refused.header.height == upgrade_at
    assert refused.receipts[0].code == Code.MISSING_APPROVALS, refused.receipts[0].log
    assert "institutions" in refused.receipts[0].log
    assert chain.state.parameters.closed_period_days == 20
