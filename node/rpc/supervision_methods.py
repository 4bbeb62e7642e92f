"""Supervision reads (CONTRACT.md, "Supervision and discovery"): programme, parameters, vasps,
reserves, frozen, holdings_summary, height_at, and `account` as of a past height.

Every figure comes from committed state or from the supervision index the store keeps per block
(ledger/supervision_store.py): aggregates are one row per group, never a scan of the holders;
"as of height h" reads the index's and the state history's rows at or before h. Who may call
each method is node/rpc/scopes.py's `METHOD_RULES` (programme and height_at public, the others
the institutions'); `account` keeps its data check. Answers are bounded in bytes
(node/rpc/budget.py) and the lists that grow with the chain are paged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ledger import supervision_store as sup
from ledger.block import decode_header
from ledger.crypto import address_to_text
from ledger.state import (
    INSTRUMENT,
    PARAMETERS_KEY,
    POLICY_KEY,
    PROGRAMME_KEY,
    VASP_PREFIX,
    account_key,
    holding_key,
    instrument_key,
    reserve_key,
    vasp_key,
)
from ledger.supervision import CLIENTS, CLIENTS_DIMENSION, DIMENSIONS, NO_GROUP
from ledger.types import Account, Holding, Instrument, Vasp
from node.rpc.budget import expect_answer_bytes, page_bytes
from node.rpc.chain_methods import committed_height
from node.rpc.errors import NOT_FOUND, RpcError, invalid_params
from node.rpc.framing import Method
from node.rpc.nodeview import NodeView
from node.rpc.params import address_param, instrument_param, int_param
from node.rpc.render import (
    balances,
    decode_record,
    iso_time,
    render_account,
    render_reserve,
    to_json,
)
from node.rpc.scopes import Scopes

MAX_GROUPS = 10_000  # rows of one holdings_summary answer (countries x instruments, ...)
MAX_PROGRAMME_INSTRUMENTS = 10_000
GROUP_ROW_BYTES = 200
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_TIME_MS = 1 << 53


def time_param(value: Any) -> int:
    """`time`: RFC 3339 text with a zone ("2026-01-01T00:00:00Z") or ms since the epoch."""
    if type(value) is int:
        return int_param("time", value, 0, _MAX_TIME_MS)
    if type(value) is str and value.isdigit() and len(value) < 17:
        return int(value)
    if type(value) is not str or len(value) > 64:
        raise invalid_params("time must be RFC 3339 text or milliseconds since 1970")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise invalid_params(f"time {value!r:.70} is not RFC 3339") from None
    if moment.tzinfo is None:
        raise invalid_params("time needs a zone (Z or +hh:mm)")
    since = moment - _EPOCH
    ms = since.days * 86_400_000 + since.seconds * 1000 + since.microseconds // 1000
    if not 0 <= ms <= _MAX_TIME_MS:
        raise invalid_params("time is before 1970 or too far ahead")
    return ms


def percent(part: int, whole: int) -> str:
    """part / whole as a percentage with two decimals, exact integer arithmetic ("12.34")."""
    if whole <= 0:
        return "0.00"
    hundredths = part * 10_000 // whole
    return f"{hundredths // 100}.{hundredths % 100:02d}"


class SupervisionMethods:
    """The institutions' reads over the supervision index and the state history."""

    def __init__(self, node: NodeView, scopes: Scopes, max_page: int, account: Any) -> None:
        self.node = node
        self.scopes = scopes
        self.max_page = max_page
        self._latest_account = account  # StateMethods.account: the answer without height

    def table(self) -> dict[str, Method]:
        return {
            "programme": Method(self.programme, ("height",)),
            "parameters": Method(self.parameters, ("height",)),
            "vasps": Method(self.vasps, ("after", "limit")),
            "reserves": Method(self.reserves, ("instrument", "page", "per_page"), ("instrument",)),
            "frozen": Method(self.frozen, ("page", "per_page")),
            "holdings_summary": Method(
                self.holdings_summary, ("instrument", "by", "height"), ("by",)
            ),
            "height_at": Method(self.height_at, ("time",), ("time",)),
            "account": Method(self.account, ("address", "prove", "height"), ("address",)),
        }

    # -- helpers

    async def _height(self, height: Any) -> tuple[int, bool]:
        """(the height asked for or the latest, whether it is the latest). A past height
        must be one the node's index covers."""
        store = self.node.store
        latest = await store.read(lambda s: s.blocks.latest_height()) or 0
        resolved = await committed_height(store, height)
        if resolved < latest:
            since = await store.read(lambda s: s.db.read_with(sup.since))
            if since is None or resolved < since:
                raise RpcError(
                    NOT_FOUND,
                    "Not found",
                    f"this node keeps supervision history from height {since} on, not {resolved}",
                )
        return resolved, resolved == latest

    async def _values(self, keys: list[bytes], height: int, latest: bool) -> list[bytes | None]:
        store = self.node.store
        if latest:
            return [await store.read(lambda s, k: s.state.get_state(k), key) for key in keys]
        return await store.read(lambda s: s.indexes.history_at(keys, height))

    # -- methods

    async def programme(self, height: Any = None) -> dict:
        height, latest = await self._height(height)
        store = self.node.store
        ids = [
            key[len(INSTRUMENT) :]
            for key, _ in await store.read(lambda s: s.state.scan_prefix(INSTRUMENT))
        ]
        if len(ids) > MAX_PROGRAMME_INSTRUMENTS:
            raise RpcError(-32000, "Answer too large", f"{len(ids)} instruments")
        keys = [PROGRAMME_KEY, *(INSTRUMENT + raw for raw in ids)]
        values = await self._values(keys, height, latest)
        programme = decode_record(values[0])
        cap, outstanding = programme["cap_usd_cents"], programme["outstanding_usd_cents"]
        expect_answer_bytes(page_bytes(v for v in values[1:] if v is not None))
        instruments = []
        for raw in values[1:]:
            if raw is None:
                continue  # registered after `height`
            instrument = Instrument.from_map(decode_record(raw))
            instruments.append(
                {
                    "id": instrument.id,
                    "kind": instrument.kind,
                    "name": instrument.name,
                    "supply": instrument.supply,
                    "cap": instrument.cap,
                    "usd_face_value": instrument.usd_face_value,
                    "outstanding_usd_cents": instrument.supply * instrument.usd_face_value,
                    "status": "redeemed"
                    if instrument.redeemed
                    else "paused"
                    if instrument.paused
                    else "active",
                }
            )
        return {
            "height": height,
            "cap_usd_cents": cap,
            "outstanding_usd_cents": outstanding,
            "available_usd_cents": cap - outstanding,
            "used_percent": percent(outstanding, cap),
            "instruments": instruments,
        }

    async def parameters(self, height: Any = None) -> dict:
        height, latest = await self._height(height)
        keys = [PARAMETERS_KEY, POLICY_KEY, PROGRAMME_KEY]
        parameters, policy, programme = await self._values(keys, height, latest)
        return {
            "height": height,
            "parameters": to_json(decode_record(parameters)),
            "policy": to_json(decode_record(policy)),
            "programme_cap_usd_cents": decode_record(programme)["cap_usd_cents"],
        }

    async def vasps(self, after: Any = None, limit: Any = None) -> dict:
        limit = int_param("limit", self.max_page if limit is None else limit, 1, self.max_page)
        after_key = None if after is None else vasp_key(address_param("after", after))
        store = self.node.store
        page = await store.read(lambda s: s.state.scan_prefix(VASP_PREFIX, limit, after_key))
        expect_answer_bytes(page_bytes(raw for _, raw in page))
        clients = {
            group: holders
            for _, group, _, holders in await store.read(
                lambda s: s.db.read_with(sup.groups, CLIENTS, CLIENTS_DIMENSION, None, MAX_GROUPS)
            )
        }
        items = []
        for _, raw in page:
            vasp = Vasp.from_map(decode_record(raw))
            items.append(
                {
                    "address": address_to_text(vasp.address),
                    "name": vasp.name,
                    "status": "suspended" if vasp.suspended else "licensed",
                    "reason": vasp.reason,
                    "since_height": vasp.height,
                    "clients": clients.get(vasp.address.hex(), 0),
                }
            )
        next_after = items[-1]["address"] if len(items) == limit else None
        return {"vasps": items, "next": next_after}

    async def reserves(self, instrument: Any, page: Any = 1, per_page: Any = None) -> dict:
        instrument_id = instrument_param(instrument)
        per_page = int_param(
            "per_page", self.max_page if per_page is None else per_page, 1, self.max_page
        )
        page = int_param("page", page, 1, 1_000_000)
        store = self.node.store
        raw = await store.read(lambda s: s.state.get_state(instrument_key(instrument_id)))
        if raw is None:
            raise RpcError(NOT_FOUND, "Not found", f"no instrument {instrument_id}")
        kind = Instrument.from_map(decode_record(raw)).kind
        rows = await store.read(
            lambda s: s.indexes.history_of(
                reserve_key(instrument_id), per_page, (page - 1) * per_page
            )
        )
        expect_answer_bytes(page_bytes(v for _, v in rows if v is not None))
        return {
            "instrument": instrument_id,
            "kind": kind,
            "attestations": [render_reserve(v) for _, v in rows if v is not None],
            "page": page,
            "per_page": per_page,
        }

    async def frozen(self, page: Any = 1, per_page: Any = None) -> dict:
        per_page = int_param(
            "per_page", self.max_page if per_page is None else per_page, 1, self.max_page
        )
        page = int_param("page", page, 1, 1_000_000)
        store = self.node.store
        rows = await store.read(
            lambda s: s.db.read_with(sup.frozen_page, per_page, (page - 1) * per_page)
        )
        found = []
        for address, instrument_id, reason_code, legal_reference, height in rows:
            raw = await store.read(lambda s, a: s.state.get_state(account_key(a)), address)
            if raw is None:
                continue
            account = Account.from_map(decode_record(raw))
            entry: dict[str, Any] = {
                "address": address_to_text(address),
                "scope": "account" if instrument_id == "" else "holding",
                "instrument": instrument_id or None,
                "reason_code": reason_code,
                "legal_reference": legal_reference,
                "height": height,
                "vasp": _kyc_field(account, "vasp"),
                "country": _kyc_field(account, "country"),
            }
            if instrument_id == "":
                keys = [holding_key(i, address) for i in account.instruments]
                held = balances(
                    account,
                    [await store.read(lambda s, k: s.state.get_state(k), key) for key in keys],
                )
                for item in held:
                    item["frozen"] = item["balance"]  # the whole account is frozen
                entry["holdings"] = held
            else:
                raw_holding = await store.read(
                    lambda s, k: s.state.get_state(k), holding_key(instrument_id, address)
                )
                holding = Holding.from_map(decode_record(raw_holding)) if raw_holding else None
                entry["balance"] = 0 if holding is None else holding.balance
                entry["frozen"] = 0 if holding is None else holding.frozen
            found.append(entry)
        expect_answer_bytes(len(found) * 600)
        return {"frozen": found, "page": page, "per_page": per_page}

    async def holdings_summary(self, by: Any, instrument: Any = None, height: Any = None) -> dict:
        if by not in DIMENSIONS:
            raise invalid_params(f"by must be one of {list(DIMENSIONS)}")
        instrument_id = None if instrument is None else instrument_param(instrument)
        height, latest = await self._height(height)
        store = self.node.store
        if instrument_id is not None:
            (raw,) = await self._values([instrument_key(instrument_id)], height, latest)
            if raw is None:
                raise RpcError(
                    NOT_FOUND, "Not found", f"no instrument {instrument_id} at height {height}"
                )
        rows = await store.read(
            lambda s: s.db.read_with(sup.groups, instrument_id, by, height, MAX_GROUPS + 1)
        )
        if len(rows) > MAX_GROUPS:
            raise RpcError(
                -32000, "Answer too large", f"more than {MAX_GROUPS} groups: name an instrument"
            )
        expect_answer_bytes(len(rows) * GROUP_ROW_BYTES)
        names = await self._vasp_names(rows) if by == "vasp" else {}
        groups, totals = [], {}
        for instrument_name, group, total, holders in rows:
            row: dict[str, Any] = {
                "instrument": instrument_name,
                "group": group,
                "total": total,
                "holders": holders,
            }
            if by == "vasp" and group != NO_GROUP:
                row["group"] = address_to_text(bytes.fromhex(group))
                row["name"] = names.get(group, "")
            groups.append(row)
            summed = totals.setdefault(instrument_name, [0, 0])
            summed[0] += total
            summed[1] += holders
        return {
            "height": height,
            "by": by,
            "instrument": instrument_id,
            "groups": groups,
            "totals": [{"instrument": i, "total": t, "holders": h} for i, (t, h) in totals.items()],
        }

    async def _vasp_names(self, rows: list) -> dict[str, str]:
        names = {}
        for group in sorted({group for _, group, _, _ in rows if group != NO_GROUP}):
            raw = await self.node.store.read(
                lambda s, k: s.state.get_state(k), vasp_key(bytes.fromhex(group))
            )
            names[group] = "" if raw is None else Vasp.from_map(decode_record(raw)).name
        return names

    async def height_at(self, time: Any) -> dict:
        wanted = time_param(time)
        store = self.node.store
        genesis_ms = self.node.genesis.get("genesis_time_ms", 0)
        if wanted < genesis_ms:
            raise RpcError(NOT_FOUND, "Not found", f"{iso_time(wanted)} is before the genesis time")
        low, high = 0, await store.read(lambda s: s.blocks.latest_height()) or 0
        low_ms = genesis_ms
        # Block times only grow (ledger/transition.py): the last height with time <= wanted.
        while low < high:
            middle = (low + high + 1) // 2
            middle_ms = await self._block_time(middle)
            if middle_ms <= wanted:
                low, low_ms = middle, middle_ms
            else:
                high = middle - 1
        return {"height": low, "time": iso_time(low_ms), "time_ms": low_ms}

    async def _block_time(self, height: int) -> int:
        stored = await self.node.store.read(lambda s: s.blocks.block(height))
        if stored is None:
            raise RpcError(NOT_FOUND, "Not found", f"no block at height {height}")
        return decode_header(stored.header).time_ms

    async def account(self, address: Any, prove: Any = False, height: Any = None) -> dict:
        if height is None:
            return await self._latest_account(address, prove)
        if prove is not False:
            raise invalid_params("prove is for the latest state only: leave out height")
        raw_address = address_param("address", address)
        await self.scopes.check_account(raw_address)
        height, latest = await self._height(height)
        (raw,) = await self._values([account_key(raw_address)], height, latest)
        if raw is None:
            raise RpcError(NOT_FOUND, "Not found", f"no account {address} at height {height}")
        account = Account.from_map(decode_record(raw))
        keys = [holding_key(i, raw_address) for i in account.instruments]
        result = render_account(
            account, balances(account, await self._values(keys, height, latest))
        )
        result["height"] = height
        return result


def _kyc_field(account: Account, name: str) -> str | None:
    kyc = account.kyc
    if kyc is None:
        return None
    value = getattr(kyc, name)
    if isinstance(value, bytes):
        return address_to_text(value)
    return value
