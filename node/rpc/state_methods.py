"""Committed state: account (with proofs of its record and balances, or of its absence),
instrument, instruments, holders, events. Every read is of committed state (the store);
proofs come from the driver and are checked here against the store's certified header."""

from __future__ import annotations

from typing import Any

from ledger import supervision_store
from ledger.commitment import verify_proof
from ledger.crypto import address_to_text
from ledger.state import (
    INSTRUMENT,
    account_key,
    holders_prefix,
    holding_key,
    instrument_key,
    reserve_key,
)
from ledger.store import MAX_EVENTS_PAGE
from ledger.types import COMMODITY, Account, Holding, Instrument
from node.rpc.budget import expect_answer_bytes, page_bytes, render_rows
from node.rpc.errors import NOT_FOUND, PROOF_UNAVAILABLE, SERVER_LIMIT, RpcError
from node.rpc.framing import Method
from node.rpc.nodeview import NodeView
from node.rpc.params import address_param, bool_param, instrument_param, int_param
from node.rpc.render import (
    b64,
    balances,
    decode_record,
    holding_keys,
    render_account,
    render_event,
    render_instrument,
    render_reserve,
)
from node.rpc.scopes import Scopes

PROOF_ATTEMPTS = 3
MAX_PAGE = 100  # rows per page of instruments / holders


