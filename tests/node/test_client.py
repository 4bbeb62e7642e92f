"""The Python SDK (`node/client/`) against a real node: one validator started with
`python -m node start` on loopback (`tests/node/netsupport.Net`), killed at the end.

Expectations come from the ledger's own rules and objects (codes from `ledger.codes.Code`,
ids from `ledger.tx`, the genesis file on disk), not from the SDK's output. The scenario test
sends every ledger operation through `TxBuilder` and checks the ledger's verdict on each.
"""

from __future__ import annotations

import copy
import inspect
import json
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
import trio

from ledger.codes import Code
from ledger.crypto import generate_key, read_key_file
from ledger.ops import OPERATIONS
from ledger.ops.instruments import isin_is_valid
from ledger.tx import decode_signed_tx
from node.client import (
    OPS,
    AsyncClient,
    BuildError,
    Client,
    CommitTimeout,
    NodeUnreachable,
    ProofError,
    ProtocolError,
    RpcError,
    TrustedValidators,
    TxBuilder,
    TxRejected,
    add_signatures,
    read_tx_file,
    sign,
    verify_account,
    verify_tx,
    write_tx_file,
)
from node.client.core import HttpResponseParser, Plans, Sleep, decode_response
from tests.node.netsupport import Net, free_base_port, free_ports

STARTUP_S = 20


def isin(prefix: str) -> str:
    """A valid ISIN from an 11-character prefix (the ledger's own check-digit rule)."""
    return next(prefix + str(d) for d in range(10) if isin_is_valid(prefix + str(d)))


def closed_port() -> int:
    """A loopback port nothing listens on (reserved for this process, tests/node/netsupport)."""
    return free_ports(1)


class Node:
    """A one-validator network: its URL, genesis and the institutions' client keys."""

    def __init__(self, root: Path) -> None:
        self.net = Net(root, free_base_port(1), validators=1, chain_id="khazana-sdktest")
        self.name = self.net.names[0]
        self.url = self.net.urls[self.name]
        self.root = root
        self.genesis = self.net.genesis
        self.keys = {n: read_key_file(p) for n, p in self.net.network.clients}
        self.key_files = {n: str(p) for n, p in self.net.network.clients}
        # Reads as an institution (everything); tests/node/test_rpc_scopes.py tests who may
        # read what.
        self.reader = self.keys["ministry"]

    def start(self) -> None:
        self.net.start(self.name)
        client = Client(self.url, timeout_s=2)
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                if client.status().height >= 1:
                    return
            except NodeUnreachable:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(self.net.log(self.name)[-1500:])
            time.sleep(0.1)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    node = Node(tmp_path_factory.mktemp("sdk"))
    try:
        node.start()
        yield node
    finally:
        node.net.stop_all()


def today_plus(days: int) -> str:
    # Block dates follow the proposer's wall clock, so instrument dates are set around today.
    return (date.today() + timedelta(days=days)).isoformat()


def bond(instrument_id: str, prefix: str, **overrides) -> object:
    # Issued a month ago, maturing five years after issue: coupons fall on the issue day
    # every six months, so the next one (and its closed period) is months away.
    issue = date.today() - timedelta(days=30)
    issue = issue.replace(day=min(issue.day, 28))
    fields = dict(
        id=instrument_id,
        kind="bond",
        name="5-year USD sovereign bond",
        currency="USD",
        face_value=100_000,
        decimals=0,
        cap=1_000_000,
        usd_face_value=100_000,
        isin=isin(prefix),
        issue_date=issue.isoformat(),
        maturity_date=issue.replace(year=issue.year + 5).isoformat(),
        coupon_rate="0.045",
        coupon_frequency=2,
        day_count="30/360",
    )
    return TxBuilder.register_instrument(**(fields | overrides))


def cash_token(instrument_id: str = "USD-CASH") -> object:
    return TxBuilder.register_instrument(
        id=instrument_id,
        kind="cash",
        name="central bank dollar",
        currency="USD",
        face_value=1,
        decimals=2,
        cap=10**15,
    )


# --------------------------------------------------------------------------- offline


def test_op_table_names_every_ledger_operation_and_builder_parameters_match():
    assert set(OPS) == set(OPERATIONS)
    for name, spec in OPS.items():
        builder = getattr(TxBuilder, name)
        parameters = inspect.signature(builder).parameters
        assert [a.param for a in spec.args] == list(parameters), name
        for arg in spec.args:
            has_default = parameters[arg.param].default is not inspect.Parameter.empty
            assert has_default == (not arg.required), (name, arg.name)


