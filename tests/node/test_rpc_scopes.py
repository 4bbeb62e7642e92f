"""Who may read what (node/rpc/scopes.py) against THREATMODEL.md's table of actors.

The chain is real (a `Chain` with its store, behind test_rpc's `FakeNode`), every request goes
through the ASGI app signed with node/rpc/auth.py's scheme, and WebSocket subscriptions go
through the app's `/websocket` with an event bus the test publishes committed blocks to.

The expectations are written from the threat model's table, not from the code:

    anonymous        health, status, chain id, instrument definitions and supplies, block
                     headers and commits (no bodies); nothing else; "none": health only
    investor         its own account, holdings, transactions, events, proofs, subscriptions
    licensed VASP    accounts it onboarded or whose KYC it attested (its clients): their
                     holdings, transactions, events, subscriptions; aggregate supplies
    suspended VASP   its own account only
    institution      everything, holders lists included
    operator         everything on its own node

The cast: institutions ministry, central-bank, regulator, auditor (the test genesis's roles);
vasp-a (licensed) with clients ana (it onboarded her) and dan (the regulator onboarded him
naming vasp-a as his VASP); vasp-b (licensed) with client ben; vasp-c, suspended, whose
client is cat; eve, an investor with no VASP; the node's operator (its node key).
"""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
import trio

from ledger.chain import Chain
from ledger.crypto import address_to_text
from ledger.tx import TxBody, decode_signed_tx, sign_tx
from node.events import CommittedBlock, EventBus
from node.rpc import scopes as rules
from node.rpc.app import RpcApp
from node.rpc.limits import RpcLimits
from node.rpc.methods import RpcMethods
from tests.ledger.test_chain import CHAIN_ID, DAY_MS, GENESIS_MS, genesis, key
from tests.node.rpcauth import auth_headers
from tests.node.test_rpc import FakeNode, certificate

INSTITUTIONS = ("ministry", "central-bank", "regulator", "auditor")
OPERATOR = "operator"
READ_ALL = (*INSTITUTIONS, OPERATOR)
LICENSED_VASPS = {"vasp-a": {"ana", "dan"}, "vasp-b": {"ben"}}  # and their clients
SUSPENDED_VASP = "vasp-c"
INVESTORS = ("ana", "ben", "cat", "dan", "eve")
READERS = ("anonymous", "ana", "eve", "vasp-a", "vasp-b", SUSPENDED_VASP, *READ_ALL)
TARGETS = ("ana", "ben", "cat", "dan", "eve", "vasp-a", "vasp-c", "regulator")


def signer_of(reader: str):
    if reader == "anonymous":
        return None
    if reader == OPERATOR:
        return key("validator-ministry")  # FakeNode's node key
    return key(reader)


def may_read_account(reader: str, target: str) -> bool:
    """The threat model's table, for one account's data (account, holdings, txs, events)."""
    if reader in READ_ALL:
        return True
    if reader == "anonymous":
        return False
    if reader == target:
        return True  # investors and VASPs (suspended too) read their own account
    return target in LICENSED_VASPS.get(reader, set())


# --------------------------------------------------------------------------- the chain


class Txs:
    def __init__(self) -> None:
        self.nonces: dict[str, int] = {}

    def tx(self, sender: str, op: str, args: dict, *cosigners: str) -> bytes:
        nonce = self.nonces.get(sender, 0)
        self.nonces[sender] = nonce + 1
        body = TxBody(CHAIN_ID, key(sender).address, nonce, op, args)
        return sign_tx(body, [key(sender), *(key(c) for c in cosigners)]).raw


def onboard(txs: Txs, by: str, investor: str, vasp: str | None = None) -> bytes:
    args = {
        "investor": key(investor).address,
        "country": "PK",
        "category": "retail",
        "kyc_expiry": "2030-01-01",
    }
    if vasp is not None:
        args["vasp"] = key(vasp).address
    return txs.tx(by, "onboard_investor", args)


def cash(txs: Txs, to: str, amount: int) -> bytes:
    args = {"instrument": "PKR", "to": key(to).address, "amount": amount}
    return txs.tx("central-bank", "issue", args)


