"""Blocks and headers: their canonical bytes, their hashes, and the strict decoder.

    header = {"app_hash": bytes32, "chain": str, "evidence_hash": bytes32, "height": int,
              "prev_hash": bytes32, "proposer": bytes20, "results_hash": bytes32,
              "time_ms": int, "txs_hash": bytes32, "validators_hash": bytes32}
    block  = {"evidence": [evidence item bytes, ...], "header": header,
              "txs": [signed transaction bytes, ...]}
    (the "evidence" key is absent when there is none: never an empty list)

- `block_hash(header)` = hash256(encode(header)): the header commits to everything else.
- `txs_hash` = the RFC 6962 binary Merkle root over the hash256 of each *raw signed
  transaction* in block order (leaf = hash256(0x00 || hash256(raw)), node = hash256(0x01 ||
  left || right), the empty list hashes to hash256(b"")). The block hash therefore commits to
  the exact bytes, signatures included: two blocks whose transactions differ only in
  signature bytes have different hashes (tx ids name bodies only and could not do that).
  `tx_inclusion_proof` / `verify_tx_inclusion` prove one transaction's place in a block.
- `evidence_hash` = the same Merkle construction over the block's evidence items (each the
  canonical {"evidence": consensus wire Evidence, "public_key"}: `ledger/ops/evidence.py`).
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
from ledger.codes import Code, DecodeError, InvalidBlock
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
    "evidence_hash",
    "height",
    "prev_hash",
    "proposer",
    "results_hash",
    "time_ms",
    "txs_hash",
    "validators_hash",
)
_HASH_FIELDS = (
    "app_hash",
    "evidence_hash",
    "prev_hash",
    "results_hash",
    "txs_hash",
    "validators_hash",
)
MAX_BLOCK_EVIDENCE = 64  # = ledger.ops.evidence.MAX_BLOCK_EVIDENCE (checked there too)
_KEYS_WITH_EVIDENCE = ("evidence", "header", "txs")
EMPTY_ROOT = hash256(b"")  # the Merkle root of no transactions / no evidence


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
    evidence_hash: bytes = EMPTY_ROOT
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
            "evidence_hash": self.evidence_hash,
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
    evidence: tuple[bytes, ...] = ()

    def to_obj(self) -> dict:
        # No evidence (almost every block): no "evidence" key, never an empty list, so each
        # block has exactly one encoding and blocks without evidence keep their old bytes.
        if not self.evidence:
            return {"header": self.header.to_obj(), "txs": list(self.txs)}
        return {
            "evidence": list(self.evidence),
            "header": self.header.to_obj(),
            "txs": list(self.txs),
        }

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
        evidence_hash=obj["evidence_hash"],
    )


def decode_header(data: bytes) -> Header:
    return _header_from_obj(codec.decode(data, max_size=4096, max_depth=1))


def decode_block(data: bytes, *, max_size: int = MAX_BLOCK_BYTES) -> Block:
    """Parse a block strictly (envelope and header; transactions stay raw bytes)."""
    obj = codec.decode(data, max_size=max_size, max_depth=2)
    if type(obj) is not dict or tuple(obj) not in (("header", "txs"), _KEYS_WITH_EVIDENCE):
        raise DecodeError(
            Code.BAD_FIELD, "a block is a map with exactly the keys [evidence,] header, txs"
        )
    txs = obj["txs"]
    if type(txs) is not list or len(txs) > MAX_BLOCK_TXS:
        raise DecodeError(Code.BAD_FIELD, f"txs must be a list of at most {MAX_BLOCK_TXS}")
    if any(type(tx) is not bytes or not tx for tx in txs):
        raise DecodeError(Code.BAD_FIELD, "every transaction in a block is non-empty bytes")
    evidence = obj.get("evidence", ())
    if "evidence" in obj and (
        type(evidence) is not list or not 0 < len(evidence) <= MAX_BLOCK_EVIDENCE
    ):
        raise DecodeError(
            Code.BAD_FIELD, f"evidence, when present, is a list of 1 to {MAX_BLOCK_EVIDENCE} items"
        )
    if any(type(item) is not bytes or not item for item in evidence):
        raise DecodeError(Code.BAD_FIELD, "every evidence item in a block is non-empty bytes")
    return Block(_header_from_obj(obj["header"]), tuple(txs), tuple(evidence))


def block_hash(header: Header) -> bytes:
    return header.hash


# ---- the transactions' Merkle tree (RFC 6962, section 2.1) ----------------------------

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_TXS_HASH = EMPTY_ROOT


def tx_leaf_hash(raw_tx: bytes) -> bytes:
    """The Merkle leaf of one raw signed transaction: hash256(0x00 || hash256(raw))."""
    return hash256(LEAF_PREFIX + hash256(raw_tx))


def _node(left: bytes, right: bytes) -> bytes:
    return hash256(NODE_PREFIX + left + right)


def _next_level(level: list[bytes]) -> list[bytes]:
    # Pair neighbours left to right; an odd last node moves up unchanged. Level by level this
    # builds exactly RFC 6962's tree (split at the largest power of two below n).
    up = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        up.append(level[-1])
    return up


def merkle_root(items: Iterable[bytes]) -> bytes:
    """The RFC 6962 root over leaves hash256(0x00 || hash256(item)); EMPTY_ROOT for none."""
    level = [tx_leaf_hash(item) for item in items]
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


def compute_txs_hash(raw_txs: Iterable[bytes]) -> bytes:
    """The header's `txs_hash`: the Merkle root over the raw signed transactions."""
    return merkle_root(raw_txs)


