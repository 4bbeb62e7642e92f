"""The invariants of docs/RELIABILITY.md ("The whole node in simulation"), checked as the run
goes: at every block commit on every node, at every signed message an honest node sends, at
every restart, and over every node's store at the end.

- SAFE:     no two honest nodes commit different blocks at one height.
- CERT:     every committed block's certificate is a `Commit` for that height and block hash
            that `verify_commit` accepts against the validator set (> 2/3 of the power).
- VALID:    after a commit, the node's state root is the block's app_hash (so every node that
            committed the block executed it to the same state).
- SIGN:     an honest validator never signs two different proposals or votes for one slot
            (height, round, type), across crashes and restarts: the durable consensus record.
- LOSS:     a restarted node still holds every block it had committed; every block
            transaction is one a client signed, each consumes its sender's nonce exactly once
            across the chain, and at the end each honest node's store holds every committed
            transaction exactly once, at its height, and finds it by id.
- MONEY:    the cash supply after each block is the genesis supply (0) plus what OK `issue`
            receipts created minus what OK `burn`s destroyed (an oracle outside the ledger),
            and the sum of the holdings equals it; plus the ledger's own state invariants.
- EVIDENCE: evidence in a committed block only ever names a byzantine validator.
- ROBUST:   no driver dies (raises) from anything its peers or clients send.
- LIVE:     checked by the runner: after the faults heal, the honest nodes grow the chain and
            the clients' transactions get committed within a bound.

Findings are `Violation` records, not exceptions, so one run reports all it saw.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import trio

from consensus.types import Commit, Proposal, Vote, verify_commit
from consensus.wire import WireError, decode_message
from ledger.block import decode_block
from ledger.chain import PendingBlock
from ledger.codes import Code, LedgerError
from ledger.crypto import hash256, verify_signature
from ledger.genesis import state_from_genesis
from ledger.ops.evidence import decode_evidence_item
from ledger.tx import decode_signed_tx
from node import messages
from node.messages import MessageError
from node.validator_set import consensus_set

from ..checker import Violation
from .clients import CASH

if TYPE_CHECKING:
    from .replica import SimNode

SAFETY_KINDS = ("SAFE", "CERT", "VALID", "SIGN", "LOSS", "MONEY", "EVIDENCE", "ROBUST")


AFTER_THE_RUN = -1  # the time of a finding made over the stores once the run is over


def _now_ms() -> int:
    try:
        return round(trio.current_time() * 1000)
    except RuntimeError:  # not inside the run: the final checks over the stores
        return AFTER_THE_RUN


class NodeChecker:
    def __init__(self, genesis: dict, byzantine_addresses: frozenset[bytes]) -> None:
        self.chain_id = genesis["chain_id"]
        self.valset = consensus_set(state_from_genesis(genesis).validator_set.validators)
        self.byzantine = byzantine_addresses
        self.violations: list[Violation] = []
        self.stop = False  # a SAFE violation: the runner may end the run
        self._blocks: dict[int, tuple[bytes, str]] = {}  # height -> (hash, first honest node)
        self._forked: set[int] = set()
        self._supply: dict[int, int] = {0: 0}  # expected cash supply after each height
        self._signed_txs: set[bytes] = set()  # hash256 of every raw tx a client signed
        self._nonces: dict[tuple[bytes, int], int] = {}  # (sender, nonce) -> code
        self.tx_height: dict[bytes, int] = {}  # tx id -> height (first honest commit)
        self._slots: dict[tuple, bytes] = {}  # honest (signer, kind, height, round) -> value
        self._before_crash: dict[int, tuple[int, bytes]] = {}
        self._trace = hashlib.blake2b(digest_size=16)
        self.commits = 0
        self.evidence_committed = 0
        self.restarts_checked = 0

    def fail(self, kind: str, detail: str) -> None:
        self.violations.append(Violation(kind, _now_ms(), detail))
        if kind == "SAFE":
            self.stop = True

    @property
    def digest(self) -> str:
        """A fingerprint of the run (every commit: time, node, height, hash): same seed, same
        digest."""
        return self._trace.hexdigest()

    # -- what clients sign and what blocks consume ----------------------------------------

    def on_signed(self, raw: bytes) -> None:
        self._signed_txs.add(hash256(raw))

    def nonce_code(self, sender: bytes, nonce: int) -> int | None:
        """The verdict of the committed transaction that consumed (sender, nonce), if any."""
        return self._nonces.get((sender, nonce))

    def expected_supply(self, height: int) -> int | None:
        return self._supply.get(height)

    # -- every commit ---------------------------------------------------------------------

    def on_commit(self, node: SimNode, pending: PendingBlock, certificate: bytes) -> None:
        header = pending.header
        height = header.height
        self.commits += 1
        self._trace.update(f"{_now_ms()}:{node.replica}:{height}:".encode() + header.hash)
        where = f"{node.name} height {height}"
        self._check_certificate(where, height, header.hash, certificate)
        chain = node.chain
        assert chain is not None
        if chain.app_hash != header.app_hash:
            self.fail(
                "VALID",
                f"{where}: state root {chain.app_hash.hex()[:12]} is not the "
                f"block's app_hash {header.app_hash.hex()[:12]}",
            )
        for problem in chain.state.invariant_violations():
            self.fail("MONEY", f"{where}: {problem}")
        for raw in pending.block.evidence:
            try:
                accused = decode_evidence_item(raw).validator
            except LedgerError as exc:
                self.fail("EVIDENCE", f"{where}: undecodable evidence item ({exc})")
                continue
            self.evidence_committed += 1
            if accused not in self.byzantine:
                self.fail("EVIDENCE", f"{where}: evidence accuses honest {accused.hex()[:12]}")
        if not node.honest:
            return
        first = self._blocks.get(height)
        if first is None:
            self._blocks[height] = (header.hash, node.name)
            self._first_commit(where, height, pending)
        elif first[0] != header.hash and height not in self._forked:
            self._forked.add(height)
            self.fail(
                "SAFE",
                f"height {height}: {first[1]} committed {first[0].hex()[:12]}, "
                f"{node.name} committed {header.hash.hex()[:12]}",
            )
        self._check_supply(where, height, chain.state)

    def _check_certificate(self, where: str, height: int, block_hash: bytes, cert: bytes) -> None:
        try:
            commit = decode_message(cert)
        except WireError as exc:
            self.fail("CERT", f"{where}: undecodable certificate ({exc})")
            return
        if not isinstance(commit, Commit):
            self.fail("CERT", f"{where}: the certificate is a {type(commit).__name__}")
        elif commit.height != height or commit.value_id != block_hash:
            self.fail(
                "CERT",
                f"{where}: certificate for height {commit.height} "
                f"block {commit.value_id.hex()[:12]}",
            )
        elif not verify_commit(self.valset, self.chain_id, commit, verify_signature):
            self.fail("CERT", f"{where}: verify_commit refuses the certificate")

    def _first_commit(self, where: str, height: int, pending: PendingBlock) -> None:
        """The block's transactions enter the registry; its supply change the oracle."""
        delta = 0
        for raw, receipt in zip(pending.block.txs, pending.receipts, strict=True):
            tx = decode_signed_tx(raw)
            if hash256(raw) not in self._signed_txs:
                self.fail("LOSS", f"{where}: transaction {tx.tx_id.hex()[:12]} no client signed")
            slot = (tx.body.sender, tx.body.nonce)
            if slot in self._nonces or tx.tx_id in self.tx_height:
                self.fail(
                    "LOSS",
                    f"{where}: nonce {tx.body.nonce} of {tx.body.sender.hex()[:12]}"
                    " consumed a second time",
                )
            self._nonces[slot] = receipt.code
            self.tx_height[tx.tx_id] = height
            if receipt.code == Code.OK and tx.body.args.get("instrument") == CASH:
                if tx.body.op == "issue":
                    delta += tx.body.args["amount"]
                elif tx.body.op == "burn":
                    delta -= tx.body.args["amount"]
        before = self._supply.get(height - 1)
        if before is not None:
            self._supply[height] = before + delta

    def _check_supply(self, where: str, height: int, state: Any) -> None:
        expected = self._supply.get(height)
        if expected is None:
            return
        instrument = state.instruments.get(CASH)
        supply = 0 if instrument is None else instrument.supply
        held = sum(h.balance for h in state.holdings.get(CASH, {}).values())
        if supply != expected or held != expected:
            self.fail(
                "MONEY",
                f"{where}: supply {supply}, holdings {held}, but issues and burns say {expected}",
            )

    # -- every signed message an honest node sends ----------------------------------------

    def on_sent(self, node: SimNode, data: bytes) -> None:
        if not node.honest:
            return
        try:
            message = messages.decode(data)
        except MessageError as exc:
            self.fail("ROBUST", f"{node.name} sent an undecodable message ({exc})")
            return
        inner = getattr(message, "message", None)
        if isinstance(inner, Vote):
            slot = (inner.validator, int(inner.vote_type), inner.height, inner.round)
            value = inner.value_id if inner.value_id is not None else b"nil"
        elif isinstance(inner, Proposal):
            slot = (inner.proposer, -1, inner.height, inner.round)
            value = hash256(inner.value)
        else:
            return
        first = self._slots.setdefault(slot, value)
        if first != value:
            kind = "proposal" if slot[1] == -1 else f"vote type {slot[1]}"
            self.fail(
                "SIGN",
                f"{node.name} signed a second {kind} at height {slot[2]} "
                f"round {slot[3]}: {first.hex()[:12]} then {value.hex()[:12]}",
            )

    # -- crash and restart ----------------------------------------------------------------

    def on_crash(self, node: SimNode) -> None:
        assert node.chain is not None
        self._before_crash[node.replica] = (node.chain.height, node.chain.last_block_hash)

    def on_open(self, node: SimNode) -> None:
        before = self._before_crash.get(node.replica)
        chain = node.chain
        if before is None or chain is None:
            return
        self.restarts_checked += 1
        height, block_hash = before
        if chain.height < height:
            self.fail(
                "LOSS", f"{node.name} restarted at height {chain.height}, it had committed {height}"
            )
        elif height > 0:
            stored = chain.store.blocks.block(height)
            if stored is None or stored.hash != block_hash:
                self.fail("LOSS", f"{node.name} lost its block {height} across a restart")

    # -- at the end -----------------------------------------------------------------------

    def check_stores(self, node: SimNode) -> None:
        """Every committed transaction is in this node's store exactly once, where the chain
        put it, and found by id; nothing else is."""
        chain = node.chain
        assert chain is not None
        store, seen = chain.store, set()
        for height in range(1, chain.height + 1):
            stored = store.blocks.block(height)
            if stored is None:
                self.fail("LOSS", f"{node.name}: block {height} missing from its store")
                continue
            for raw in decode_block(stored.block).txs:
                tx_id = decode_signed_tx(raw).tx_id
                if tx_id in seen:
                    self.fail("LOSS", f"{node.name}: transaction {tx_id.hex()[:12]} twice")
                seen.add(tx_id)
                record = store.blocks.tx(tx_id)
                if (
                    self.tx_height.get(tx_id) != height
                    or record is None
                    or (record.height != height)
                ):
                    self.fail(
                        "LOSS",
                        f"{node.name}: transaction {tx_id.hex()[:12]} of block "
                        f"{height} is not where the chain put it",
                    )
        missing = [t for t, h in self.tx_height.items() if h <= chain.height and t not in seen]
        if missing:
            self.fail("LOSS", f"{node.name}: {len(missing)} committed transactions missing")
