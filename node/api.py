"""`NodeApi`: what the RPC layer (node/rpc/) may ask of a running node (docs/NODE.md); it
implements the typed protocol `node.rpc.nodeview.NodeView`, all the RPC layer knows of it.

Reads come from committed state only (`store`, an `AsyncStore`); admission goes through the
driver task, which owns the chain and the mempool (`Driver.submit`); `wait_committed` waits
on the driver's per-block event and then reads the store. `events` is the driver's event bus
(node/events.py, the WebSocket subscriptions) and `prove` asks the driver task for state proofs
against the last committed state (verifiable reads).

`status`'s `catching_up` is true while block sync runs and also while the node has no peer
and cannot make blocks alone (`waiting_for_peers`): a lone node at height 0 does not claim to
be current. `role` and `validator_address` are read from the driver on every call, not fixed at start: a
validator-set change makes this node a validator (or an observer) at the height it takes
effect, and `status` says so from then on. `configured_role` is the config's `role` (`NodeInfo`,
with the node's name and key).
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from ledger.block import decode_header
from ledger.crypto import address_from_public_key, address_to_text
from ledger.store import AsyncStore, TxRecord
from ledger.validator_history import UnknownValidatorSet, decode_point, in_force_range
from node.driver import Driver
from node.events import EventBus
from node.mempool import AdmissionResult
from node.state_proofs import StateProofs


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """Who this node is: its name (moniker), its configured role and its node (P2P) key."""

    name: str
    role: str
    node_key: bytes


class NodeApi:
    def __init__(
        self,
        *,
        info: NodeInfo,
        genesis: dict,
        driver: Driver,
        store: AsyncStore,
        peers,  # () -> tuple[PeerStatus, ...]
    ) -> None:
        self.name = info.name
        self.configured_role = info.role
        self.genesis = genesis
        self.chain_id: str = genesis["chain_id"]
        self.node_id = info.node_key.hex()
        self.store = store
        self._driver = driver
        self.events: EventBus | None = driver.events
        self._peers = peers
        self._names = {bytes.fromhex(v["public_key"]): v["name"] for v in genesis["validators"]}

    @property
    def validator_address(self) -> bytes | None:
        """Our address while the set of the height consensus is at names us, else None."""
        return self._driver.own_address

    @property
    def role(self) -> str:
        """`validator` while we are in the set of the current height, else `observer`: a
        validator-set change switches it at the height it takes effect, without a restart."""
        return "validator" if self._driver.own_address is not None else "observer"

    def waiting_for_peers(self) -> bool:
        """No peer is connected and this node cannot make blocks alone (it is not in the set,
        or holds no more than two thirds of its power): it cannot know whether the chain has
        moved on without it, so `status` says `catching_up` rather than claim it is current.
        A one-validator network's validator never waits."""
        if self._peers():
            return False
        vset = self._driver.schedule.for_height(self._driver.chain.height + 1)
        address = self._driver.own_address
        member = None if vset is None or address is None else vset.get(address)
        return member is None or member.power < vset.quorum_power

    async def status(self) -> dict:
        height = await self.store.read(lambda s: s.blocks.latest_height()) or 0
        block_hash = app_hash = b""
        time_ms = self.genesis["genesis_time_ms"]
        if height >= 1:
            stored = await self.store.read(lambda s: s.blocks.block(height))
            header = decode_header(stored.header)
            block_hash, app_hash, time_ms = header.hash, header.app_hash, header.time_ms
        # Read once: the driver may switch membership between awaits.
        address = self.validator_address
        power = 0
        vset = self._driver.schedule.for_height(height + 1)
        if vset is not None and address is not None:
            member = vset.get(address)
            power = member.power if member is not None else 0
        return {
            "node_info": {
                "id": self.node_id,
                "moniker": self.name,
                "network": self.chain_id,
                "role": "validator" if address is not None else "observer",
            },
            "sync_info": {
                "latest_block_height": height,
                "latest_block_hash": block_hash.hex(),
                "latest_app_hash": app_hash.hex(),
                "latest_block_time": time_ms,
                "catching_up": self._driver.catching_up or self.waiting_for_peers(),
            },
            "validator_info": {
                "address": address_to_text(address) if address is not None else None,
                "voting_power": power,
            },
        }

    async def submit_tx(self, raw: bytes) -> AdmissionResult:
        return await self._driver.submit(raw)

    async def submit_txs(self, raws: list[bytes]) -> list[AdmissionResult]:
        """`submit_tx` for several transactions, admitted together in this order."""
        return await self._driver.submit_many(raws)

    async def check_tx(self, raw: bytes) -> AdmissionResult:
        return await self._driver.submit(raw, check_only=True)

    async def wait_committed(self, tx_id: bytes, timeout_s: float) -> TxRecord | None:
        with trio.move_on_after(timeout_s):
            while True:
                event = self._driver.committed
                record = await self.store.read(lambda s: s.blocks.tx(tx_id))
                if record is not None:
                    return record
                await event.wait()
        return None

    async def prove(self, keys: list[bytes]) -> StateProofs:
        """State proofs of `keys` at the last committed height (`ProofUnavailable` if the
        driver cannot serve them; the RPC layer bounds the wait)."""
        return await self._driver.prove(keys)

    def peers(self) -> list[dict]:
        return [
            {
                "node_id": p.key.hex(),
                "outbound": p.outbound,
                "address": p.address,
                "score": p.score,
            }
            for p in self._peers()
        ]

    def mempool_stats(self) -> tuple[int, int]:
        mempool = self._driver.mempool
        return len(mempool), mempool.total_bytes

    async def validators(self, height: int | None) -> tuple[int, list[dict]]:
        """The set in force at `height` (the latest committed block by default; 0: the
        genesis set): the set that signed that block, the one its header's `validators_hash`
        names. Read from the store's validator-set history (ledger/validator_history.py);
        `UnknownValidatorSet` for a height below a store that predates that history."""
        at = (
            (await self.store.read(lambda s: s.blocks.latest_height()) or 0)
            if height is None
            else height
        )
        rows = await self.store.read(
            lambda s: s.db.scan_meta(*in_force_range(at), limit=1, descending=True)
        )
        if not rows:
            raise UnknownValidatorSet(at)
        point = decode_point(*rows[0])
        return at, [
            {
                "address": address_to_text(address_from_public_key(v.public_key)),
                "pub_key": v.public_key.hex(),
                "voting_power": v.power,
                "name": v.name or self._names.get(v.public_key, ""),
            }
            for v in point.validators
            if v.power > 0
        ]