class World:
    """The chain, the node, and the hashes of the transactions the tests read."""

    def __init__(self, path) -> None:
        self.chain = Chain.open(path, genesis())
        self.node = FakeNode(self.chain)
        self.node.events = EventBus()
        self.txs = Txs()
        self.day = 0
        self.hashes: dict[str, str] = {}
        t = self.txs
        register = t.tx(
            "central-bank",
            "register_instrument",
            {
                "id": "PKR",
                "kind": "cash",
                "name": "Digital rupee",
                "currency": "PKR",
                "face_value": 1,
                "decimals": 2,
                "cap": 10**15,
            },
        )
        licences = [
            t.tx("regulator", "license_vasp", {"vasp": key(v).address, "name": v})
            for v in ("vasp-a", "vasp-b", SUSPENDED_VASP)
        ]
        self.commit([register, *licences])
        investors = {
            "ana": onboard(t, "vasp-a", "ana"),
            "ben": onboard(t, "vasp-b", "ben"),
            "cat": onboard(t, SUSPENDED_VASP, "cat"),
            "dan": onboard(t, "regulator", "dan", vasp="vasp-a"),
            "eve": onboard(t, "regulator", "eve"),
        }
        self.commit(list(investors.values()))
        issues = {name: cash(t, name, 10_000) for name in INVESTORS}
        self.commit(list(issues.values()))
        transfer = t.tx(
            "ana", "transfer", {"instrument": "PKR", "to": key("ben").address, "amount": 100}
        )
        self.commit([transfer])
        suspend = t.tx(
            "regulator", "suspend_vasp", {"vasp": key(SUSPENDED_VASP).address, "reason": "x"}
        )
        self.commit([suspend])
        for name, raw in {**{f"issue-{n}": r for n, r in issues.items()}}.items():
            self.hashes[name] = decode_signed_tx(raw).tx_id.hex()
        self.hashes["transfer"] = decode_signed_tx(transfer).tx_id.hex()
        self.hashes["onboard-cat"] = decode_signed_tx(investors["cat"]).tx_id.hex()

    def commit(self, raws: list[bytes]):
        self.day += 1
        pending = self.chain.build_block(
            raws, GENESIS_MS + self.day * DAY_MS, key("validator-ministry").address
        )
        assert all(r.code == 0 for r in pending.receipts), [r.log for r in pending.receipts]
        self.chain.commit(pending, certificate(pending.header.height, pending.header.hash))
        self.node.events.publish(CommittedBlock.of(pending.block, pending.receipts))
        return pending


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("scopes") / "node.db")
    yield w
    w.chain.close()


@pytest.fixture(scope="module")
def app(world):
    return RpcApp(world.node)


# --------------------------------------------------------------------------- driving the app


