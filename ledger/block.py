"""Blocks and headers: their canonical bytes, their hashes, and the strict decoder.

    header = {"app_hash": bytes32, "chain": str, "height": int, "prev_hash": bytes32,
              "proposer": bytes20, "results_hash": bytes32, "time_ms": int,
              "txs_hash": bytes32, "validators_hash": bytes32}
    block  = {"header": header, "txs": [signed transaction bytes, ...]}

- `block_hash(header)` = hash256(encode(header)): the header commits to everything else.
- `txs_hash` = hash256(encode([tx_id, ...])) over the transaction ids in block order (ids
  name bodies, so re-signing a transaction never changes the hash).
- `app_hash` is the state root after executing this block (immediate execution);
  `results_hash` commits to each transaction's code and events (not to its log text, so
  rewording a message never forks the chain); `validators_hash` to the validator set that
  signs this block. The first block's `prev_hash` is the genesis hash.
- `proposer` is the address of the proposing validator's key.

Decoding bytes from peers is strict: exact keys, exact types and sizes, canonical encoding;
anything else is a `DecodeError` with a stable code, never another exception.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ledger import codec
from ledger.codes import Code, DecodeError, InvalidBlock, LedgerError
from ledger.crypto import hash256
from ledger.tx import CHAIN_ID_PATTERN, decode_signed_tx
from ledger.types import Receipt, Validator

HASH_SIZE = 32
ADDRESS_SIZE = 20
MAX_BLOCK_BYTES = 8 * 1024 * 1024
MAX_BLOCK_TXS = 20_000
MAX_HEIGHT = 2**63 - 1
_HEADER_KEYS = (
    "app_hash",
    "chain",
    "height",
    "prev_hash",
    "proposer",
    "results_hash",
    "time_ms",
    "txs_hash",
    "validators_hash",
)
_HASH_FIELDS = ("app_hash", "prev_hash", "results_hash", "txs_hash", "validators_hash")


@dataclass(frozen=True, slots=True)
class Header:
    chain_id: str
    height: int
    time_ms: int
    prev_hash: bytes
    txs_hash: bytes
    app_hash: bytes
    results_hash: bytes
    proposer: bytes
    validators_hash: bytes
    encoded: bytes = field(init=False, repr=False, compare=False)
    hash: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_header(self.to_obj())
        encoded = codec.encode(self.to_obj())
        object.__setattr__(self, "encoded", encoded)
        object.__setattr__(self, "hash", hash256(encoded))

    def to_obj(self) -> dict:
        return {
            "app_hash": self.app_hash,
            "chain": self.chain_id,
            "height": self.height,
            "prev_hash": self.prev_hash,
            "proposer": self.proposer,
            "results_hash": self.results_hash,
            "time_ms": self.time_ms,
            "txs_hash": self.txs_hash,
            "validators_hash": self.validators_hash,
        }


@dataclass(frozen=True, slots=True)
class Block:
    header: Header
    txs: tuple[bytes, ...]

    def to_obj(self) -> dict:
        return {"header": self.header.to_obj(), "txs": list(self.txs)}

    def encode(self) -> bytes:
        # Our own value: the header's fields were checked at construction, its map and the
        # envelope's are built in key order, and txs are bytes.
        return codec.encode_presorted(self.to_obj())

    @property
    def hash(self) -> bytes:
        return self.header.hash

    def tx_ids(self) -> tuple[bytes, ...]:
        """The ids of the block's transactions (DecodeError if one does not decode)."""
        return tuple(decode_signed_tx(raw).tx_id for raw in self.txs)


def _check_header(obj: dict) -> None:
    chain = obj["chain"]
    if type(chain) is not str or not CHAIN_ID_PATTERN.fullmatch(chain):
        raise DecodeError(Code.BAD_FIELD, f"header chain id {chain!r:.80} is not valid")
    for name in ("height", "time_ms"):
        value = obj[name]
        if type(value) is not int or not 0 <= value <= MAX_HEIGHT:
            raise DecodeError(Code.BAD_FIELD, f"header {name} must be an int in [0, 2**63-1]")
    for name in _HASH_FIELDS:
        value = obj[name]
        if type(value) is not bytes or len(value) != HASH_SIZE:
            raise DecodeError(Code.BAD_FIELD, f"header {name} must be {HASH_SIZE} bytes")
    proposer = obj["proposer"]
    if type(proposer) is not bytes or len(proposer) != ADDRESS_SIZE:
        raise DecodeError(Code.BAD_FIELD, f"header proposer must be {ADDRESS_SIZE} bytes")


def _header_from_obj(obj: object) -> Header:
    if type(obj) is not dict or tuple(obj) != _HEADER_KEYS:
        raise DecodeError(Code.BAD_FIELD, f"a header is a map with exactly the keys {_HEADER_KEYS}")
    _check_header(obj)
    return Header(
        chain_id=obj["chain"],
        height=obj["height"],
        time_ms=obj["time_ms"],
        prev_hash=obj["prev_hash"],
        txs_hash=obj["txs_hash"],
        app_hash=obj["app_hash"],
        results_hash=obj["results_hash"],
        proposer=obj["proposer"],
        validators_hash=obj["validators_hash"],
    )


def decode_header(data: bytes) -> Header:
    return _header_from_obj(codec.decode(data, max_size=4096, max_depth=1))


def decode_block(data: bytes, *, max_size: int = MAX_BLOCK_BYTES) -> Block:
    """Parse a block strictly (envelope and header; transactions stay raw bytes)."""
    obj = codec.decode(data, max_size=max_size, max_depth=2)
    if type(obj) is not dict or tuple(obj) != ("header", "txs"):
        raise DecodeError(Code.BAD_FIELD, "a block is a map with exactly the keys header, txs")
    txs = obj["txs"]
    if type(txs) is not list or len(txs) > MAX_BLOCK_TXS:
        raise DecodeError(Code.BAD_FIELD, f"txs must be a list of at most {MAX_BLOCK_TXS}")
    if any(type(tx) is not bytes or not tx for tx in txs):
        raise DecodeError(Code.BAD_FIELD, "every transaction in a block is non-empty bytes")
    return Block(_header_from_obj(obj["header"]), tuple(txs))


def block_hash(header: Header) -> bytes:
    return header.hash


def compute_txs_hash(tx_ids: Iterable[bytes]) -> bytes:
    return hash256(codec.encode(list(tx_ids)))


def compute_results_hash(receipts: Sequence[Receipt]) -> bytes:
    # encode([[tx_id, code, [event, ...]], ...]), composed from each event's cached bytes.
    pack = codec.encode_presorted
    return hash256(
        codec.join_array(
            [
                b"\x93"  # a 3-item array
                + pack(r.tx_id)
                + pack(int(r.code))
                + codec.join_array([e.encoded for e in r.events])
                for r in receipts
            ]
        )
    )


def compute_validators_hash(validators: Iterable[Validator]) -> bytes:
    ordered = sorted(validators, key=lambda v: v.public_key)
    return hash256(codec.encode([[v.public_key, v.power] for v in ordered]))


def check_txs_hash(block: Block) -> None:
    """InvalidBlock unless every transaction decodes and `txs_hash` matches their ids."""
    try:
        ids = block.tx_ids()
    except LedgerError as exc:
        raise InvalidBlock(f"block {block.header.height} holds an undecodable tx: {exc}") from None
    if compute_txs_hash(ids) != block.header.txs_hash:
        raise InvalidBlock(f"block {block.header.height}: txs_hash does not match its txs")