def test_builders_convert_to_wire_form_and_refuse_bad_values():
    receiver = generate_key(b"r" * 32)
    operation = TxBuilder.transfer(instrument="X", to=receiver.address_text, amount=5)
    assert operation.args == {"instrument": "X", "to": receiver.address, "amount": 5}
    attest = TxBuilder.attest_reserve(instrument="OIL", quantity=3, document_hash="ab" * 32)
    assert attest.args["document_hash"] == bytes.fromhex("ab" * 32)
    coupon = TxBuilder.pay_coupon(instrument="B", cash="C", coupon_date=date(2027, 1, 15))
    assert coupon.args["coupon_date"] == "2027-01-15"
    forced = TxBuilder.forced_transfer(
        instrument="B",
        from_=receiver.address_text,
        to=receiver.address,
        amount=1,
        reason_code=7,
        legal_reference="order 1",
    )
    assert forced.args["from"] == receiver.address and "from_" not in forced.args
    with pytest.raises(BuildError, match="amount"):
        TxBuilder.transfer(instrument="X", to=receiver.address_text, amount=0)
    with pytest.raises(BuildError, match="to"):
        TxBuilder.transfer(instrument="X", to="kz1notanaddress", amount=1)
    with pytest.raises(BuildError, match="coupon_date"):
        TxBuilder.pay_coupon(instrument="B", cash="C", coupon_date="15/01/2027")
    with pytest.raises(BuildError, match="float"):
        TxBuilder.set_parameter(name="closed_period_days", value=1.5)


def test_signed_file_round_trip_and_cosigning(tmp_path):
    regulator, ministry = generate_key(b"g" * 32), generate_key(b"m" * 32)
    operation = TxBuilder.freeze(account=ministry.address_text, reason_code=1, legal_reference="x")
    tx = sign(operation.body("khazana-sdktest", regulator.address, 4), [regulator])
    path = tmp_path / "tx.json"
    document = write_tx_file(path, tx)
    assert document["signers"] == [regulator.address_text]
    assert document["op"] == "freeze" and document["nonce"] == 4
    # The default policy: freeze needs one regulator; the summary counts signers only.
    assert document["policy"]["min"] == 1 and document["signatures_still_needed"] == 0
    cosigned = add_signatures(read_tx_file(path), [ministry])
    assert cosigned.tx_id == tx.tx_id  # the id names the body: co-signing never changes it
    assert set(cosigned.signers) == {regulator.public_key, ministry.public_key}
    # A tampered file is refused: its signature no longer verifies.
    forged = dict(document)
    raw = bytearray(tx.raw)
    raw[-1] ^= 1
    forged["tx"] = __import__("base64").b64encode(bytes(raw)).decode()
    path.write_text(json.dumps(forged))
    with pytest.raises(Exception, match="does not verify"):
        read_tx_file(path)


def test_http_parser_handles_lengths_chunks_and_bounds():
    parser = HttpResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel")
    assert parser.result() is None
    parser.feed(b"lo")
    assert parser.result() == (200, b"hello")
    chunked = HttpResponseParser()
    chunked.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n")
    assert chunked.result() is None
    chunked.feed(b"0\r\n\r\n")
    assert chunked.result() == (200, b"abcde")
    truncated = HttpResponseParser()
    truncated.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    truncated.feed(b"")
    with pytest.raises(ProtocolError, match="3 of 10"):
        truncated.result()
    bounded = HttpResponseParser(limit=100)
    with pytest.raises(ProtocolError, match="larger than 100"):
        bounded.feed(b"x" * 101)


def test_decode_response_maps_errors():
    error = (
        b'{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"h"},"id":1}'
    )
    with pytest.raises(RpcError) as caught:
        decode_response(200, error, 1)
    assert (caught.value.code, caught.value.data) == (-32602, "h")
    with pytest.raises(ProtocolError):
        decode_response(502, b"<html>bad gateway</html>", 1)
    with pytest.raises(ProtocolError, match="id"):
        decode_response(200, b'{"jsonrpc":"2.0","result":{},"id":9}', 1)


def test_unreachable_node_raises_node_unreachable_in_both_flavours():
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(NodeUnreachable, match="refused"):
        Client(url, timeout_s=2).status()

    async def main():
        with pytest.raises(NodeUnreachable, match="refused"):
            await AsyncClient(url, timeout_s=2).status()

    trio.run(main)


# --------------------------------------------------------------------------- against a node