async def _post(app, body: bytes, signer) -> tuple[int, dict]:
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    headers = auth_headers(app, "POST", "/", body, signer)
    await app({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


def call(app, reader: str, method: str, params: dict | None = None) -> dict:
    request = {"jsonrpc": "2.0", "id": 7, "method": method, "params": params or {}}
    body = json.dumps(request).encode()
    status, answer = trio.run(_post, app, body, signer_of(reader))
    assert status == 200, answer
    return answer


def allowed(answer: dict) -> bool:
    """True for a result (or a not-found, or a proof this fake node cannot make: the call was
    let through), False for a -32004; anything else is a test failure."""
    if "result" in answer:
        return True
    error = answer["error"]
    if error["code"] in (-32001, -32003):
        return True
    assert error["code"] == -32004, answer
    assert error["message"] in ("unauthorized", "forbidden")
    assert isinstance(error["data"]["rule"], str) and error["data"]["rule"]
    return False


def refusal(answer: dict) -> str:
    return answer["error"]["message"]


def addr(name: str) -> str:
    return address_to_text(key(name).address)


# --------------------------------------------------------------------------- the matrix


PUBLIC_METHODS = [
    ("health", {}),
    ("status", {}),
    ("validators", {}),
    ("block", {"height": 2}),
    ("commit", {"height": 2}),
    ("instrument", {"id": "PKR"}),
    ("instruments", {}),
]
INSTITUTION_METHODS = [
    ("holders", {"id": "PKR"}),
    ("genesis", {}),
    ("net_info", {}),
    ("num_unconfirmed_txs", {}),
    ("events", {}),  # no account=: every account's events
    ("events", {"instrument": "PKR"}),
]


@pytest.mark.parametrize("reader", READERS)
def test_public_row_is_everyones_and_the_rest_is_for_institutions(app, reader):
    for method, params in PUBLIC_METHODS:
        assert allowed(call(app, reader, method, params)), (reader, method)
    for method, params in INSTITUTION_METHODS:
        answer = call(app, reader, method, params)
        assert allowed(answer) == (reader in READ_ALL), (reader, method, params, answer)
        if reader == "anonymous":
            assert refusal(answer) == "unauthorized"
        elif reader not in READ_ALL:
            assert refusal(answer) == "forbidden"


@pytest.mark.parametrize("reader", READERS)
def test_block_bodies_only_for_those_who_read_everything(app, reader):
    block = call(app, reader, "block", {"height": 2})["result"]["block"]
    assert block["header"]["height"] == 2
    if reader in READ_ALL:
        assert len(block["txs"]) == 5  # the five onboardings
    else:
        assert block["txs"] is None


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("target", TARGETS)
def test_account_data_follows_the_table(app, reader, target):
    expected = may_read_account(reader, target)
    for method, params in (
        ("account", {"address": addr(target)}),
        ("account", {"address": addr(target), "prove": True}),
        ("events", {"account": addr(target)}),
        ("events", {"account": addr(target), "instrument": "PKR", "per_page": 5}),
    ):
        answer = call(app, reader, method, params)
        assert allowed(answer) == expected, (reader, target, method, params, answer)
        if not expected:
            assert refusal(answer) == ("unauthorized" if reader == "anonymous" else "forbidden")
        elif method == "events":
            # Every event on the page names the account asked for.
            assert all(
                addr(target) in json.dumps(e["attributes"]) for e in answer["result"]["events"]
            )
            if target in INVESTORS:
                assert answer["result"]["events"], (reader, target)


@pytest.mark.parametrize("reader", READERS)
def test_transactions_follow_the_accounts_they_name(app, world, reader):
    # issue-X names only X (and the central bank, which no non-institution may read).
    for name in INVESTORS:
        for prove in (False, True):
            params = {"hash": world.hashes[f"issue-{name}"], "prove": prove}
            answer = call(app, reader, "tx", params)
            assert allowed(answer) == may_read_account(reader, name), (reader, name, answer)
    # The transfer names ana and ben: either's readers read it.
    answer = call(app, reader, "tx", {"hash": world.hashes["transfer"]})
    expected = may_read_account(reader, "ana") or may_read_account(reader, "ben")
    assert allowed(answer) == expected, (reader, answer)
    # The suspended VASP's own onboarding of cat: its own transaction.
    answer = call(app, reader, "tx", {"hash": world.hashes["onboard-cat"]})
    expected = may_read_account(reader, SUSPENDED_VASP) or may_read_account(reader, "cat")
    assert allowed(answer) == expected, (reader, answer)


def test_a_non_institution_sees_only_the_events_it_may_read(app, world):
    # A coupon-like fan-out: one tx, events naming several investors. The transfer's event
    # names both parties, so each party sees it; the central bank's issue events name one.
    answer = call(app, "ana", "tx", {"hash": world.hashes["transfer"]})["result"]
    assert answer["tx_result"]["events"]
    for event in answer["tx_result"]["events"]:
        assert addr("ana") in json.dumps(event["attributes"])
    everything = call(app, "regulator", "tx", {"hash": world.hashes["transfer"]})["result"]
    # Everything but ben's balance change (protocol version 3: one per account).
    hidden = [
        e for e in everything["tx_result"]["events"] if e not in answer["tx_result"]["events"]
    ]
    assert [(e["type"], e["attributes"]["account"]) for e in hidden] == [
        ("balance_change", addr("ben"))
    ]


def balance_changes(events: list[dict]) -> set[tuple[str, int]]:
    return {
        (e["attributes"]["account"], e["attributes"]["amount"])
        for e in events
        if e["type"] == "balance_change"
    }


@pytest.mark.parametrize("reader", READERS)
def test_balance_changes_only_of_accounts_the_reader_may_read(app, world, reader):
    """The transfer ana -> ben debits ana and credits ben: each reader sees the balance
    changes of the accounts it may read, in the tx result and in the audit trail."""
    answer = call(app, reader, "tx", {"hash": world.hashes["transfer"]})
    readable = {n for n in ("ana", "ben") if may_read_account(reader, n)}
    assert allowed(answer) == bool(readable), (reader, answer)
    if not readable:
        return
    expected = {(addr(n), {"ana": -100, "ben": 100}[n]) for n in readable}
    assert balance_changes(answer["result"]["tx_result"]["events"]) == expected
    for name in readable:
        rows = call(app, reader, "events", {"account": addr(name)})["result"]["events"]
        mine = {(addr(name), 10_000), (addr(name), {"ana": -100, "ben": 100}[name])}
        assert mine <= balance_changes(rows)  # its issue and its side of the transfer
        assert {account for account, _ in balance_changes(rows)} == {addr(name)}


@pytest.mark.parametrize("reader", ["ana", "vasp-b", "regulator"])
def test_an_account_subscription_delivers_the_balance_changes_the_reader_may_read(world, reader):
    app = RpcApp(world.node)
    watched = {"ana": "ana", "vasp-b": "ben", "regulator": "ben"}[reader]

    async def main():
        async with websocket(app, reader) as ws:
            query = f"tm.event='Tx' AND account='{addr(watched)}'"
            assert allowed(await ws.call("subscribe", {"query": query}))
            await ws.call("subscribe", {"query": f"balance_change.account='{addr(watched)}'"})
            transfer = world.txs.tx(
                "ana", "transfer", {"instrument": "PKR", "to": key("ben").address, "amount": 7}
            )
            world.commit([transfer])
            # One notification per subscription (account= and balance_change.account=).
            got = await ws.notifications()
            assert len(got) == 2
            for notification in got:
                events = notification["result"]["data"]["value"]["tx_result"]["events"]
                seen = balance_changes(events)
                both = {(addr("ana"), -7), (addr("ben"), 7)}
                assert seen == (
                    both if reader == "regulator" else {s for s in both if s[0] == addr(watched)}
                )

    trio.run(main)


# --------------------------------------------------------------------------- submissions


def test_who_may_submit_what(app, world):
    """check_tx runs the submission rule and stores nothing."""
    t = Txs()  # nonces do not matter for the rule: refusals by the ledger are results
    own = {
        name: t.tx(name, "transfer", {"instrument": "PKR", "to": key("eve").address, "amount": 1})
        for name in ("ana", "ben", "eve")
    }

    def submit(reader: str, sender: str) -> dict:
        tx = base64.b64encode(own[sender]).decode()
        return call(app, reader, "check_tx", {"tx": tx})

    expectations = {
        # reader: senders whose transactions it may submit
        "anonymous": set(),
        "ana": {"ana"},
        "eve": {"eve"},
        "vasp-a": {"ana"},  # its client
        "vasp-b": {"ben"},
        SUSPENDED_VASP: set(),
        **{r: {"ana", "ben", "eve"} for r in READ_ALL},
    }
    for reader, senders in expectations.items():
        for sender in own:
            assert allowed(submit(reader, sender)) == (sender in senders), (reader, sender)
    # A co-signer may relay what it signed.
    cosigned = t.tx(
        "eve", "transfer", {"instrument": "PKR", "to": key("ana").address, "amount": 1}, "ben"
    )
    tx = base64.b64encode(cosigned).decode()
    assert allowed(call(app, "ben", "broadcast_tx_sync", {"tx": tx}))


# --------------------------------------------------------------------------- anonymous = none


def test_anonymous_none_answers_only_health(world):
    closed = RpcApp(world.node, RpcLimits(anonymous="none"))
    assert allowed(call(closed, "anonymous", "health"))
    for method, params in PUBLIC_METHODS[1:]:
        answer = call(closed, "anonymous", method, params)
        assert not allowed(answer) and refusal(answer) == "unauthorized"
        # ...and says what to sign over.
        assert answer["error"]["data"]["chain_id"] == CHAIN_ID
        assert answer["error"]["data"]["node_id"] == world.node.node_id
    assert allowed(call(closed, "eve", "status"))


# --------------------------------------------------------------------------- subscriptions


class Ws:
    """One WebSocket connection to the app, in-process (ASGI messages over trio channels)."""

    def __init__(self, to_app, from_app) -> None:
        self.to_app = to_app
        self.from_app = from_app
        self.accepted = False
        self.held: list[dict] = []

    async def call(self, method: str, params: dict) -> dict:
        request = {"jsonrpc": "2.0", "id": method, "method": method, "params": params}
        await self.to_app.send({"type": "websocket.receive", "text": json.dumps(request)})
        while True:
            message = await self.from_app.receive()
            answer = json.loads(message["text"])
            if answer.get("id") == method and "data" not in (answer.get("result") or {}):
                return answer
            self.held.append(answer)

    async def notifications(self, settle_s: float = 0.5) -> list[dict]:
        """What arrives until nothing more has for `settle_s` (the rights are read from the
        store on a worker thread, which trio's wait_all_tasks_blocked does not wait for)."""
        got, self.held = self.held, []
        while True:
            with trio.move_on_after(settle_s):
                got.append(json.loads((await self.from_app.receive())["text"]))
                continue
            return got


@contextlib.asynccontextmanager
async def websocket(app, reader: str, via_query: bool = False):
    """`via_query`: the credential as `?auth=` (what a browser does), not a header."""
    to_app_send, to_app_receive = trio.open_memory_channel(100)
    from_app_send, from_app_receive = trio.open_memory_channel(1000)
    headers = auth_headers(app, "GET", "/websocket", b"", signer_of(reader))
    query = b""
    if via_query and headers:
        query = b"auth=" + headers[0][1].split(b" ", 1)[1]
        headers = []
    scope = {"type": "websocket", "path": "/websocket", "headers": headers, "query_string": query}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(app, scope, to_app_receive.receive, from_app_send.send)
        await to_app_send.send({"type": "websocket.connect"})
        first = await from_app_receive.receive()
        ws = Ws(to_app_send, from_app_receive)
        ws.accepted = first["type"] == "websocket.accept"
        yield ws
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("reader", READERS)
def test_subscriptions_follow_the_table(world, reader):
    app = RpcApp(world.node)

    async def main():
        async with websocket(app, reader) as ws:
            assert ws.accepted
            answer = await ws.call("subscribe", {"query": "tm.event='NewBlock'"})
            assert allowed(answer), answer
            answer = await ws.call("subscribe", {"query": "tm.event='Tx'"})
            assert allowed(answer) == (reader in READ_ALL), answer
            for target in TARGETS:
                query = f"tm.event='Tx' AND account='{addr(target)}'"
                answer = await ws.call("subscribe", {"query": query})
                assert allowed(answer) == may_read_account(reader, target), (target, answer)
                query = f"balance_change.account='{addr(target)}'"
                answer = await ws.call("subscribe", {"query": query})
                assert allowed(answer) == may_read_account(reader, target), (target, answer)
                await ws.call("unsubscribe", {"query": query})  # room under the per-client cap
            await ws.call("unsubscribe_all", {})
            await ws.call("subscribe", {"query": "tm.event='NewBlock'"})
            if reader in READ_ALL:
                await ws.call("subscribe", {"query": "tm.event='Tx'"})
            world.commit([cash(world.txs, "eve", 1)])
            got = await ws.notifications()
            blocks = [n for n in got if n["result"]["data"]["type"] == "NewBlock"]
            assert len(blocks) == 1
            txs = blocks[0]["result"]["data"]["value"]["block"]["txs"]
            assert (txs is not None) == (reader in READ_ALL)
            assert len(got) == (2 if reader in READ_ALL else 1)

    trio.run(main)


def test_websocket_handshake_credentials(world):
    app = RpcApp(world.node, RpcLimits(anonymous="none"))

    async def main():
        async with websocket(app, "anonymous") as ws:
            answer = await ws.call("subscribe", {"query": "tm.event='NewBlock'"})
            assert refusal(answer) == "unauthorized"
        async with websocket(app, "ana") as ws:
            assert allowed(await ws.call("subscribe", {"query": "tm.event='NewBlock'"}))
            # Calls on the socket carry the connection's credentials.
            answer = await ws.call("account", {"address": addr("ana")})
            assert answer["result"]["address"] == addr("ana")
            assert refusal(await ws.call("account", {"address": addr("ben")})) == "forbidden"
        async with websocket(app, "ana", via_query=True) as ws:  # a browser's way
            answer = await ws.call("account", {"address": addr("ana")})
            assert answer["result"]["address"] == addr("ana")

    trio.run(main)


# --------------------------------------------------------------------------- rights follow the chain


def test_a_suspension_and_a_revoked_role_take_effect_from_the_first_answer_after_their_block(
    tmp_path,
):
    world = World(tmp_path / "node.db")
    app = RpcApp(world.node)
    ana = {"address": addr("ana")}
    on_ana = f"tm.event='Tx' AND account='{addr('ana')}'"

    def freeze_ana(action: str) -> bytes:
        args = {"account": key("ana").address, "reason_code": 1, "legal_reference": "order 7"}
        return world.txs.tx("regulator", action, args)

    async def main():
        async with websocket(app, "vasp-a") as vasp, websocket(app, "auditor") as auditor:
            assert allowed(await vasp.call("subscribe", {"query": on_ana}))
            assert allowed(await auditor.call("subscribe", {"query": on_ana}))
            answer = await _call(app, "vasp-a", "account", ana)
            assert answer["result"]["address"] == addr("ana")
            world.commit([freeze_ana("freeze")])
            assert len(await vasp.notifications()) == 1  # still licensed at that block
            assert len(await auditor.notifications()) == 1

            suspend = world.txs.tx(
                "regulator", "suspend_vasp", {"vasp": key("vasp-a").address, "reason": "audit"}
            )
            world.commit([suspend])
            # The first answer after the block: refused, by HTTP and on the open socket.
            assert refusal(await _call(app, "vasp-a", "account", ana)) == "forbidden"
            assert refusal(await vasp.call("account", ana)) == "forbidden"
            assert allowed(await _call(app, "vasp-a", "account", {"address": addr("vasp-a")}))
            world.commit([freeze_ana("unfreeze")])
            assert await vasp.notifications() == []  # its subscription stays silent
            assert len(await auditor.notifications()) == 1

            reinstate = world.txs.tx(
                "regulator", "license_vasp", {"vasp": key("vasp-a").address, "name": "vasp-a"}
            )
            world.commit([reinstate])
            assert allowed(await _call(app, "vasp-a", "account", ana))

            revoke = world.txs.tx(
                "regulator",
                "revoke_role",
                {"account": key("auditor").address, "role": "auditor"},
                "ministry",
            )
            assert allowed(await _call(app, "auditor", "account", ana))
            world.commit([revoke])
            assert refusal(await _call(app, "auditor", "account", ana)) == "forbidden"
            assert refusal(await _call(app, "auditor", "holders", {"id": "PKR"})) == "forbidden"
            world.commit([freeze_ana("freeze")])
            assert await auditor.notifications() == []
            assert len(await vasp.notifications()) == 1  # licensed again

    try:
        trio.run(main)
    finally:
        world.chain.close()


async def _call(app, reader: str, method: str, params: dict) -> dict:
    request = {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}
    status, answer = await _post(app, json.dumps(request).encode(), signer_of(reader))
    assert status == 200, answer
    return answer


def test_a_recovered_account_is_read_with_its_new_key_and_the_old_one_is_dead(tmp_path):
    world = World(tmp_path / "node.db")
    app = RpcApp(world.node)
    new_key = key("ana-new")
    recover = world.txs.tx(
        "regulator",
        "recover_key",
        {"account": key("ana").address, "new_public_key": new_key.public_key},
        "central-bank",
    )

    async def main():
        ana = {"address": addr("ana")}
        assert (await _call(app, "ana", "account", ana))["result"]["address"] == addr("ana")
        world.commit([recover])
        old = await _call(app, "ana", "account", ana)
        assert refusal(old) == "unauthorized"
        assert old["error"]["data"]["rule"] == "auth.key_replaced"
        request = {"jsonrpc": "2.0", "id": 7, "method": "account", "params": ana}
        status, answer = await _post(app, json.dumps(request).encode(), new_key)
        assert status == 200 and answer["result"]["address"] == addr("ana")
        # The new key's own derived address is not ana's: it reads ana, not itself.
        request["params"] = {"address": address_to_text(new_key.address)}
        status, answer = await _post(app, json.dumps(request).encode(), new_key)
        assert refusal(answer) == "forbidden"

    try:
        trio.run(main)
    finally:
        world.chain.close()


def test_every_method_has_its_rule_and_an_unknown_one_is_closed():
    assert set(RpcMethods(None).table) <= set(rules.METHOD_RULES)
    assert rules.DEFAULT_RULE == rules.INSTITUTIONS
