"""Prometheus metrics (`node/metrics.py`): the updates land in the exposition, each node has
its own registry, and `GET /metrics` is served by hypercorn on its own port."""

from __future__ import annotations

import trio
from prometheus_client.parser import text_string_to_metric_families

from node.metrics import Metrics, MetricsApp, serve_metrics

NAMES = (
    "khazana_height",
    "khazana_round",
    "khazana_round_changes_total",
    "khazana_block_interval_seconds",
    "khazana_blocks_committed_total",
    "khazana_txs_committed_total",
    "khazana_mempool_size",
    "khazana_mempool_bytes",
    "khazana_peers",
    "khazana_catching_up",
)


def samples(metrics: Metrics) -> dict[str, float]:
    text = metrics.exposition().decode()
    return {
        sample.name
        + "".join(f"{{{k}={v}}}" for k, v in sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_exposition_names_every_metric():
    text = Metrics().exposition().decode()
    for name in NAMES:
        assert f"# TYPE {name.removesuffix('_total')}" in text, name


def test_the_process_and_python_series_that_operations_md_promises_are_exported():
    values = samples(Metrics())
    assert values["process_resident_memory_bytes"] > 1_000_000
    assert values["process_open_fds"] >= 1
    assert any(name.startswith("python_info{") for name in values)
    assert any(name.startswith("python_gc_collections_total{") for name in values)


def test_updates_are_reflected():
    metrics = Metrics()
    metrics.block_committed(1, 3)  # the first block after start: no interval
    metrics.block_committed(2, 0, 0.4)
    metrics.block_committed(3, 5, 7.0)
    metrics.set_round(0)
    metrics.set_round(1)
    metrics.set_round(2)
    metrics.set_mempool(12, 3456)
    metrics.set_peers(3)
    metrics.set_catching_up(True)
    metrics.set_state_log(244, 131450)
    got = samples(metrics)
    assert got["khazana_height"] == 3
    assert got["khazana_blocks_committed_total"] == 3
    assert got["khazana_txs_committed_total"] == 8
    assert got["khazana_round"] == 2
    assert got["khazana_round_changes_total"] == 2
    assert got["khazana_block_interval_seconds_count"] == 2
    assert got["khazana_block_interval_seconds_bucket{le=0.5}"] == 1
    assert got["khazana_block_interval_seconds_bucket{le=5.0}"] == 1
    assert got["khazana_block_interval_seconds_bucket{le=10.0}"] == 2
    assert (got["khazana_mempool_size"], got["khazana_mempool_bytes"]) == (12, 3456)
    assert got["khazana_peers"] == 3 and got["khazana_catching_up"] == 1
    assert (got["khazana_state_slices"], got["khazana_state_held_back"]) == (244, 131450)
    metrics.set_catching_up(False)
    assert samples(metrics)["khazana_catching_up"] == 0


def test_two_nodes_in_one_process_do_not_share_numbers():
    a, b = Metrics(), Metrics()
    a.block_committed(5, 1)
    assert samples(a)["khazana_height"] == 5
    assert samples(b)["khazana_height"] == 0


async def _get(port: int, path: str) -> tuple[int, bytes, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), head, body


def test_served_on_its_own_port():
    metrics = Metrics()
    metrics.set_peers(2)

    async def main():
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                port = await nursery.start(serve_metrics, metrics, "127.0.0.1:0")
                status, head, body = await _get(port, "/metrics")
                assert status == 200 and b"text/plain" in head
                assert b"khazana_peers 2.0" in body
                assert (await _get(port, "/"))[0] == 404
                nursery.cancel_scope.cancel()

    trio.run(main)


def test_other_methods_refused():
    app = MetricsApp(Metrics())
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    trio.run(app, {"type": "http", "method": "POST", "path": "/metrics"}, receive, send)
    assert sent[0]["status"] == 405


def test_a_driver_observes_intervals_between_blocks_only_and_says_it_is_not_catching_up(
    tmp_path,
):
    """Block 1 follows the genesis time (1970 on a localnet), not a block: it must not put a
    56-year interval in the histogram; `khazana_catching_up` is set at every commit."""
    import trio.testing

    from tests.node.test_driver import Hub, make_nodes, wait_until

    hub = Hub()
    nodes = make_nodes(tmp_path, hub)
    metrics = Metrics()
    metrics.set_catching_up(True)  # so that setting it back is seen

    async def run_with_metrics(node, task_status=trio.TASK_STATUS_IGNORED):
        driver = node.open()
        if node is nodes[0]:
            driver.metrics = metrics
        await driver.run(task_status=task_status)

    async def main():
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    await nursery.start(run_with_metrics, node)
                await wait_until(lambda: nodes[0].chain.height >= 4)
                nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    values = samples(metrics)
    committed = values["khazana_blocks_committed_total"]
    assert committed >= 4
    assert values["khazana_block_interval_seconds_count"] == committed - 1
    assert values["khazana_block_interval_seconds_sum"] < 60 * committed
    assert values["khazana_catching_up"] == 0
    for node in nodes:
        node.chain.close()
