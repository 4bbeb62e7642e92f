"""`khazana report holdings|frozen|programme`: the regulator's and the auditor's reports.

    khazana report holdings [--by vasp|country|category] [--instrument ID]
                            [--height H | --at TIME] [--format table|csv|json] --key FILE
    khazana report programme [--height H | --at TIME] [--format ...] [--key FILE]
    khazana report frozen [--format ...] --key FILE

Each report is the supervision reads of docs/RPC.md (`holdings_summary`, `programme`,
`frozen`), asked with the same credentials as `khazana query` (`--key FILE`, else
`$KHAZANA_KEY`). `--at TIME` (RFC 3339, or ms since 1970) is turned into the last height at
or before it by `height_at`, and the report says which height and block time it describes.
`table` (the default) is for people: amounts with their instrument's decimals; `csv` is for
spreadsheets: integer units, one header row; `json` prints the RPC answers as they came, for
scripts and for the file an auditor keeps. `frozen` is the list as it stands now (a freeze
list as of a past height is not served: `--height`/`--at` are refused for it).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Any

from node.client.cli import (
    UsageError,
    _client,
    _guarded,
    _output_flags,
    format_amount,
    print_table,
)
from node.client.sync import Client

REPORTS = ("holdings", "frozen", "programme")
FORMATS = ("table", "csv", "json")
FROZEN_PAGE = 100
MAX_FROZEN_PAGES = 10_000  # a million rows: the report stops there and says so


def add_report_parser(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser(
        "report", help="supervision reports: holdings, frozen accounts, the programme"
    )
    report.add_argument("report", choices=REPORTS, help="which report")
    report.add_argument("--by", choices=("vasp", "country", "category"), default="vasp")
    report.add_argument("--instrument", help="one instrument (holdings; default: all)")
    when = report.add_mutually_exclusive_group()
    when.add_argument("--height", help="as of this height (default: the latest)")
    when.add_argument("--at", help="as of this time: RFC 3339 or milliseconds since 1970")
    report.add_argument("--format", choices=FORMATS, default="table")
    report.add_argument(
        "--key", dest="auth_key", help="key file to read with (default $KHAZANA_KEY)"
    )
    _output_flags(report)


@_guarded
def cmd_report(args: argparse.Namespace) -> int:
    client = _client(args)
    fmt = "json" if args.json else args.format
    height, when = _height(client, args)
    if args.report == "holdings":
        answer = holdings(client, args.by, args.instrument, height)
    elif args.report == "programme":
        answer = client.call("programme", {} if height is None else {"height": height})
    else:
        if height is not None:
            raise UsageError("report frozen lists what is frozen now: leave out --height/--at")
        answer = frozen(client)
    if when is not None:
        answer["at"] = when
    print_report(args.report, answer, fmt, _decimals(client, args.report, answer))
    return 0


def _height(client: Client, args: argparse.Namespace) -> tuple[int | None, dict | None]:
    if args.at is not None:
        at: Any = int(args.at) if args.at.isdigit() else args.at
        found = client.call("height_at", {"time": at})
        at_time = {"requested": args.at, "height": found["height"], "block_time": found["time"]}
        return found["height"], at_time
    if args.height is not None:
        if not args.height.isdigit():
            raise UsageError(f"--height must be a block height, got {args.height!r}")
        return int(args.height), None
    return None, None


def holdings(client: Client, by: str, instrument: str | None, height: int | None) -> dict:
    params: dict[str, Any] = {"by": by}
    if instrument is not None:
        params["instrument"] = instrument
    if height is not None:
        params["height"] = height
    return client.call("holdings_summary", params)


def frozen(client: Client) -> dict:
    """Every page of `frozen`."""
    rows: list[dict] = []
    for page in range(1, MAX_FROZEN_PAGES + 1):
        answer = client.call("frozen", {"page": page, "per_page": FROZEN_PAGE})
        rows.extend(answer["frozen"])
        if len(answer["frozen"]) < FROZEN_PAGE:
            return {"frozen": rows, "complete": True}
    return {"frozen": rows, "complete": False}


def _decimals(client: Client, report: str, answer: dict) -> dict[str, int]:
    if report == "programme":
        return {}
    ids = {row["instrument"] for row in answer.get("groups", []) if row.get("instrument")}
    for row in answer.get("frozen", []):
        ids.update(h["instrument"] for h in row.get("holdings", []))
        if row.get("instrument"):
            ids.add(row["instrument"])
    return {i: client.call("instrument", {"id": i})["decimals"] for i in sorted(ids)}


# --------------------------------------------------------------------------- output


def report_rows(report: str, answer: dict) -> tuple[list[str], list[dict]]:
    """The report's columns and rows, integer units (what csv prints)."""
    if report == "holdings":
        columns = ["instrument", "group", "name", "holders", "total"]
        return columns, [{"name": "", **row} for row in answer["groups"]]
    if report == "programme":
        columns = ["id", "kind", "supply", "usd_face_value", "outstanding_usd_cents", "status"]
        return columns, answer["instruments"]
    columns = ["address", "scope", "instrument", "balance", "frozen", "reason_code", "legal_ref"]
    rows = []
    for row in answer["frozen"]:
        common = {
            "address": row["address"],
            "scope": row["scope"],
            "reason_code": row["reason_code"],
            "legal_ref": row["legal_reference"],
        }
        if row["scope"] == "account":
            for held in row["holdings"] or [{"instrument": "", "balance": 0, "frozen": 0}]:
                rows.append({**common, **held})
        else:
            rows.append(
                {
                    **common,
                    "instrument": row["instrument"],
                    "balance": row["balance"],
                    "frozen": row["frozen"],
                }
            )
    return columns, rows


def print_report(report: str, answer: dict, fmt: str, decimals: dict[str, int], out=None) -> None:
    out = out or sys.stdout
    if fmt == "json":
        print(json.dumps(answer, indent=2), file=out)
        return
    columns, rows = report_rows(report, answer)
    if fmt == "csv":
        writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return
    print(_title(report, answer), file=out)
    shown = []
    for row in rows:
        places = decimals.get(row.get("instrument") or "", 0)
        shown.append(
            {
                **row,
                **{
                    c: format_amount(row[c], places)
                    for c in ("total", "balance", "frozen")
                    if isinstance(row.get(c), int)
                },
            }
        )
        if isinstance(row.get("outstanding_usd_cents"), int):
            shown[-1]["outstanding_usd"] = format_amount(row["outstanding_usd_cents"], 2)
    # People read dollars: the table shows the cents of csv/json as USD with two decimals.
    print_table(shown, [c.replace("_usd_cents", "_usd") for c in columns], out)


def _title(report: str, answer: dict) -> str:
    at = answer.get("at")
    when = f" (as of {at['requested']}: block time {at['block_time']})" if at else ""
    height = answer.get("height")
    where = f" at height {height}" if height is not None else ""
    if report == "holdings":
        instrument = answer.get("instrument") or "all instruments"
        return f"Holdings by {answer['by']}, {instrument}{where}{when}"
    if report == "programme":
        cap, out = answer["cap_usd_cents"], answer["outstanding_usd_cents"]
        return (
            f"Programme{where}{when}: outstanding USD {format_amount(out, 2)} of cap"
            f" USD {format_amount(cap, 2)} ({answer['used_percent']} %), available"
            f" USD {format_amount(answer['available_usd_cents'], 2)}"
        )
    complete = "" if answer.get("complete", True) else " (first pages only)"
    return f"Frozen accounts and amounts, now{complete}"