def test_reads_round_trip(node):
    client = Client(node.url, key=node.reader)
    assert client.health() == {}
    status = client.status()
    assert status.chain_id == "khazana-sdktest" and status.height >= 1
    assert client.genesis() == node.genesis
    validators = client.validators()
    assert [v["pub_key"] for v in validators["validators"]] == [
        v["public_key"] for v in node.genesis["validators"]
    ]
    block = client.block(1)
    assert block["block"]["header"]["height"] == 1
    commit = client.commit(1)
    assert commit["signed_header"]["header"]["height"] == 1
    assert client.net_info()["n_peers"] == 0
    assert set(client.num_unconfirmed_txs()) >= {"n_txs", "total_bytes"}
    with pytest.raises(RpcError) as caught:
        client.instrument("NO-SUCH")
    assert caught.value.code == -32001
    ministry = node.keys["ministry"]
    assert client.account(ministry.address_text)["name"] == "ministry"
    assert client.next_nonce(generate_key(b"n" * 32).address) == 0


def expect(client: Client, operation, keys, code: Code, **kwargs):
    """Send and check the ledger's verdict: committed for OK, else TxRejected with `code`."""
    if code is Code.OK:
        committed = client.send(operation, keys, **kwargs)
        assert committed.code == 0 and committed.height >= 1
        return committed
    with pytest.raises(TxRejected) as caught:
        client.send(operation, keys, **kwargs)
    assert caught.value.code == code, caught.value
    assert caught.value.name == code.name
    return caught.value


def test_every_operation_through_the_builders(node):
    client = Client(node.url, key=node.reader)
    k = node.keys
    ministry, bank, regulator, auditor = (
        k["ministry"],
        k["central-bank"],
        k["regulator"],
        k["auditor"],
    )
    vasp, alice, bob = (generate_key(bytes([i]) * 32) for i in (11, 12, 13))
    b = TxBuilder
    expect(client, bond("SDK-BOND", "US00000SDK0"), [ministry], Code.OK)
    tbill = b.register_instrument(
        id="SDK-TBILL",
        kind="tbill",
        name="91-day bill",
        currency="USD",
        face_value=100,
        decimals=0,
        cap=10_000,
        usd_face_value=100,
        isin=isin("US00000TBL0"),
        issue_date=today_plus(-1),
        maturity_date=today_plus(90),
    )
    expect(client, tbill, [ministry], Code.OK)
    oil = b.register_instrument(
        id="SDK-OIL",
        kind="commodity",
        name="oil reserve",
        currency="USD",
        face_value=8_000,
        decimals=0,
        cap=1_000,
        usd_face_value=8_000,
        unit="barrel",
    )
    expect(client, oil, [ministry], Code.OK)
    expect(client, cash_token("SDK-CASH"), [bank], Code.OK)
    expect(client, bond("SDK-BOND", "US00000SDK0"), [ministry], Code.INSTRUMENT_EXISTS)
    expect(client, b.license_vasp(vasp=vasp.address_text, name="Exchange"), [regulator], Code.OK)
    for investor, country in ((alice, "FR"), (bob, "IN")):
        onboard = b.onboard_investor(
            investor=investor.address_text,
            country=country,
            category="retail",
            kyc_expiry=today_plus(365),
            vasp=vasp.address_text,
        )
        expect(client, onboard, [regulator], Code.OK)
    expect(
        client,
        b.issue(instrument="SDK-BOND", to=alice.address_text, amount=100),
        [ministry],
        Code.OK,
    )
    expect(
        client, b.issue(instrument="SDK-CASH", to=bob.address_text, amount=50_000), [bank], Code.OK
    )
    expect(
        client,
        b.issue(instrument="SDK-BOND", to=alice.address_text, amount=10**7),
        [ministry],
        Code.INSTRUMENT_CAP,
    )
    # transfer, then a DvP signed by both parties (and refused with one signature).
    expect(
        client, b.transfer(instrument="SDK-BOND", to=bob.address_text, amount=10), [alice], Code.OK
    )
    trade = b.dvp(
        seller=alice.address_text,
        buyer=bob.address_text,
        asset="SDK-BOND",
        asset_amount=5,
        cash="SDK-CASH",
        cash_amount=25_000,
    )
    expect(client, trade, [alice], Code.MISSING_APPROVALS)
    expect(client, trade, [alice, bob], Code.OK)
    balances = {x["instrument"]: x["balance"] for x in client.account(bob.address_text)["balances"]}
    assert balances == {"SDK-BOND": 15, "SDK-CASH": 25_000}
    # Supply: burn what the issuer does not hold; reserve attestation, then beyond it.
    expect(client, b.burn(instrument="SDK-BOND", amount=1), [ministry], Code.INSUFFICIENT_BALANCE)
    attest = b.attest_reserve(instrument="SDK-OIL", quantity=10, document_hash="cd" * 32)
    expect(client, attest, [auditor], Code.OK)
    expect(
        client,
        b.issue(instrument="SDK-OIL", to=alice.address_text, amount=11),
        [ministry],
        Code.RESERVE_EXCEEDED,
    )
    # Pauses and freezes stop movements; lifting them lets them through again.
    expect(client, b.pause_instrument(instrument="SDK-BOND", reason="audit"), [ministry], Code.OK)
    move = b.transfer(instrument="SDK-BOND", to=alice.address_text, amount=1)
    expect(client, move, [bob], Code.INSTRUMENT_PAUSED)
    expect(client, b.unpause_instrument(instrument="SDK-BOND", reason="done"), [ministry], Code.OK)
    freeze = b.freeze(account=bob.address_text, reason_code=3, legal_reference="court 1/2026")
    expect(client, freeze, [regulator], Code.OK)
    expect(client, move, [bob], Code.ACCOUNT_FROZEN)
    unfreeze = b.unfreeze(account=bob.address_text, reason_code=3, legal_reference="court 2/2026")
    expect(client, unfreeze, [regulator], Code.OK)
    expect(client, move, [bob], Code.OK)
    # Payments: the coupon is months away, the bond years from maturity.
    next_coupon = client.instrument("SDK-BOND")["next_coupon"]
    coupon = b.pay_coupon(instrument="SDK-BOND", cash="SDK-CASH", coupon_date=next_coupon)
    expect(client, coupon, [bank], Code.COUPON_NOT_DUE)
    expect(client, b.redeem(instrument="SDK-TBILL", cash="SDK-CASH"), [bank], Code.NOT_MATURED)
    # Maker-checker governance: one signature is not enough, two (or three) are.
    grant = b.grant_role(account=alice.address_text, role="auditor", institution="ministry")
    expect(client, grant, [regulator], Code.MISSING_APPROVALS)
    expect(client, grant, [regulator, ministry], Code.OK)
    revoke = b.revoke_role(account=alice.address_text, role="auditor")
    expect(client, revoke, [regulator, bank], Code.OK)
    parameter = b.set_parameter(name="closed_period_days", value=10)
    expect(client, parameter, [ministry, regulator], Code.OK)
    policy = b.set_policy(operation="freeze", roles=["regulator"], min=1)
    expect(client, policy, [ministry, bank, regulator], Code.OK)
    new_alice = generate_key(bytes([14]) * 32)
    recover = b.recover_key(account=alice.address_text, new_public_key=new_alice.public_key.hex())
    expect(client, recover, [regulator, bank], Code.OK)
    # Only the new key speaks for alice now.
    expect(client, move, [alice], Code.SENDER_NOT_SIGNED, sender=alice.address)
    to_bob = b.transfer(instrument="SDK-BOND", to=bob.address_text, amount=1)
    expect(client, to_bob, [new_alice], Code.OK, sender=alice.address)
    validator = node.genesis["validators"][0]
    reweight = b.change_validators(
        changes=[{"name": validator["name"], "public_key": validator["public_key"], "power": 10}]
    )
    expect(client, reweight, [ministry, bank], Code.MISSING_APPROVALS)
    expect(client, reweight, [ministry, bank, regulator], Code.OK)
    # VASP suspension stops its clients.
    expect(client, b.suspend_vasp(vasp=vasp.address_text, reason="licence"), [regulator], Code.OK)
    expect(client, move, [bob], Code.VASP_SUSPENDED)


