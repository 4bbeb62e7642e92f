"""The OpenRPC document (`rpc.discover`, docs/openrpc.json) against a real node, and a real
CometBFT client library against the same node.

One validator started with `python -m node start` (tests/node/netsupport.Net), a cash token
registered and issued, then EVERY registered method is called -- as the node answers it, over
HTTP -- and its result validated against the method's schema in the document the node serves
(jsonschema, a test-only dependency: an implementation of JSON Schema that is not ours).
The params sent are validated against the param schemas too, in both forms the node takes
(JSON integers and CometBFT's decimal strings).

The CometBFT client check runs tests/js/cometbft_client.js (cosmjs' `@cosmjs/tendermint-rpc`,
pinned in tests/js/package.json, installed by .ci/run) against the node; it skips when Node.js
or the package is absent. docs/RPC.md "CometBFT clients" says which calls work and why the
others cannot; the test holds that text to what the library does.
"""

from __future__ import annotations

import base64
import copy
import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from ledger.crypto import generate_key, read_key_file
from ledger.tx import TxBody, sign_tx
from node.rpc.framing import Method
from node.rpc.methods import RpcMethods
from node.rpc.openrpc import dumps, missing_schemas
from node.rpc.schemas import METHOD_SCHEMAS
from tests.node.netsupport import ROOT, Net, free_base_port, rpc

jsonschema = pytest.importorskip(
    "jsonschema", reason="jsonschema (test extra: pip install -e '.[test]') validates the schemas"
)

DOCS_FILE = ROOT / "docs" / "openrpc.json"
JS_DIR = ROOT / "tests" / "js"
JS_SCRIPT = JS_DIR / "cometbft_client.js"
CASH = "USD-CASH"
OIL = "OIL"
BOND = "PKBOND28"


def register_cash(chain_id: str, bank, nonce: int) -> bytes:
    body = TxBody(
        chain_id,
        bank.address,
        nonce,
        "register_instrument",
        {
            "id": CASH,
            "kind": "cash",
            "name": "Central-bank USD cash token",
            "currency": "USD",
            "face_value": 1,
            "decimals": 2,
            "cap": 10**12,
        },
    )
    return sign_tx(body, [bank]).raw


def issue_cash(chain_id: str, bank, nonce: int, amount: int) -> bytes:
    body = TxBody(
        chain_id,
        bank.address,
        nonce,
        "issue",
        {"instrument": CASH, "to": bank.address, "amount": amount},
    )
    return sign_tx(body, [bank]).raw


def signed(chain_id: str, sender, nonce: int, op: str, args: dict) -> bytes:
    return sign_tx(TxBody(chain_id, sender.address, nonce, op, args), [sender]).raw


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


class Node:
    """One validator with a cash token registered (nonce 0) and issued (nonce 1)."""

    def __init__(self, root: Path) -> None:
        self.net = Net(root, free_base_port(1), validators=1, chain_id="khazana-openrpc")
        self.name = self.net.names[0]
        self.url = self.net.urls[self.name]
        keys = {n: read_key_file(p) for n, p in self.net.network.clients}
        self.bank = keys["central-bank"]
        self.reader = keys["ministry"]  # an institution: reads everything
        self.keys = keys
        self.chain_id = self.net.chain_id

    def call(self, method: str, **params):
        return rpc(self.url, method, signer=self.reader, **params)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    node = Node(tmp_path_factory.mktemp("openrpc"))
    try:
        node.net.start(node.name)
        node.net.wait(lambda: node.net.height(node.name) >= 1, "the first block")
        yield node
    finally:
        node.net.stop_all()


@pytest.fixture(scope="module")
def registered(node):
    """The committed `broadcast_tx_commit` answer registering the cash token (nonce 0)."""
    answer = node.call("broadcast_tx_commit", tx=b64(register_cash(node.chain_id, node.bank, 0)))
    assert answer["tx_result"]["code"] == 0, answer
    return answer


@pytest.fixture(scope="module")
def document(node):
    return node.call("rpc.discover")


def validator(document: dict, schema: dict) -> jsonschema.Draft202012Validator:
    """A validator of `schema` whose `$ref`s resolve in the document's components."""
    rooted = {**schema, "components": document["components"]}
    return jsonschema.Draft202012Validator(rooted)


def check(document: dict, method: str, params: dict, answer: object) -> None:
    spec = next(m for m in document["methods"] if m["name"] == method)
    by_name = {p["name"]: p for p in spec["params"]}
    assert set(params) <= set(by_name), (method, params)
    for name, value in params.items():
        errors = list(validator(document, by_name[name]["schema"]).iter_errors(value))
        assert not errors, f"{method} param {name}={value!r}: {errors[0].message}"
    for p in spec["params"]:
        if p["required"]:
            assert p["name"] in params, (method, p["name"])
    errors = list(validator(document, spec["result"]["schema"]).iter_errors(answer))
    assert not errors, f"{method} result: {errors[0].message} at {list(errors[0].path)}"


