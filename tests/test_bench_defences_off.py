"""The benchmark harness's "without the defences" side (scripts/benchlib/defences_off) really
switches them off, only when asked, and only in the processes it is given to.

The issue 13/14 throughput goals compare the node with its defences on against the same
node without them (`scripts/bench_ab.py --base-defences-off`). If the harness silently
failed to switch them off, the comparison would be like against like and always pass; if it
switched them off without being asked, a node could be run defenceless. So one probe runs in
three fresh interpreters -- the switch off, the path alone, the path and the switch -- and
reads three defences directly: a sender's mempool share, the RPC guard's Host allowlist and
request authentication.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ledger.codes import Code

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "scripts/benchlib/defences_off"

PROBE = r"""
import json
from types import SimpleNamespace

import trio

from node.mempool import Mempool, MempoolLimits
from node.rpc.app import RpcApp
from node.rpc.auth import Authenticator
from node.rpc.errors import RpcError
from node.rpc.guard import Guard
from node.rpc.limits import RpcLimits
from node.rpc.scopes import Scopes
from tests.node.test_mempool import CHAIN_ID, transfer, view
from tests.node.test_mempool_defence import squat_world

# A sender's share: three transactions, the fourth refused.
state = squat_world(1)
pool = Mempool(MempoolLimits(max_txs_per_sender=3), CHAIN_ID)
codes = [pool.add_gossiped(transfer("alice", n, "bob", 1), view(state)).code for n in range(4)]

# The guard: a foreign Host header.
reached = []

async def app(scope, receive, send):
    reached.append(scope["path"])
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})

async def guarded_call():
    sent = []
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}
    async def send(message):
        sent.append(message)
    scope = {
        "type": "http", "method": "POST", "path": "/",
        "headers": [(b"host", b"attacker.example"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 26657),
    }
    await Guard(app, RpcLimits())(scope, receive, send)
    return sent[0]["status"]

status = trio.run(guarded_call)

# Authentication: a forged credential.
node = SimpleNamespace(auth=Authenticator(CHAIN_ID, "node"), scopes=Scopes(None))
scope = {"method": "POST", "path": "/", "headers": [(b"authorization", b"Khazana forged")]}
try:
    who = RpcApp._authenticate(node, scope, b"{}")
    auth = "accepted" if who is None else "verified"
except RpcError as refused:
    auth = f"refused {refused.code}"

print(json.dumps({"codes": codes, "foreign_host": status, "forged_credential": auth}))
"""


def probe(pythonpath: str | None, switch: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KHAZANA_BENCH_DEFENCES")}
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    if switch is not None:
        env["KHAZANA_BENCH_DEFENCES"] = switch
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_defences_are_on_unless_the_harness_is_on_the_path_and_switched_off():
    defended = {
        "codes": [0, 0, 0, Code.SENDER_QUOTA],
        "foreign_host": 403,
        "forged_credential": "refused -32004",
    }
    assert probe(None, "off") == defended  # the switch alone does nothing
    assert probe(str(HARNESS), None) == defended  # nor the path alone
    assert probe(str(HARNESS), "on") == defended
    assert probe(str(HARNESS), "off") == {
        "codes": [0, 0, 0, 0],
        "foreign_host": 200,
        "forged_credential": "accepted",
    }