def test_check_tx_and_admission_refusal(node):
    client = Client(node.url, key=node.reader)
    ministry = node.keys["ministry"]
    operation = TxBuilder.burn(instrument="NO-SUCH", amount=1)
    tx = client.prepare(operation, [ministry])
    verdict = client.check_tx(tx)
    assert verdict.hash == tx.tx_id.hex()
    # A wrong nonce never reaches a block: refused at admission (height None).
    stale = client.prepare(operation, [ministry], nonce=0)
    with pytest.raises(TxRejected) as caught:
        client.broadcast(stale)
    assert caught.value.code == Code.NONCE_USED and caught.value.height is None
    assert decode_signed_tx(stale.raw).body.nonce == 0


def test_trio_client_round_trip(node):
    async def main():
        client = AsyncClient(node.url, key=node.reader)
        status = await client.status()
        assert status.chain_id == "khazana-sdktest"
        bank = node.keys["central-bank"]
        before = await client.next_nonce(bank.address)
        committed = await client.send(cash_token("TRIO-CASH"), [bank])
        assert committed.code == 0
        record = await client.tx(committed.hash)
        assert record["height"] == committed.height
        assert (await client.instrument("TRIO-CASH"))["decimals"] == 2
        assert await client.next_nonce(bank.address) == before + 1
        ids = [i["id"] for i in await client.instruments()]
        assert "TRIO-CASH" in ids
        with pytest.raises(TxRejected) as caught:
            await client.send(cash_token("TRIO-CASH"), [bank])
        assert caught.value.code == Code.INSTRUMENT_EXISTS
        events = await client.events(instrument="TRIO-CASH")
        assert any(e["type"] == "instrument_registered" for e in events)

    trio.run(main)