# --------------------------------------------------------------------------- the document


def test_docs_openrpc_json_is_what_the_node_serves(document):
    served = dumps(document)
    assert DOCS_FILE.read_text(encoding="utf-8") == served, (
        "docs/openrpc.json is stale: run .venv/bin/python scripts/openrpc.py"
    )
    # ... and what the table of any node gives (no node needed to list the methods).
    assert dumps(RpcMethods(node=None).discover()) == served


def test_every_registered_method_has_a_schema_and_every_schema_a_method():
    table = RpcMethods(node=None).table
    assert missing_schemas(table) == [], (
        "add the schema of each of these methods to node/rpc/schemas.py METHOD_SCHEMAS"
    )
    assert sorted(METHOD_SCHEMAS) == sorted(table), "a schema of a method no node registers"


def test_a_method_without_a_schema_is_caught_and_still_listed():
    table = dict(RpcMethods(node=None).table)

    async def handler():
        return {}

    table["supervision_report"] = Method(handler, ())
    table["account_with_more"] = Method(handler, ("address", "prove", "height"), ("address",))
    assert missing_schemas(table) == ["account_with_more", "supervision_report"]


def test_every_schema_is_valid_json_schema(document):
    for method in document["methods"]:
        for param in method["params"]:
            jsonschema.Draft202012Validator.check_schema(param["schema"])
        jsonschema.Draft202012Validator.check_schema(method["result"]["schema"])
        assert method["summary"] and method["summary"] != "(no schema yet)"
    for name, schema in document["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert name.isidentifier()
    assert document["openrpc"].startswith("1.")


def test_anonymous_may_read_the_document(node, document):
    assert rpc(node.url, "rpc.discover") == document


# --------------------------------------------------------------------------- real answers


def supervised(node: Node) -> dict:
    """What makes the supervision reads answer something: a commodity with a reserve
    attestation, a licensed VASP, two investors (one its client) holding cash, one frozen in
    part and one whole. Four waves (each waits for its commit: a wave depends on the one
    before). The bank's nonces 0 and 1 are the module's registration and issue."""
    chain, keys = node.chain_id, node.keys
    vasp, ana, ben = (generate_key(bytes([n]) * 32) for n in (1, 2, 3))
    nonces = {"central-bank": 2}

    def tx(sender: str, op: str, args: dict) -> str:
        nonce = nonces.get(sender, 0)
        nonces[sender] = nonce + 1
        return b64(signed(chain, keys[sender], nonce, op, args))

    def kyc(investor, **more) -> dict:
        return {
            "investor": investor.address,
            "country": "PK",
            "category": "retail",
            "kyc_expiry": "2030-01-01",
            **more,
        }

    commodity = {
        "id": OIL,
        "kind": "commodity",
        "name": "Oil reserve",
        "currency": "USD",
        "face_value": 7000,
        "usd_face_value": 7000,
        "decimals": 0,
        "cap": 2_000_000,
        "unit": "bbl",
    }
    bond = {  # 8 % semi-annual: what `quote` prices
        "id": BOND,
        "kind": "bond",
        "name": "Sovereign bond 2028",
        "isin": "US0378331005",
        "currency": "PKR",
        "face_value": 100_000,
        "decimals": 0,
        "cap": 1_000_000,
        "usd_face_value": 360,
        "issue_date": "2026-01-01",
        "maturity_date": "2028-01-01",
        "coupon_rate": "0.08",
        "coupon_frequency": 2,
        "day_count": "ACT/ACT-ICMA",
    }
    reserve = {"instrument": OIL, "quantity": 1_000, "document_hash": bytes([7]) * 32}
    freeze = {"reason_code": 9, "legal_reference": "Order 9"}
    waves = [
        [
            tx("ministry", "register_instrument", commodity),
            tx("ministry", "register_instrument", bond),
            tx("regulator", "license_vasp", {"vasp": vasp.address, "name": "vasp-a"}),
        ],
        [
            tx("auditor", "attest_reserve", reserve),
            tx("regulator", "onboard_investor", kyc(ana, vasp=vasp.address)),
            tx("regulator", "onboard_investor", kyc(ben)),
        ],
        [
            tx("central-bank", "issue", {"instrument": CASH, "to": ana.address, "amount": 300}),
            tx("central-bank", "issue", {"instrument": CASH, "to": ben.address, "amount": 200}),
        ],
        [
            tx("regulator", "freeze", {"account": ben.address, **freeze}),
            tx(  # the last of its wave: `frozen_at` is its height
                "regulator",
                "freeze",
                {"account": ana.address, **freeze, "instrument": CASH, "amount": 50},
            ),
        ],
    ]
    for wave in waves:
        for raw in wave[:-1]:
            assert node.call("broadcast_tx_sync", tx=raw)["code"] == 0
        committed = node.call("broadcast_tx_commit", tx=wave[-1])
        assert committed["tx_result"]["code"] == 0, committed
    node.net.wait(
        lambda: node.call("account", address=keys["regulator"].address_text)["nonce"] == 5,
        "the supervision transactions",
    )
    return {
        "vasp": vasp.address_text,
        "ana": ana.address_text,
        "ben": ben.address_text,
        "frozen_at": committed["height"],
    }


def test_every_method_answer_validates_against_its_schema(node, document, registered):
    """Each registered method called for real (with every optional param at least once, in
    both integer forms), each answer validated; the set of methods called is the table."""
    called: set[str] = set()
    bank, chain = node.bank, node.chain_id

    def run(method: str, **params):
        answer = node.call(method, **params)
        check(document, method, params, answer)
        called.add(method)
        return answer

    check(document, "broadcast_tx_commit", {"tx": "..."}, registered)
    called.add("broadcast_tx_commit")
    run("check_tx", tx=b64(issue_cash(chain, bank, 1, 500)))
    admitted = run("broadcast_tx_sync", tx=b64(issue_cash(chain, bank, 1, 500)))
    assert admitted["code"] == 0, admitted
    refused = run("broadcast_tx_commit", tx=b64(issue_cash(chain, bank, 0, 1)))  # nonce used
    assert refused["check_tx"]["code"] != 0 and refused["tx_result"] is None
    node.net.wait(lambda: node.call("account", address=bank.address_text)["nonce"] == 2, "issue")
    height = node.call("status")["sync_info"]["latest_block_height"]

    run("health")
    run("status")
    run("net_info")
    run("genesis")
    run("num_unconfirmed_txs")
    run("rpc.discover")
    for h in (None, height, str(height)):
        params = {} if h is None else {"height": h}
        run("validators", **params)
        run("block", **params)
        run("commit", **params)
    tx_hash = registered["hash"]
    hash_forms = (tx_hash, "0x" + tx_hash.upper(), b64(bytes.fromhex(tx_hash)))
    for form in hash_forms:
        assert run("tx", hash=form)["hash"] == tx_hash
    run("tx", hash=tx_hash, prove=True)
    run("account", address=bank.address_text)
    run("account", address=bank.address_text, prove=True)
    run("instrument", id=CASH)
    run("instruments")
    run("instruments", after="A", limit="5")
    run("holders", id=CASH)
    run("holders", id=CASH, after=bank.address_text, limit=1)
    run("events")
    run(
        "events",
        account=bank.address_text,
        instrument=CASH,
        from_height="1",
        to_height=height,
        page="1",
        per_page="2",
    )

    # -- supervision reads (docs/RPC.md "Supervision reads"), on data that makes them answer
    who = supervised(node)
    before = height  # before the supervision transactions
    height = node.call("status")["sync_info"]["latest_block_height"]
    for h in (None, before, str(height)):
        params = {} if h is None else {"height": h}
        run("programme", **params)
        run("parameters", **params)
    frozen_at = who["frozen_at"]
    past = run("account", address=who["ana"], height=frozen_at - 1)
    assert past["height"] == frozen_at - 1 and past["balances"][0]["frozen"] == 0
    assert run("account", address=who["ana"], height=str(frozen_at))["balances"][0]["frozen"] == 50
    assert [v["address"] for v in run("vasps")["vasps"]] == [who["vasp"]]
    assert run("vasps", after=who["vasp"], limit="1") == {"vasps": [], "next": None}
    assert run("vasps", limit=1)["next"] == who["vasp"]
    assert len(run("reserves", instrument=OIL)["attestations"]) == 1
    assert run("instrument", id=OIL)["reserve"]["quantity"] == 1_000  # the latest attestation
    run("reserves", instrument=OIL, page="2", per_page=1)
    run("reserves", instrument=OIL, page=1, per_page="1")
    frozen = run("frozen")["frozen"]
    assert sorted(f["scope"] for f in frozen) == ["account", "holding"]
    run("frozen", page=1, per_page="1")
    run("frozen", page="2", per_page=1)
    for by in ("vasp", "country", "category"):
        run("holdings_summary", by=by)
    summary = run("holdings_summary", by="vasp", instrument=CASH, height=height)
    assert {g.get("name") for g in summary["groups"]} == {"vasp-a", None}
    run("holdings_summary", by="country", instrument=OIL, height=str(height))
    run("holdings_summary", by="category", instrument=CASH, height=before)
    time_ms = node.call("block", height=height)["block"]["header"]["time_ms"]
    for time in (time_ms, str(time_ms), "2099-01-01T00:00:00Z", "2099-01-01T05:00:00+05:00"):
        assert run("height_at", time=time)["height"] >= height
    quoted = run("quote", instrument=BOND, settlement="2026-04-01", **{"yield": "0.09"})
    assert quoted["accrued"] == "1.988950276243"
    run("quote", instrument=BOND, settlement="2026-04-01", price=quoted["clean_price"])
    # On a coupon date nothing has accrued: still 12 places, no exponent ("0E-12").
    at_issue = run("quote", instrument=BOND, settlement="2026-01-01", price="100")
    assert at_issue["accrued"] == "0.000000000000" and at_issue["yield"] == "0.080000000000"
    assert called == set(RpcMethods(node=None).table)


def test_the_schemas_can_fail(node, document):
    # A result that breaks its schema is caught: the validation above is not vacuous.
    status = copy.deepcopy(node.call("status"))
    status["sync_info"]["latest_block_height"] = str(status["sync_info"]["latest_block_height"])
    with pytest.raises(AssertionError, match="latest_block_height"):
        check(document, "status", {}, status)
    with pytest.raises(AssertionError, match="param height"):
        check(document, "block", {"height": "01"}, {})
    # A frozen holding must say how much of it is frozen; a whole account lists its holdings.
    entry = {
        "address": node.bank.address_text,
        "scope": "holding",
        "instrument": CASH,
        "reason_code": None,
        "legal_reference": "L-7",
        "height": 3,
        "vasp": None,
        "country": None,
        "balance": 10,
    }
    with pytest.raises(AssertionError, match="frozen result"):
        check(document, "frozen", {}, {"frozen": [entry], "page": 1, "per_page": 1})
    check(document, "frozen", {}, {"frozen": [{**entry, "frozen": 5}], "page": 1, "per_page": 1})
    whole = {**entry, "scope": "account", "instrument": None, "frozen": 5}
    with pytest.raises(AssertionError, match="frozen result"):
        check(document, "frozen", {}, {"frozen": [whole], "page": 1, "per_page": 1})
    with pytest.raises(AssertionError, match="param time"):
        check(document, "height_at", {"time": "2026-01-04T12:00:00"}, {})  # no zone


# --------------------------------------------------------------------------- CometBFT client


def cosmjs_missing() -> str | None:
    if shutil.which("node") is None:
        return "Node.js absent: apt-get install nodejs npm (then .ci/run installs cosmjs)"
    if not (JS_DIR / "node_modules" / "@cosmjs" / "tendermint-rpc").is_dir():
        return "cosmjs absent: npm ci --prefix tests/js (as .ci/run does)"
    return None


def test_a_cometbft_client_library_reads_what_rpc_md_says(node, registered):
    reason = cosmjs_missing()
    if reason is not None:
        pytest.skip(reason)
    height = registered["height"]
    done = subprocess.run(
        ["node", str(JS_SCRIPT), node.url, str(height), registered["hash"]],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    rpc_md = (ROOT / "docs" / "RPC.md").read_text(encoding="utf-8")
    section = rpc_md[rpc_md.index("## CometBFT clients") :]
    section = section[: section.index("\n## ", 5)]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`") and cells[0].endswith("`"):
            rows[cells[0].strip("`")] = cells
    assert sorted(rows) == sorted(report), "RPC.md's table names exactly the calls tried"
    for call, outcome in report.items():
        _, works, accepted = rows[call][:3]
        assert works.startswith("yes") == outcome["ok"], (call, outcome)
        assert accepted.startswith("yes") == outcome["accepted"], (call, outcome)
    # What the habits bought: the library's requests (heights as strings, the tx hash in
    # base64) reach the methods; what fails is its decoding of the native answers.
    for call in ("status", "block", "commit", "validators"):
        assert report[call]["accepted"], (call, report[call])


def test_get_form_over_real_http(node):
    with urllib.request.urlopen(f"{node.url}/status", timeout=3) as response:
        answer = json.loads(response.read())
    assert answer["id"] == -1 and answer["jsonrpc"] == "2.0"
    assert answer["result"]["node_info"]["network"] == node.chain_id
    with urllib.request.urlopen(f"{node.url}/health", timeout=3) as response:
        assert json.loads(response.read()) == {"jsonrpc": "2.0", "result": {}, "id": -1}
    with urllib.request.urlopen(f"{node.url}/block?height=1", timeout=3) as response:
        assert json.loads(response.read())["result"]["block"]["header"]["height"] == 1
