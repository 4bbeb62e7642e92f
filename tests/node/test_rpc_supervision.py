"""Supervision reads (node/rpc/supervision_methods.py) through the signed ASGI app.

The chain is test_rpc_scopes's `World` (institutions, three VASPs, five investors with 10,000
PKR each, vasp-c suspended) plus a commodity with two reserve attestations, a whole-account
freeze of eve and a partial freeze of ben. Expectations are computed independently: the
holdings summary from `holders` and one `account` per holder (what an analyst did by hand),
the programme from `instruments`, past heights from what the answers were at that height.
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from node.cli import main as cli_main
from node.client import report as report_module
from node.client.errors import RpcError as ClientRpcError
from node.rpc.app import RpcApp
from node.rpc.render import iso_time
from tests.ledger.test_chain import DAY_MS, GENESIS_MS, key
from tests.node.test_rpc_scopes import World, addr, allowed, call, refusal

OIL = {
    "id": "OIL",
    "kind": "commodity",
    "name": "Oil reserve",
    "currency": "USD",
    "face_value": 7000,
    "usd_face_value": 7000,
    "decimals": 0,
    "cap": 2_000_000,
    "unit": "bbl",
}
SUPERVISION_ONLY = [
    ("parameters", {}),
    ("vasps", {}),
    ("reserves", {"instrument": "OIL"}),
    ("frozen", {}),
    ("holdings_summary", {"by": "vasp"}),
    ("holdings_summary", {"by": "country", "instrument": "PKR"}),
]


class Supervised(World):
    def __init__(self, path) -> None:
        super().__init__(path)
        t = self.txs
        self.before_freezes = self.chain.height  # every investor funded, one transfer made
        self.commit(
            [
                t.tx("ministry", "register_instrument", OIL),
                t.tx("auditor", "attest_reserve", self.reserve(1_000, 1)),
            ]
        )
        freeze_eve = {"account": key("eve").address, "reason_code": 7, "legal_reference": "L-7"}
        freeze_ben = {
            "account": key("ben").address,
            "reason_code": 9,
            "legal_reference": "Order 9",
            "instrument": "PKR",
            "amount": 50,
        }
        self.commit(
            [
                t.tx("auditor", "attest_reserve", self.reserve(900, 2)),
                t.tx("regulator", "freeze", freeze_eve),
                t.tx("regulator", "freeze", freeze_ben),
            ]
        )

    @staticmethod
    def reserve(quantity: int, tag: int) -> dict:
        return {"instrument": "OIL", "quantity": quantity, "document_hash": bytes([tag]) * 32}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = Supervised(tmp_path_factory.mktemp("supervision") / "node.db")
    yield w
    w.chain.close()


@pytest.fixture(scope="module")
def app(world):
    return RpcApp(world.node)


def result(app, method, params=None, reader="regulator"):
    answer = call(app, reader, method, params)
    assert "result" in answer, answer
    return answer["result"]


def test_supervision_reads_are_for_institutions_and_programme_is_public(app):
    for reader in ("anonymous", "ana", "vasp-a", "vasp-c"):
        for method, params in SUPERVISION_ONLY:
            answer = call(app, reader, method, params)
            assert not allowed(answer), (reader, method)
            expected = "unauthorized" if reader == "anonymous" else "forbidden"
            assert refusal(answer) == expected
            assert answer["error"]["code"] == -32004
    for reader in ("regulator", "auditor", "operator"):
        for method, params in SUPERVISION_ONLY:
            assert allowed(call(app, reader, method, params)), (reader, method)
    for reader in ("anonymous", "ana", "vasp-a"):
        assert allowed(call(app, reader, "programme"))
        assert allowed(call(app, reader, "height_at", {"time": GENESIS_MS}))


def test_account_at_a_height_keeps_the_accounts_scope(app, world):
    params = {"address": addr("ana"), "height": world.before_freezes}
    assert allowed(call(app, "ana", "account", params))
    assert allowed(call(app, "vasp-a", "account", params))
    assert refusal(call(app, "ben", "account", params)) == "forbidden"
    assert refusal(call(app, "anonymous", "account", params)) == "unauthorized"


def expected_summary(app, by: str) -> dict[tuple[str, str], list[int]]:
    """From `holders` and one `account` per holder: what the analyst did by hand."""
    found: dict[tuple[str, str], list[int]] = {}
    for instrument in result(app, "instruments")["instruments"]:
        holders = result(app, "holders", {"id": instrument["id"]})["holders"]
        for holder in holders:
            account = result(app, "account", {"address": holder["address"]})
            kyc = account.get("kyc")
            group = "none" if not kyc or not kyc.get(by) else kyc[by]
            slot = found.setdefault((instrument["id"], group), [0, 0])
            slot[0] += holder["balance"]
            slot[1] += 1
    return found


@pytest.mark.parametrize("by", ["vasp", "country", "category"])
def test_holdings_summary_equals_the_sum_over_holders(app, by):
    summary = result(app, "holdings_summary", {"by": by})
    got = {(g["instrument"], g["group"]): [g["total"], g["holders"]] for g in summary["groups"]}
    assert got == expected_summary(app, by)
    supply = {i["id"]: i["supply"] for i in result(app, "instruments")["instruments"]}
    for total in summary["totals"]:
        assert total["total"] == supply[total["instrument"]]
    if by == "vasp":
        names = {g["group"]: g.get("name") for g in summary["groups"]}
        assert names[addr("vasp-a")] == "vasp-a"


def test_holdings_summary_and_account_as_of_a_past_height(app, world):
    then = world.before_freezes
    summary = result(app, "holdings_summary", {"by": "country", "height": then})
    assert summary["height"] == then
    # at that height only PKR existed: five investors with 10,000 each (ana sent ben 100)
    assert summary["groups"] == [
        {"instrument": "PKR", "group": "PK", "total": 50_000, "holders": 5}
    ]
    ana = result(app, "account", {"address": addr("ana"), "height": 3})
    assert ana["height"] == 3 and ana["balances"][0]["balance"] == 10_000
    now = result(app, "account", {"address": addr("ana")})
    assert now["balances"][0]["balance"] == 9_900
    eve_then = result(app, "account", {"address": addr("eve"), "height": then})
    assert eve_then["frozen"] is None
    answer = call(app, "regulator", "account", {"address": addr("ana"), "height": 10**6})
    assert answer["error"]["code"] == -32001
    answer = call(app, "regulator", "holdings_summary", {"by": "planet"})
    assert answer["error"]["code"] == -32602


def test_frozen_lists_both_kinds_and_holders_shows_whole_account_freezes(app):
    rows = {r["address"]: r for r in result(app, "frozen")["frozen"]}
    assert set(rows) == {addr("eve"), addr("ben")}
    eve, ben = rows[addr("eve")], rows[addr("ben")]
    assert (eve["scope"], eve["reason_code"], eve["legal_reference"]) == ("account", 7, "L-7")
    assert eve["holdings"] == [{"instrument": "PKR", "balance": 10_000, "frozen": 10_000}]
    assert (ben["scope"], ben["instrument"], ben["frozen"], ben["reason_code"]) == (
        "holding",
        "PKR",
        50,
        9,
    )
    assert ben["legal_reference"] == "Order 9" and ben["balance"] == 10_100
    holders = {h["address"]: h for h in result(app, "holders", {"id": "PKR"})["holders"]}
    assert holders[addr("eve")]["frozen"] == 10_000  # not "FROZEN 0"
    assert holders[addr("eve")]["account_frozen"] is True
    assert holders[addr("ben")]["frozen"] == 50
    page = result(app, "frozen", {"page": 2, "per_page": 1})
    assert len(page["frozen"]) == 1 and page["per_page"] == 1


def test_programme_parameters_vasps_and_reserves(app, world):
    programme = result(app, "programme", reader="anonymous")
    instruments = result(app, "instruments")["instruments"]
    outstanding = sum(i["supply"] * i["usd_face_value"] for i in instruments)
    assert programme["outstanding_usd_cents"] == outstanding
    assert programme["available_usd_cents"] == programme["cap_usd_cents"] - outstanding
    assert {i["id"] for i in programme["instruments"]} == {"PKR", "OIL"}
    earlier = result(app, "programme", {"height": 1})
    assert [i["id"] for i in earlier["instruments"]] == ["PKR"]
    parameters = result(app, "parameters")
    assert parameters["parameters"]["reserve_max_age_s"] > 0
    assert "freeze" in parameters["policy"]["rules"]
    vasps = {v["name"]: v for v in result(app, "vasps")["vasps"]}
    assert {n: (v["status"], v["clients"]) for n, v in vasps.items()} == {
        "vasp-a": ("licensed", 2),
        "vasp-b": ("licensed", 1),
        "vasp-c": ("suspended", 1),
    }
    reserves = result(app, "reserves", {"instrument": "OIL"})["attestations"]
    assert [r["quantity"] for r in reserves] == [900, 1_000]  # latest first
    assert reserves[0]["custodian"] == addr("auditor")
    oil = result(app, "instrument", {"id": "OIL"}, reader="anonymous")
    assert oil["reserve"]["quantity"] == 900
    assert "reserve" not in result(app, "instrument", {"id": "PKR"})


def test_height_at(app, world):
    latest = world.chain.height
    for height in (1, 3, latest):
        time_ms = GENESIS_MS + height * DAY_MS  # World commits block h on day h
        for form in (time_ms, iso_time(time_ms), iso_time(time_ms).replace("Z", "+00:00")):
            found = result(app, "height_at", {"time": form}, reader="anonymous")
            assert found["height"] == height and found["time_ms"] == time_ms
        assert result(app, "height_at", {"time": time_ms + DAY_MS - 1})["height"] == height
    assert result(app, "height_at", {"time": GENESIS_MS})["height"] == 0
    assert call(app, "regulator", "height_at", {"time": GENESIS_MS - 1})["error"]["code"] == -32001
    for bad in ("yesterday", "2026-01-01T00:00:00", -5, None, 1.5):
        assert call(app, "regulator", "height_at", {"time": bad})["error"]["code"] == -32602


# --------------------------------------------------------------------------- khazana report


class AppClient:
    """`node.client.sync.Client.call` over the in-process app, signed as `reader`."""

    def __init__(self, app, reader: str) -> None:
        self.app, self.reader = app, reader

    def call(self, method: str, params: dict | None = None):
        answer = call(self.app, self.reader, method, params)
        if "error" in answer:
            error = answer["error"]
            raise ClientRpcError(error["code"], error["message"], error.get("data"))
        return answer["result"]


def report(app, monkeypatch, capsys, *argv: str, reader: str = "regulator") -> tuple[int, str]:
    monkeypatch.setattr(report_module, "_client", lambda args: AppClient(app, reader))
    code = cli_main(["report", *argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_report_holdings_csv_matches_the_rpc_and_the_sum_over_holders(app, monkeypatch, capsys):
    for by in ("vasp", "country"):
        code, out = report(app, monkeypatch, capsys, "holdings", "--by", by, "--format", "csv")
        assert code == 0, out
        rows = list(csv.DictReader(io.StringIO(out)))
        got = {(r["instrument"], r["group"]): [int(r["total"]), int(r["holders"])] for r in rows}
        assert got == expected_summary(app, by)
    code, out = report(app, monkeypatch, capsys, "holdings", "--format", "json")
    assert json.loads(out) == result(app, "holdings_summary", {"by": "vasp"})
    code, out = report(app, monkeypatch, capsys, "holdings", "--by", "country")
    assert code == 0 and out.startswith("Holdings by country, all instruments at height")
    assert "PKR" in out and "49,950.00" not in out  # decimals 2: 50,000 units = 500.00
    pk = [line for line in out.splitlines() if line.startswith("PKR") and " PK " in line]
    assert pk and "500.00" in pk[0]


def test_report_as_of_a_time_and_a_height(app, world, monkeypatch, capsys):
    then = world.before_freezes
    at = iso_time(GENESIS_MS + then * DAY_MS + 1000)  # a second after block `then`
    code, out = report(app, monkeypatch, capsys, "holdings", "--at", at, "--format", "json")
    answer = json.loads(out)
    assert code == 0 and answer["height"] == then and answer["at"]["requested"] == at
    by_height = report(
        app, monkeypatch, capsys, "holdings", "--height", str(then), "--format", "json"
    )
    assert json.loads(by_height[1])["groups"] == answer["groups"]
    code, out = report(app, monkeypatch, capsys, "programme", "--height", "1", "--format", "json")
    assert json.loads(out) == result(app, "programme", {"height": 1})
    code, out = report(app, monkeypatch, capsys, "programme")
    assert code == 0 and out.startswith("Programme at height") and "OIL" in out


def test_report_frozen_and_refusals(app, monkeypatch, capsys):
    code, out = report(app, monkeypatch, capsys, "frozen", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {(r["address"], r["scope"], r["frozen"], r["legal_ref"]) for r in rows} == {
        (addr("eve"), "account", "10000", "L-7"),
        (addr("ben"), "holding", "50", "Order 9"),
    }
    code, out = report(app, monkeypatch, capsys, "frozen", "--height", "3")
    assert code == 2 and "now" in out
    code, out = report(app, monkeypatch, capsys, "holdings", reader="ana")
    assert code == 1 and "forbidden" in out
