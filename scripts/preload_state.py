#!/usr/bin/env python3
"""Give a fresh (never started) network a large state before it starts: N funded investors.

For issue 6's "with 1,000,000 funded accounts in the state" measurement. Funding a million
accounts through transactions would take the network hours; instead this writes the first
two blocks of the chain offline, the way the chain itself would have written them, and hands
every validator the same database:

* block 1 holds one real transaction: the central bank registers the cash token
  `BENCH-PRELOAD` (signed with its client key from `HOME/clients/`);
* block 2 carries N onboarded investors (KYC attested by the regulator), each holding
  `--amount` of that token, written straight into the state (the records `onboard_investor`
  and `issue` would write; the token's supply grows by what they hold; addresses from a
  seeded generator, so two runs give the same state and app_hash);
* each block's commit certificate is genuine: a precommit for it signed by every validator's
  key (`HOME/<name>/node_key.json`), so the blocks verify when a node later serves them by
  block sync;
* each validator gets its own consensus record at height 3 with nothing signed there, so no
  validator starts in the signing hold (a store with blocks but no record of what it signed,
  docs/NODE.md) -- true: nobody signed anything at height 3.

    khazana init --home H --validators 4
    .venv/bin/python scripts/preload_state.py --home H --accounts 1000000
    khazana localnet --home H --validators 4          # starts the prepared homes

Refuses a home whose nodes already have a database (it would fork their chain).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from consensus.types import Commit, DurableState, Step, VoteType, vote_signing_bytes  # noqa: E402
from consensus.wire import encode_message  # noqa: E402
from ledger.chain import Chain  # noqa: E402
from ledger.codes import Code  # noqa: E402
from ledger.crypto import KeyPair, read_key_file  # noqa: E402
from ledger.genesis import genesis_hash  # noqa: E402
from ledger.store import Store  # noqa: E402
from ledger.tx import TxBody, sign_tx  # noqa: E402
from ledger.types import Account, Holding, Kyc  # noqa: E402
from node.validator_set import consensus_set  # noqa: E402

INSTRUMENT = "BENCH-PRELOAD"
CAP = 10**17  # the token's cap: every preloaded holding together stays within it
DB_RELATIVE = Path("data") / "node.db"


def log(text: str) -> None:
    print(f"[preload] {text}", file=sys.stderr, flush=True)


def certificate(chain: Chain, validators: dict[bytes, KeyPair], height: int, block_hash: bytes):
    """A commit certificate for `block_hash` at (height, round 0), signed by every validator."""
    data = vote_signing_bytes(chain.chain_id, VoteType.PRECOMMIT, height, 0, block_hash)
    signatures = tuple(sorted((address, key.sign(data)) for address, key in validators.items()))
    return encode_message(Commit(height, 0, block_hash, signatures))


def commit_block(chain: Chain, validators: dict[bytes, KeyPair], txs: list[bytes]) -> None:
    height = chain.height + 1
    proposer = consensus_set(chain.state.validator_set.validators).proposer(height, 0)
    pending = chain.build_block(txs, chain.last_time_ms + 1_000, proposer)
    refused = [r for r in pending.receipts if r.code != Code.OK] + list(pending.dropped)
    if refused:
        raise SystemExit(f"preload transaction refused: {Code(refused[0].code).name}")
    chain.commit(pending, certificate(chain, validators, height, pending.header.hash))


def preload(home: Path, accounts: int, amount: int, seed: int) -> dict:
    if accounts * amount > CAP:
        raise SystemExit(f"{accounts} x {amount} units exceeds the token's cap of {CAP}")
    names = sorted(p.parent.name for p in home.glob("*/genesis.json"))
    if not names:
        raise SystemExit(f"{home}: no node homes (run `khazana init --home {home}` first)")
    for name in names:
        if (home / name / DB_RELATIVE).exists():
            raise SystemExit(f"{home / name / DB_RELATIVE} exists: preload only a fresh network")
    genesis = json.loads((home / names[0] / "genesis.json").read_text())
    keys = {name: read_key_file(home / name / "node_key.json") for name in names}
    set_keys = {bytes.fromhex(v["public_key"]) for v in genesis["validators"]}
    validators = {k.address: k for k in keys.values() if k.public_key in set_keys}
    bank = read_key_file(home / "clients" / "central-bank.key")
    regulator = read_key_file(home / "clients" / "regulator.key")

    work = home / ".preload.db"
    for leftover in home.glob(".preload.db*"):
        leftover.unlink()
    started = time.monotonic()
    chain = Chain.open(work, genesis)
    register = TxBody(
        chain.chain_id,
        bank.address,
        chain.state.accounts[bank.address].nonce,
        "register_instrument",
        {
            "id": INSTRUMENT,
            "kind": "cash",
            "name": "Preloaded cash (benchmark)",
            "currency": "PKR",
            "face_value": 1,
            "decimals": 2,
            "cap": CAP,
        },
    )
    commit_block(chain, validators, [sign_tx(register, [bank]).raw])

    state = chain.state
    kyc = Kyc("PK", "retail", date(2099, 12, 31), regulator.address, None)
    rng = random.Random(seed)
    for index in range(accounts):
        address = rng.randbytes(20)
        state.put_account(Account(address, kyc=kyc))
        state.put_holding(INSTRUMENT, address, Holding(amount))
        if (index + 1) % 200_000 == 0:
            log(f"{index + 1:,} accounts written")
    instrument = state.instruments[INSTRUMENT]
    state.put_instrument(
        dataclasses.replace(instrument, supply=instrument.supply + accounts * amount)
    )
    commit_block(chain, validators, [])
    height, app_hash = chain.height, chain.app_hash
    log(
        f"state of {accounts:,} accounts committed at height {height} in "
        f"{time.monotonic() - started:.1f} s"
    )

    for name in names:
        target = home / name / DB_RELATIVE
        target.parent.mkdir(parents=True, exist_ok=True)
        chain.store.db.backup(target)  # SQLite's backup API: the whole database, WAL included
        store = Store.open(target, chain_id=genesis["chain_id"], genesis_hash=genesis_hash(genesis))
        try:
            # Nothing signed at height 3 yet: the record says so, and no signing hold starts.
            store.save_consensus_record(DurableState(height + 1, 0, Step.PROPOSE).to_bytes())
        finally:
            store.close()
    chain.close()
    for leftover in home.glob(".preload.db*"):
        leftover.unlink()
    return {"accounts": accounts, "height": height, "app_hash": app_hash.hex(), "nodes": names}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True, help="the network folder `khazana init` wrote")
    parser.add_argument("--accounts", type=_positive, required=True)
    parser.add_argument("--amount", type=_positive, default=1_000_000, help="token units each")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    print(json.dumps(preload(Path(args.home), args.accounts, args.amount, args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
