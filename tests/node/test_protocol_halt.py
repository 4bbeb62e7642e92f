"""A network whose institutions activate a protocol version the nodes' code does not run: every
node stops before that height with the version named (node/app.py `EXIT_PROTOCOL_TOO_NEW`), and
none of them commits a block under rules it does not know -- no fork, no crash.

In-process, four validators on the in-memory hub of tests/node/test_driver.py, virtual time."""

from __future__ import annotations

import trio

from ledger.protocol import LATEST_VERSION, UnsupportedProtocol
from ledger.tx import TxBody, sign_tx
from node.app import run_driver_until_store_fails
from tests.node.test_driver import CHAIN_ID, Hub, agree, key, make_nodes, run, wait_until

ACTIVATION = 6


def schedule_too_new() -> bytes:
    body = TxBody(
        CHAIN_ID,
        key("ministry").address,
        0,
        "schedule_upgrade",
        {"version": LATEST_VERSION + 1, "height": ACTIVATION},
    )
    return sign_tx(body, [key("ministry"), key("central-bank"), key("regulator")]).raw


def test_every_node_stops_before_a_version_it_does_not_run(tmp_path):
    hub = Hub()
    nodes = make_nodes(tmp_path, hub)
    failures: dict[str, Exception | None] = {}

    async def run_node(node, task_status=trio.TASK_STATUS_IGNORED):
        driver = node.open()
        task_status.started()
        failures[node.name] = await run_driver_until_store_fails(driver)

    async def main():
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    await nursery.start(run_node, node)
                result = await nodes[0].driver.submit(schedule_too_new())
                assert result.ok, result.log
                await wait_until(lambda: len(failures) == len(nodes))

    run(main)
    for node in nodes:
        failure = failures[node.name]
        assert isinstance(failure, UnsupportedProtocol), (node.name, failure)
        assert (failure.height, failure.version) == (ACTIVATION, LATEST_VERSION + 1)
        assert node.chain.height == ACTIVATION - 1, node.name
    agree(nodes, ACTIVATION - 1)
    # Started again with the same code, a node stops at once rather than wait at the height.
    node = nodes[0]
    node.chain.close()

    async def restart():
        with trio.fail_after(10):
            return await run_driver_until_store_fails(node.open())

    failure = trio.run(restart)
    assert isinstance(failure, UnsupportedProtocol) and failure.height == ACTIVATION
    for node in nodes:
        node.chain.close()
