"""Real processes: a validator killed at each step of the driver loop by a named fail point.

One network of four validators (`python -m node start`), fail points taken one after another.
For each fail point a validator is stopped gracefully and restarted with
`KHAZANA_FAILPOINTS=<point>`; it ends itself with exit code 137 the first time the driver
reaches that step (at startup that can be while it catches up, which is a crash at that step
too). Right after the crash its store is read: its committed height and its durable consensus
record (its last signed prevote and precommit). It is restarted without the fail point, and:

- no committed block is lost: its first answered height after restart is >= the crashed
  store's height (and >= the highest height it reported before the crash);
- the chain continues: every validator reaches a height above the one at the crash;
- no validator ever signed a conflicting vote: at the end, every precommit in every node's
  certificates plus every durable record (read after each crash and at the end) is checked
  for two valid signatures by one validator for one (type, height, round) and two values;
  and no node logged evidence of double signing (the validators themselves see every vote);
- every node's blocks agree by height and every certificate verifies against genesis.
"""

from __future__ import annotations

import time

import pytest

from consensus.types import Vote, VoteType, vote_signing_bytes
from ledger.crypto import generate_key
from node.driver import FAILPOINT_EXIT_CODE, FAILPOINTS
from tests.node.netsupport import (
    DOUBLE_SIGN_LOG,
    NAMES,
    Net,
    check_agreement,
    check_certificates,
    find_double_signs,
    free_base_port,
    init_network,
    signed_votes,
)


@pytest.mark.skipif(init_network is None, reason="node/home.py (khazana init) not available")
def test_crash_at_each_failpoint_loses_nothing_and_never_double_signs(tmp_path):
    net = Net(tmp_path / "net", free_base_port(), chain_id="khazana-crashtest")
    crash_records = []
    figures = []
    nonce = 0
    try:
        for name in NAMES:
            net.start(name)
        net.wait(lambda: all(net.height(n) >= 2 for n in NAMES), "first blocks on all four")

        for index, point in enumerate(FAILPOINTS):
            victim = NAMES[index % len(NAMES)]
            others = [n for n in NAMES if n != victim]
            assert net.stop(victim) == 0, net.log(victim)[-1500:]
            net.start(victim, env={"KHAZANA_FAILPOINTS": point})
            started = time.monotonic()
            # A transaction on the way, so the crash can hit a block that carries one.
            net.submit(others[0], nonce, f"F{index}")
            nonce += 1
            reported = 0
            deadline = time.monotonic() + 25
            while net.procs[victim].poll() is None and time.monotonic() < deadline:
                try:
                    reported = max(reported, net.height(victim))
                except OSError:  # it crashed between the poll and the request, or during it
                    break
                time.sleep(0.1)
            code = net.wait_exit(victim, f"{victim} to hit fail point {point}")
            assert code == FAILPOINT_EXIT_CODE, (point, code, net.log(victim)[-1500:])
            assert f"fail point {point} hit" in net.log(victim), point

            crashed = net.read_store(victim)
            if crashed.record is not None:
                crash_records.append(crashed.record)
            tip_at_crash = max(net.height(n) for n in others)

            net.start(victim)
            first = net.first_height(victim)
            assert first >= crashed.height, (point, first, crashed.height)
            assert first >= reported, (point, first, reported)
            net.wait(
                lambda t=tip_at_crash: all(net.height(n) >= t + 2 for n in NAMES),
                f"the chain continues after {point}",
            )
            figures.append((point, crashed.height, round(time.monotonic() - started, 1)))

        top = min(net.height(n) for n in NAMES)
        reference = net.hashes(NAMES[0], top)
        for name in NAMES[1:]:
            assert net.hashes(name, top) == reference, name
    finally:
        net.stop_all()

    views = {name: net.read_store(name) for name in NAMES}
    for view in views.values():
        check_certificates(view, net.genesis)
    assert check_agreement(views) >= 2 + len(FAILPOINTS)
    finals = [v.record for v in views.values() if v.record is not None]
    votes = signed_votes(views.values(), [*crash_records, *finals])
    assert find_double_signs(votes, net.genesis) == []
    for name in NAMES:
        assert DOUBLE_SIGN_LOG not in net.log(name), name
    print("fail point, height at crash, seconds to crash and recover:", figures)


def test_double_sign_check_finds_two_values_for_one_slot_and_nothing_else():
    """The check above must be able to fail: two precommits by one key for one (height,
    round) and two values are found; the same vote twice, or another round, are not."""
    keys = [generate_key(bytes([i]) * 32) for i in range(4)]
    genesis = {
        "chain_id": "khazana-dstest",
        "validators": [{"public_key": k.public_key.hex(), "power": 10} for k in keys],
    }

    def precommit(key, height, round_, value):
        data = vote_signing_bytes(genesis["chain_id"], VoteType.PRECOMMIT, height, round_, value)
        return Vote(VoteType.PRECOMMIT, height, round_, value, key.address, key.sign(data))

    a, b = b"\x01" * 32, b"\x02" * 32
    honest = [precommit(keys[0], 5, 0, a), precommit(keys[0], 5, 0, a), precommit(keys[0], 5, 1, b)]
    assert find_double_signs(honest, genesis) == []
    twice = precommit(keys[1], 5, 0, b)
    found = find_double_signs([*honest, precommit(keys[1], 5, 0, a), twice], genesis)
    assert [(first.value_id, second) for first, second in found] == [(a, twice)]