def test_proofs_verify_against_genesis_validators_and_forgeries_are_refused(node):
    client = Client(node.url, key=node.reader)
    trusted = TrustedValidators.from_genesis(node.genesis)
    bank = node.keys["central-bank"]
    committed = client.send(cash_token("PROOF-CASH"), [bank])
    client.send(TxBuilder.issue(instrument="PROOF-CASH", to=bank.address_text, amount=77), [bank])
    address = bank.address_text
    result = client.account(address, prove=True)
    proven = verify_account(result, trusted, address)
    assert dict(proven.balances)["PROOF-CASH"].balance == 77
    forged = copy.deepcopy(result)
    for balance in forged["balances"]:
        if balance["instrument"] == "PROOF-CASH":
            balance["balance"] = 77_000
    with pytest.raises(ProofError):
        verify_account(forged, trusted, address)
    included = verify_tx(client.tx(committed.hash, prove=True), trusted)
    assert included.hash.hex() == committed.hash and included.height == committed.height
    # Validators the client does not trust cannot vouch for anything.
    strangers = TrustedValidators(
        trusted.chain_id, (("stranger", generate_key(b"s" * 32).public_key, 10),)
    )
    with pytest.raises(ProofError):
        verify_account(result, strangers, address)


# --------------------------------------------------------------------------- plans, no I/O


def drive(plan, answers):
    """Run a plan against scripted answers: each is a result or an RpcError to throw in.
    Returns (value, the calls made)."""
    calls, answers = [], list(answers)
    value, error = None, None
    while True:
        try:
            step = plan.throw(error) if error is not None else plan.send(value)
        except StopIteration as done:
            return done.value, calls
        value, error = None, None
        if isinstance(step, Sleep):
            calls.append(("sleep", step.seconds))
            continue
        calls.append((step.method, dict(step.params)))
        answer = answers.pop(0)
        if isinstance(answer, RpcError):
            error = answer
        else:
            value = answer


def test_commit_without_broadcast_tx_commit_falls_back_to_polling_once():
    plans = Plans()
    tx_hash = "ab" * 32
    record = {"hash": tx_hash, "height": 9, "index": 0, "tx_result": {"code": 0, "log": ""}}
    answers = [
        RpcError(-32601, "Method not found"),
        {"code": 0, "log": "", "hash": tx_hash},
        RpcError(-32001, "Not found"),
        record,
    ]
    committed, calls = drive(plans.broadcast_commit(b"raw"), answers)
    assert (committed.hash, committed.height) == (tx_hash, 9)
    assert [c[0] for c in calls] == [
        "broadcast_tx_commit",
        "broadcast_tx_sync",
        "tx",
        "sleep",
        "tx",
    ]
    # Learnt: the next commit goes straight to broadcast_tx_sync.
    _, calls = drive(plans.broadcast_commit(b"raw"), answers[1:2] + [record])
    assert [c[0] for c in calls] == ["broadcast_tx_sync", "tx"]


def test_commit_timeout_from_the_node_keeps_waiting_then_gives_up():
    tx_hash = "cd" * 32
    timeout = RpcError(-32002, "timed out waiting for commit", {"hash": tx_hash})
    not_found = RpcError(-32001, "Not found")
    with pytest.raises(CommitTimeout) as caught:
        drive(Plans().broadcast_commit(b"raw", timeout_s=0.4), [timeout, not_found, not_found])
    assert caught.value.tx_hash == tx_hash
    refused = {"hash": tx_hash, "height": 0, "check_tx": {"code": 304, "log": "poor"}}
    with pytest.raises(TxRejected) as rejected:
        drive(Plans().broadcast_commit(b"raw"), [refused])
    assert (rejected.value.name, rejected.value.height) == ("INSUFFICIENT_BALANCE", None)
    executed = {
        "hash": tx_hash,
        "height": 4,
        "check_tx": {"code": 0, "log": ""},
        "tx_result": {"code": 302, "log": "frozen", "events": []},
    }
    with pytest.raises(TxRejected) as in_block:
        drive(Plans().broadcast_commit(b"raw"), [executed])
    assert (in_block.value.name, in_block.value.height) == ("ACCOUNT_FROZEN", 4)
