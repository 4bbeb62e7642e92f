"""The world the nodes serve: keys, the genesis, and simulated clients that transact.

Everything starts from nothing on chain, through consensus: the central bank registers the
cash token, the regulator onboards the investors, the bank issues each its funding; then the
investors transfer cash to each other (sometimes more than they hold: refused, at admission
or by the block) and the bank issues a little more now and then, so supply changes too.

A client has at most one transaction in flight. It submits through a random node that is up
(`Driver.submit`, the node's real admission), and its nonce is done when the checker has seen
a block consume it (whatever the verdict). If the node it asked crashes or never gets the
transaction into a block, it submits the same bytes again to another node after
`RESUBMIT_MS`; a transaction refused outright stored nothing, so the next one reuses the
nonce. Every transaction a client signs is registered with the checker first: a block holding
anything else (or holding one twice) is a NO-LOSS violation. `sim` is the
`run.NodeSimulation` (typed `Any`: `run` imports this module, and no import goes back).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import trio

from ledger.codes import Code
from ledger.crypto import KeyPair, generate_key
from ledger.genesis import default_genesis
from ledger.tx import TxBody, sign_tx

CHAIN_ID = "khazana-nodesim"
GENESIS_MS = 1_767_225_600_000  # 2026-01-01
CASH = "PKR"
FUNDING = 100_000
SUBMIT_TIMEOUT_MS = 2_000  # a driver that does not answer is treated as gone
RESUBMIT_MS = 3_000  # no block took it meanwhile: submit the same bytes elsewhere
POLL_MS = 50
INSTITUTIONS = ("ministry", "central-bank", "regulator", "auditor")
KEEP_TRYING = (Code.ALREADY_IN_MEMPOOL, Code.NONCE_USED, Code.MEMPOOL_FULL)


def seeded_key(name: str) -> KeyPair:
    return generate_key(name.encode().ljust(32, b"\x00")[:32])


@dataclass(frozen=True, slots=True)
class World:
    validator_keys: tuple[KeyPair, ...]
    institution_keys: dict[str, KeyPair]
    investor_keys: tuple[KeyPair, ...]
    genesis: dict
    start_ms: int  # the simulated clock's reading at trio time 0


def make_world(validators: int, investors: int) -> World:
    validator_keys = tuple(seeded_key(f"validator-{i}") for i in range(validators))
    institution_keys = {name: seeded_key(name) for name in INSTITUTIONS}
    genesis = default_genesis(
        validators=[(f"v{i}", k.public_key) for i, k in enumerate(validator_keys)],
        institutions={name: k.address for name, k in institution_keys.items()},
        chain_id=CHAIN_ID,
        genesis_time_ms=GENESIS_MS,
    )
    return World(
        validator_keys=validator_keys,
        institution_keys=institution_keys,
        investor_keys=tuple(seeded_key(f"investor-{i}") for i in range(investors)),
        genesis=genesis,
        start_ms=GENESIS_MS + 1000,
    )


class Client:
    """One account that signs and submits transactions, one at a time."""

    def __init__(self, sim: Any, key: KeyPair, name: str) -> None:
        self.sim = sim
        self.key = key
        self.name = name
        self.nonce = 0
        self.done = 0  # transactions whose nonce a block consumed
        self.last_done_ms = -1
        self.rng = random.Random(f"client/{sim.seed}/{name}")

    def sign(self, op: str, args: dict) -> bytes:
        raw = sign_tx(TxBody(CHAIN_ID, self.key.address, self.nonce, op, args), [self.key]).raw
        self.sim.checker.on_signed(raw)
        return raw

    async def transact(self, op: str, args: dict) -> int | None:
        """Sign and submit until a block consumes the nonce: the verdict's code, or None if
        every node refused it outright (nothing stored; the nonce is free again)."""
        nonce, raw = self.nonce, self.sign(op, args)
        checker = self.sim.checker
        while True:
            code = checker.nonce_code(self.key.address, nonce)
            if code is not None:
                self.nonce = nonce + 1
                self.done += 1
                self.last_done_ms = self.sim.net.now_ms()
                return code
            node = self.sim.pick_up_node(self.rng)
            if node is None or node.driver is None:
                await trio.sleep(POLL_MS / 1000)
                continue
            result = None
            with trio.move_on_after(SUBMIT_TIMEOUT_MS / 1000):
                result = await node.driver.submit(raw)
            if result is not None and not result.ok and result.code not in KEEP_TRYING:
                if checker.nonce_code(self.key.address, nonce) is None:
                    return None
                continue
            await self._wait_nonce(nonce)

    async def _wait_nonce(self, nonce: int) -> None:
        checker = self.sim.checker
        with trio.move_on_after(RESUBMIT_MS / 1000):
            while checker.nonce_code(self.key.address, nonce) is None:
                await trio.sleep(POLL_MS / 1000)

    async def pause(self, lo_ms: int, hi_ms: int) -> None:
        await trio.sleep(self.rng.randint(lo_ms, hi_ms) / 1000)


async def run_clients(sim: Any) -> None:
    """The bank and regulator set up the token and the investors, who then trade."""
    world = sim.world
    bank = Client(sim, world.institution_keys["central-bank"], "bank")
    regulator = Client(sim, world.institution_keys["regulator"], "regulator")
    investors = [Client(sim, k, f"investor-{i}") for i, k in enumerate(world.investor_keys)]
    sim.clients = [bank, regulator, *investors]
    await _until_ok(
        bank,
        "register_instrument",
        {
            "id": CASH,
            "kind": "cash",
            "name": "Digital rupee",
            "currency": "PKR",
            "face_value": 1,
            "decimals": 2,
            "cap": 10**12,
        },
    )
    funded: list[trio.Event] = [trio.Event() for _ in investors]

    async def onboard_and_fund() -> None:
        for index, investor in enumerate(investors):
            onboard = {
                "investor": investor.key.address,
                "country": "PK",
                "category": "retail",
                "kyc_expiry": "2030-01-01",
            }
            await _until_ok(regulator, "onboard_investor", onboard)
            issue = {"instrument": CASH, "to": investor.key.address, "amount": FUNDING}
            await _until_ok(bank, "issue", issue)
            funded[index].set()
        while True:  # a little more supply now and then
            await bank.pause(200, 1500)
            to = bank.rng.choice(investors).key.address
            amount = 1 + bank.rng.randrange(500)
            await bank.transact("issue", {"instrument": CASH, "to": to, "amount": amount})

    async def trade(index: int, me: Client) -> None:
        await funded[index].wait()
        others = [c.key.address for c in investors if c is not me]
        while True:
            await me.pause(20, 600)
            balance = sim.balance(me.key.address)
            amount = 1 + me.rng.randrange(max(1, balance + balance // 4))
            await me.transact(
                "transfer", {"instrument": CASH, "to": me.rng.choice(others), "amount": amount}
            )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(onboard_and_fund)
        for index, investor in enumerate(investors):
            nursery.start_soon(trade, index, investor)


async def _until_ok(client: Client, op: str, args: dict) -> None:
    """Set-up steps must succeed: retry (a new nonce each time a block refused it)."""
    while True:
        code = await client.transact(op, args)
        if code == Code.OK:
            return
        await client.pause(50, 200)
