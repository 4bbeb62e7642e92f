"""Transaction gossip in batches (`node.admission_batch.broadcast_gossip`): admissions flushed together after a block
leave in a few `TxGossip` messages, each within the peer's limits, order and bytes kept."""

from __future__ import annotations

from node import messages
from node.admission_batch import GOSSIP_CHUNK_BYTES, broadcast_gossip
from node.messages import MAX_GOSSIP_TXS, TxGossip


class Hub:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def broadcast(self, message: bytes) -> int:
        self.sent.append(message)
        return 3


def gossiped(txs: list[bytes]) -> list[TxGossip]:
    hub = Hub()
    broadcast_gossip(hub, txs)
    return [messages.decode(m) for m in hub.sent]


def test_nothing_to_gossip_sends_nothing():
    assert gossiped([]) == []


def test_small_transactions_split_by_count():
    txs = [k.to_bytes(4, "big") * 50 for k in range(2 * MAX_GOSSIP_TXS + 5)]
    sent = gossiped(txs)
    assert [len(m.txs) for m in sent] == [MAX_GOSSIP_TXS, MAX_GOSSIP_TXS, 5]
    assert [tx for m in sent for tx in m.txs] == txs


def test_large_transactions_split_by_bytes():
    big = 60_000
    per_message = GOSSIP_CHUNK_BYTES // big  # 17 fit, the 18th would pass the chunk size
    txs = [bytes([k]) * big for k in range(40)]
    sent = gossiped(txs)
    assert [len(m.txs) for m in sent] == [per_message, per_message, 40 - 2 * per_message]
    assert [tx for m in sent for tx in m.txs] == txs
    assert all(len(messages.encode(m)) < messages.MAX_MESSAGE_SIZE for m in sent)
