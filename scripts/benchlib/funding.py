"""Onboarding and funding the benchmark's senders, through the SDK, before anything is timed.

The mempool lets one sender have at most `nonce_window` (64) transactions waiting, so ten
thousand onboardings and ten thousand cash transfers from the regulator and the central bank
alone would take hundreds of blocks. The work is fanned out instead:

1. the regulator licenses `vasps` fresh VASP keys; the central bank registers the benchmark's
   cash token (once per network) ;
2. the central bank issues to each VASP the cash its share of senders will get;
3. every VASP onboards its senders and transfers each its cash, `CHUNK` transactions per VASP
   per round, all VASPs at once (so a round fills blocks with up to vasps x CHUNK txs).

Every transaction is built with `TxBuilder` and signed with `node.client.sign`; each round's
transactions go out as JSON-RPC batches over the pipelined lanes, every admission must answer
code 0, and the round ends when each signer's last transaction is committed with code 0
(`AsyncClient.wait_for_tx`). Any refusal ends the benchmark with the node's code and log.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from datetime import date, timedelta

from benchlib.rpc import RpcLanes, call_all
from ledger.crypto import KeyPair, address_to_text, generate_key, read_key_file
from node.client import AsyncClient, Operation, TxBuilder, sign

CASH = "BENCH-CASH"
CASH_CAP = 10**17
CHUNK = 60  # per signer per round: inside the default nonce window of 64
FUNDING = 1_000_000  # cash units per sender: one unit moves per measured transfer


class FundingError(Exception):
    """A set-up transaction was refused or never committed; the message has the node's code."""


@dataclass(frozen=True, slots=True)
class Funded:
    chain_id: str
    cash: str
    senders: tuple[KeyPair, ...]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


class _Signer:
    """A key with the next nonce it signs with."""

    def __init__(self, key: KeyPair, nonce: int) -> None:
        self.key = key
        self.address = address_to_text(key.address)
        self.nonce = nonce

    def sign(self, chain_id: str, operation: Operation) -> tuple[bytes, str]:
        tx = sign(operation.body(chain_id, self.address, self.nonce), [self.key])
        self.nonce += 1
        return tx.raw, tx.tx_id.hex()


async def _run_round(
    client: AsyncClient, lanes: RpcLanes, signed: list[tuple[bytes, str]], last: list[str]
) -> None:
    """Broadcast `signed` (each signer's in nonce order), then wait for `last` to commit."""
    answers = await call_all(lanes, [("broadcast_tx_sync", {"tx": _b64(r)}) for r, _ in signed])
    for answer in answers:
        result = answer.get("result")
        if result is None or result.get("code") != 0:
            raise FundingError(f"set-up transaction refused at admission: {json.dumps(answer)}")
    for tx_hash in last:
        committed = await client.wait_for_tx(tx_hash, timeout_s=60.0)
        if not committed.ok:
            raise FundingError(
                f"set-up transaction {tx_hash} failed in block {committed.height}: "
                f"code {committed.code} {committed.log}"
            )


async def fund_senders(
    client: AsyncClient,
    lanes: RpcLanes,
    regulator: KeyPair,
    central_bank: KeyPair,
    senders: int,
    vasps: int = 48,
    progress=lambda text: None,
) -> Funded:
    """Make `senders` fresh investor keys, onboarded and holding FUNDING units of CASH."""
    status = await client.status()
    chain_id = status.chain_id
    today = date(1970, 1, 1) + timedelta(days=status.block_time_ms // 86_400_000)
    # Far enough that a test network advancing one chain day per block never reaches it.
    expiry = today + timedelta(days=365 * 100)
    vasps = max(1, min(vasps, senders, CHUNK - 1))
    keys = tuple(generate_key() for _ in range(senders))
    vasp_keys = [_Signer(generate_key(), 0) for _ in range(vasps)]
    bank = _Signer(central_bank, await client.next_nonce(address_to_text(central_bank.address)))
    reg = _Signer(regulator, await client.next_nonce(address_to_text(regulator.address)))

    first, waits = [], []
    if not any(i["id"] == CASH for i in await client.instruments()):
        first.append(bank.sign(chain_id, TxBuilder.register_instrument(
            id=CASH, kind="cash", name="Benchmark cash", currency="PKR",
            face_value=1, decimals=2, cap=CASH_CAP,
        )))  # fmt: skip
        waits.append(first[-1][1])
    for index, vasp in enumerate(vasp_keys):
        first.append(reg.sign(chain_id, TxBuilder.license_vasp(
            vasp=vasp.address, name=f"Bench VASP {index}")))  # fmt: skip
    progress(f"funding: licensing {vasps} VASPs")
    await _run_round(client, lanes, first, [*waits, first[-1][1]])

    shares = [keys[i::vasps] for i in range(vasps)]
    issues = [
        bank.sign(chain_id, TxBuilder.issue(
            instrument=CASH, to=vasp.address, amount=FUNDING * len(share)))
        for vasp, share in zip(vasp_keys, shares, strict=True)
    ]  # fmt: skip
    progress(f"funding: issuing cash to {vasps} VASPs")
    await _run_round(client, lanes, issues, [issues[-1][1]])

    work = []
    for vasp, share in zip(vasp_keys, shares, strict=True):
        ops = []
        for key in share:
            investor = address_to_text(key.address)
            ops.append(
                TxBuilder.onboard_investor(
                    investor=investor, country="PK", category="retail", kyc_expiry=expiry
                )
            )
            ops.append(TxBuilder.transfer(instrument=CASH, to=investor, amount=FUNDING))
        work.append((vasp, ops))  # fmt: skip
    total = sum(len(ops) for _, ops in work)
    done = 0
    for start in range(0, max(len(ops) for _, ops in work), CHUNK):
        signed, last = [], []
        for vasp, ops in work:
            part = [vasp.sign(chain_id, op) for op in ops[start : start + CHUNK]]
            signed.extend(part)
            if part:
                last.append(part[-1][1])
        await _run_round(client, lanes, signed, last)
        done += len(signed)
        progress(f"funding: {done}/{total} onboarding and funding transactions committed")
    return Funded(chain_id, CASH, keys)


def institution_key(localnet: dict) -> KeyPair:
    """The key the benchmarks ask and submit with: the central bank's client key (an
    institution reads every block body and may submit anyone's transaction, docs/RPC.md)."""
    return read_key_file(localnet["clients"]["central-bank"])


async def fund_localnet_senders(
    client: AsyncClient, setup_lane: RpcLanes, localnet: dict, senders: int, log
) -> Funded:
    """`fund_senders` with the regulator's and the central bank's client keys that
    `localnet.json` names, logging how long it took (the benchmarks' common set-up)."""
    keys = localnet["clients"]
    began = time.monotonic()
    funded = await fund_senders(
        client,
        setup_lane,
        read_key_file(keys["regulator"]),
        read_key_file(keys["central-bank"]),
        senders,
        progress=log,
    )
    log(f"funded {senders} senders in {time.monotonic() - began:.1f} s")
    return funded