def compute_evidence_hash(items: Iterable[bytes]) -> bytes:
    """The header's `evidence_hash`: the Merkle root over the block's evidence items."""
    return merkle_root(items)


def tx_inclusion_proof(raw_txs: Sequence[bytes], index: int) -> tuple[bytes, ...]:
    """The audit path of transaction `index` (RFC 6962 PATH): sibling hashes, leaf first."""
    if not 0 <= index < len(raw_txs):
        raise IndexError(f"no transaction {index} in a block of {len(raw_txs)}")
    level = [tx_leaf_hash(raw) for raw in raw_txs]
    path: list[bytes] = []
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        level = _next_level(level)
        index //= 2
    return tuple(path)


def verify_tx_inclusion(
    txs_hash: bytes, raw_tx: bytes, index: int, total: int, proof: Sequence[bytes]
) -> bool:
    """Is `raw_tx` the transaction at `index` of a block of `total` whose header says
    `txs_hash`? The RFC 9162 (2.1.3.2) audit-path check; never raises on bad input."""
    if type(index) is not int or type(total) is not int or not 0 <= index < total:
        return False
    if any(type(p) is not bytes or len(p) != HASH_SIZE for p in proof):
        return False
    fn, sn = index, total - 1
    digest = tx_leaf_hash(raw_tx)
    for sibling in proof:
        if sn == 0:
            return False  # a longer path than the tree is deep
        if fn & 1 or fn == sn:
            digest = _node(sibling, digest)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            digest = _node(digest, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and digest == txs_hash


def compute_results_hash(receipts: Sequence[Receipt]) -> bytes:
    # encode([[tx_id, code, [event, ...]], ...]), composed from each event's cached bytes.
    pack = codec.encode_presorted
    return hash256(
        codec.join_array(
            [
                b"\x93"  # a 3-item array
                + pack(r.tx_id)
                + pack(int(r.code))
                + r.events_encoded
                for r in receipts
            ]
        )
    )


def compute_validators_hash(validators: Iterable[Validator]) -> bytes:
    ordered = sorted(validators, key=lambda v: v.public_key)
    return hash256(codec.encode([[v.public_key, v.power] for v in ordered]))


def check_txs_hash(block: Block) -> None:
    """InvalidBlock unless `txs_hash` is the Merkle root of the block's exact transaction
    bytes (whether each decodes and executes is for `ledger.transition` to say)."""
    if compute_txs_hash(block.txs) != block.header.txs_hash:
        raise InvalidBlock(f"block {block.header.height}: txs_hash does not match its txs")
    if compute_evidence_hash(block.evidence) != block.header.evidence_hash:
        raise InvalidBlock(
            f"block {block.header.height}: evidence_hash does not match its evidence"
        )
