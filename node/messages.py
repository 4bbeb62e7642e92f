"""The node's peer-message envelope: what travels inside one authenticated p2p message.

Every message is one canonical msgpack array (`ledger.codec`), its first item the kind:

    [1, consensus: bin]                       consensus.wire bytes of a Proposal/Vote/Commit
    [2, [tx: bin, ...]]                       tx gossip: a batch of signed transactions
    [3, from_height: int, max_blocks: int]    sync request: blocks from `from_height` on
    [4, [[block: bin, commit: bin], ...]]     sync response: consecutive blocks + certificates
    [5, height: int, latest_hash: bin]        status: the sender's committed tip

Decoding is strict (canonical encoding, exact arity, types, bounds; consensus payloads go
through `consensus.wire.decode_message`). Anything else raises `MessageError`: a remote
protocol error, which the driver reports to the `PeerManager` as misbehaviour. Encoding our
own messages never fails for well-formed inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.errors import RemoteProtocolError
from consensus.types import Commit, Proposal, Vote
from consensus.wire import WireError, decode_message, encode_message
from ledger import codec
from ledger.codes import LedgerError

KIND_CONSENSUS = 1
KIND_TXS = 2
KIND_SYNC_REQUEST = 3
KIND_SYNC_RESPONSE = 4
KIND_STATUS = 5

MAX_MESSAGE_SIZE = 4 * 1024 * 1024  # the PeerManager's default reassembled-message limit
MAX_GOSSIP_TXS = 1024
MAX_SYNC_BLOCKS = 64
MAX_HEIGHT = 2**63 - 1
HASH_SIZE = 32


class MessageError(RemoteProtocolError, ValueError):
    """A peer sent bytes that are not a valid node message (a remote protocol error)."""


@dataclass(frozen=True, slots=True)
class ConsensusMessage:
    message: Proposal | Vote | Commit


@dataclass(frozen=True, slots=True)
class TxGossip:
    txs: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class SyncRequest:
    from_height: int
    max_blocks: int


@dataclass(frozen=True, slots=True)
class SyncedBlock:
    """A committed block's bytes and the consensus.wire bytes of its commit certificate."""

    block: bytes
    commit: bytes


@dataclass(frozen=True, slots=True)
class SyncResponse:
    blocks: tuple[SyncedBlock, ...]


@dataclass(frozen=True, slots=True)
class Status:
    height: int
    latest_hash: bytes


NodeMessage = ConsensusMessage | TxGossip | SyncRequest | SyncResponse | Status


def encode(message: NodeMessage) -> bytes:
    """The canonical bytes of one of our own messages."""
    match message:
        case ConsensusMessage(inner):
            obj: list = [KIND_CONSENSUS, encode_message(inner)]
        case TxGossip(txs):
            obj = [KIND_TXS, list(txs)]
        case SyncRequest(from_height, max_blocks):
            obj = [KIND_SYNC_REQUEST, from_height, max_blocks]
        case SyncResponse(blocks):
            obj = [KIND_SYNC_RESPONSE, [[b.block, b.commit] for b in blocks]]
        case Status(height, latest_hash):
            obj = [KIND_STATUS, height, latest_hash]
        case _:
            raise TypeError(f"not a node message: {type(message).__name__}")
    return codec.encode(obj)


def decode(data: bytes) -> NodeMessage:
    """Parse a peer's message strictly; `MessageError` for anything that is not valid."""
    try:
        obj = codec.decode(data, max_size=MAX_MESSAGE_SIZE, max_depth=3)
    except LedgerError as exc:
        raise MessageError(f"undecodable node message: {exc}") from None
    if type(obj) is not list or not obj or type(obj[0]) is not int:
        raise MessageError("a node message is an array whose first item is its kind")
    kind, fields = obj[0], obj[1:]
    if kind == KIND_CONSENSUS:
        _arity(fields, 1, "consensus")
        if type(fields[0]) is not bytes:
            raise MessageError("consensus payload must be bytes")
        try:
            inner = decode_message(fields[0], max_size=MAX_MESSAGE_SIZE)
        except WireError as exc:
            raise MessageError(f"bad consensus payload: {exc}") from None
        if not isinstance(inner, Proposal | Vote | Commit):
            raise MessageError(f"consensus payload {type(inner).__name__} is not sent alone")
        return ConsensusMessage(inner)
    if kind == KIND_TXS:
        _arity(fields, 1, "tx gossip")
        txs = fields[0]
        if type(txs) is not list or not 0 < len(txs) <= MAX_GOSSIP_TXS:
            raise MessageError(f"tx gossip carries 1..{MAX_GOSSIP_TXS} transactions")
        if any(type(tx) is not bytes or not tx for tx in txs):
            raise MessageError("every gossiped transaction is non-empty bytes")
        return TxGossip(tuple(txs))
    if kind == KIND_SYNC_REQUEST:
        _arity(fields, 2, "sync request")
        from_height, max_blocks = fields
        if not _int_in(from_height, 1, MAX_HEIGHT) or not _int_in(max_blocks, 1, MAX_SYNC_BLOCKS):
            raise MessageError(f"sync request wants a height >= 1 and 1..{MAX_SYNC_BLOCKS} blocks")
        return SyncRequest(from_height, max_blocks)
    if kind == KIND_SYNC_RESPONSE:
        _arity(fields, 1, "sync response")
        items = fields[0]
        if type(items) is not list or len(items) > MAX_SYNC_BLOCKS:
            raise MessageError(f"sync response carries at most {MAX_SYNC_BLOCKS} blocks")
        blocks = []
        for item in items:
            if type(item) is not list or len(item) != 2 or any(type(x) is not bytes for x in item):
                raise MessageError("a synced block is [block: bytes, commit: bytes]")
            blocks.append(SyncedBlock(item[0], item[1]))
        return SyncResponse(tuple(blocks))
    if kind == KIND_STATUS:
        _arity(fields, 2, "status")
        height, latest_hash = fields
        if not _int_in(height, 0, MAX_HEIGHT):
            raise MessageError("status height out of range")
        if type(latest_hash) is not bytes or len(latest_hash) != HASH_SIZE:
            raise MessageError(f"status hash must be {HASH_SIZE} bytes")
        return Status(height, latest_hash)
    raise MessageError(f"unknown node message kind {kind}")


def _arity(fields: list, n: int, what: str) -> None:
    if len(fields) != n:
        raise MessageError(f"{what} message has {len(fields)} fields, expected {n}")


def _int_in(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high