class StateMethods:
    """Reads of the committed state and the audit trail."""

    def __init__(
        self,
        node: NodeView,
        scopes: Scopes,
        max_page: int = MAX_PAGE,
        max_events_page: int = MAX_EVENTS_PAGE,
    ) -> None:
        self.node = node
        self.scopes = scopes
        # Page caps (`[rpc] max_page`, `max_events_page`): a larger `limit` / `per_page` is an
        # invalid param; an omitted one is the cap.
        self.max_page = max_page
        self.max_events_page = max_events_page

    def table(self) -> dict[str, Method]:
        return {
            "account": Method(self.account, ("address", "prove"), ("address",)),
            "instrument": Method(self.instrument, ("id",), ("id",)),
            "instruments": Method(self.instruments, ("after", "limit")),
            "holders": Method(self.holders, ("id", "after", "limit"), ("id",)),
            "events": Method(
                self.events,
                ("account", "instrument", "from_height", "to_height", "page", "per_page"),
            ),
        }

    async def account(self, address: Any, prove: Any = False) -> dict:
        raw_address = address_param("address", address)
        prove = bool_param("prove", prove)
        await self.scopes.check_account(raw_address)
        store = self.node.store
        raw = await store.read(lambda s: s.state.get_state(account_key(raw_address)))
        if prove:
            if raw is None:
                # Absence is provable too: the error carries a proof that no account record
                # is under the certified app_hash (node/verify.py `verify_account_absence`).
                absent = await self._proven_absence(raw_address, address)
                if absent is not None:
                    raise absent
            return await self._proven_account(raw_address)  # (created meanwhile, if absent)
        if raw is None:
            raise RpcError(NOT_FOUND, "Not found", f"no account {address}")
        account = Account.from_map(decode_record(raw))
        values = [
            await store.read(lambda s, k: s.state.get_state(k), key)
            for key in holding_keys(account)
        ]
        return render_account(account, balances(account, values))

    async def _proven_absence(self, raw_address: bytes, address: str) -> RpcError | None:
        """The NOT_FOUND error for a missing account, with a proof of its absence at a
        committed height: `data` = {message, address, proof{height, header, commit, proof}}.
        None if the account exists by now (created since the caller's read): the caller
        answers with its proven record instead."""
        key = account_key(raw_address)
        for _ in range(PROOF_ATTEMPTS):
            certified = await self._prove_committed([key])
            if certified is None:
                continue
            proven, proof = certified
            if not verify_proof(proven.app_hash, key, None, proven.proofs[0]):
                return None  # the account exists by now
            proof["proof"] = b64(proven.proofs[0].to_bytes())
            data = {"message": f"no account {address}", "address": address, "proof": proof}
            return RpcError(NOT_FOUND, "Not found", data)
        raise RpcError(SERVER_LIMIT, "Server busy", "state changed during every proof attempt")

    async def _prove_committed(self, keys: list[bytes]) -> tuple[Any, dict] | None:
        """Proofs of `keys` from the driver and the certified header they are against, as
        the start of a result's `proof` ({height, header, commit}); None when the store does
        not hold that height's block and certificate with the same app_hash (read again)."""
        try:
            proven = await self.node.prove(keys)
        except Exception as exc:  # ProofUnavailable: the driver is stopping or busy
            raise RpcError(PROOF_UNAVAILABLE, "Proof unavailable", str(exc)) from None
        store = self.node.store
        stored = await store.read(lambda s: s.blocks.block(proven.height))
        certificate = await store.read(lambda s: s.blocks.commit(proven.height))
        if stored is None or certificate is None or stored.app_hash != proven.app_hash:
            return None
        header = {"height": proven.height, "header": b64(stored.header), "commit": b64(certificate)}
        return proven, header

    async def _proven_account(self, raw_address: bytes) -> dict:
        """The account with proofs of its record and of every balance it lists.

        The account record names the instruments it holds (`Account.instruments`), so the
        keys to prove follow from the record; the proofs come from the driver (the state
        tree, committed state only) and the values are read from the store afterwards and
        checked against them here. A block committed in between is noticed (the read is
        redone, at most `PROOF_ATTEMPTS` times), so the record, the balances and the proofs
        always describe one height, and the balances are all of the account's."""
        store = self.node.store
        key = account_key(raw_address)
        for _ in range(PROOF_ATTEMPTS):
            raw = await store.read(lambda s, k: s.state.get_state(k), key)
            if raw is None:
                continue  # not there any more (or not yet): read again
            account = Account.from_map(decode_record(raw))
            keys = [key, *holding_keys(account)]
            certified = await self._prove_committed(keys)
            if certified is None:
                continue
            proven, proof = certified
            values = [await store.read(lambda s, k: s.state.get_state(k), key) for key in keys]
            if values[0] != raw or None in values:
                continue  # a block changed the account between the reads: read again
            if not all(
                verify_proof(proven.app_hash, k, value, key_proof)
                for k, value, key_proof in zip(keys, values, proven.proofs, strict=True)
            ):
                continue  # a block was committed between the proofs and the reads
            result = render_account(account, balances(account, values[1:]))
            proof["value"] = b64(raw)
            proof["proof"] = b64(proven.proofs[0].to_bytes())
            proof["balances"] = [
                {"instrument": instrument_id, "value": b64(v), "proof": b64(p.to_bytes())}
                for instrument_id, v, p in zip(
                    account.instruments, values[1:], proven.proofs[1:], strict=True
                )
            ]
            result["proof"] = proof
            return result
        raise RpcError(SERVER_LIMIT, "Server busy", "state changed during every proof attempt")

    async def instrument(self, id: Any) -> dict:
        instrument_id = instrument_param(id)
        store = self.node.store
        raw = await store.read(lambda s: s.state.get_state(instrument_key(instrument_id)))
        if raw is None:
            raise RpcError(NOT_FOUND, "Not found", f"no instrument {instrument_id}")
        instrument = Instrument.from_map(decode_record(raw))
        result = render_instrument(instrument)
        if instrument.kind == COMMODITY:
            # The latest reserve attestation (all of them, latest first: `reserves`).
            attested = await store.read(lambda s: s.state.get_state(reserve_key(instrument_id)))
            result["reserve"] = None if attested is None else render_reserve(attested)
        return result

    async def instruments(self, after: Any = None, limit: Any = None) -> dict:
        limit = int_param("limit", self.max_page if limit is None else limit, 1, self.max_page)
        after_key = None if after is None else instrument_key(instrument_param(after))
        page = await self.node.store.read(
            lambda s: s.state.scan_prefix(INSTRUMENT, limit, after_key)
        )
        expect_answer_bytes(page_bytes(raw for _, raw in page))
        items = [render_instrument(Instrument.from_map(decode_record(raw))) for _, raw in page]
        next_after = items[-1]["id"] if len(items) == limit else None
        return {"instruments": items, "next": next_after}

    async def holders(self, id: Any, after: Any = None, limit: Any = None) -> dict:
        instrument_id = instrument_param(id)
        limit = int_param("limit", self.max_page if limit is None else limit, 1, self.max_page)
        after_key = None
        if after is not None:
            after_key = holding_key(instrument_id, address_param("after", after))
        store = self.node.store
        if await store.read(lambda s: s.state.get_state(instrument_key(instrument_id))) is None:
            raise RpcError(NOT_FOUND, "Not found", f"no instrument {instrument_id}")
        prefix = holders_prefix(instrument_id)
        page = await store.read(lambda s: s.state.scan_prefix(prefix, limit, after_key))
        expect_answer_bytes(page_bytes(raw for _, raw in page))
        # A whole-account freeze freezes every unit it holds: "frozen" says so (not 0).
        frozen_whole = await store.read(
            lambda s: s.db.read_with(
                supervision_store.frozen_accounts, [key[len(prefix) :] for key, _ in page]
            )
        )
        holders = []
        for key, raw in page:
            holding = Holding.from_map(decode_record(raw))
            address = key[len(prefix) :]
            whole = address in frozen_whole
            holders.append(
                {
                    "address": address_to_text(address),
                    "balance": holding.balance,
                    "frozen": holding.balance if whole else holding.frozen,
                    "account_frozen": whole,
                }
            )
        next_after = holders[-1]["address"] if len(holders) == limit else None
        return {"instrument": instrument_id, "holders": holders, "next": next_after}

    async def events(
        self,
        account: Any = None,
        instrument: Any = None,
        from_height: Any = None,
        to_height: Any = None,
        page: Any = 1,
        per_page: Any = 30,
    ) -> dict:
        account_bytes = None if account is None else address_param("account", account)
        instrument_id = None if instrument is None else instrument_param(instrument)
        low = None if from_height is None else int_param("from_height", from_height, 0)
        high = None if to_height is None else int_param("to_height", to_height, 0)
        per_page = int_param("per_page", per_page, 1, self.max_events_page)
        page = int_param("page", page, 1, 1_000_000)
        await self.scopes.check_events(account_bytes)
        records = await self.node.store.read(
            lambda s: s.indexes.events(
                account=account_bytes,
                instrument=instrument_id,
                from_height=low,
                to_height=high,
                limit=per_page,
                offset=(page - 1) * per_page,
            )
        )
        # Measured from the stored bytes before anything is rendered (node/rpc/budget.py).
        expect_answer_bytes(page_bytes(r.data for r in records))
        # A long page is rendered on a worker thread: the driver shares the trio thread.
        events = await render_rows(render_event, records)
        return {"events": events, "page": page, "per_page": per_page}
