"""Who may read what over the RPC: the threat model's table of actors, as code.

What it owns: the caller of the request being answered (`caller`, a context variable the app
sets once per HTTP request or WebSocket connection: the public key node/rpc/auth.py verified,
or None for an anonymous client), what that key is on the chain (`Principal`, read from
COMMITTED state), the rule of every method (`METHOD_RULES`) and the data checks the methods
call (`check_account`, `check_events`, `tx_view`, `submission_refusals`, `check_subscription`).
Refusals are JSON-RPC -32004 errors: `unauthorized` (no or bad credentials) or `forbidden`
(known, not allowed), with `data.rule` naming the rule.

Kinds of principal (docs/RPC.md, "Who may read what"):

    anonymous      no credentials: the public row (health, status, validators, blocks and
                   commits without bodies, instruments and their supplies) when
                   `[rpc] anonymous = "public"`; only `health` when "none"
    account        a key whose account holds no reading role (an investor, a reserve
                   custodian, a validator operator's account, or no account yet): the public
                   row, its own account, holdings, transactions, events, subscriptions
    vasp           an account with the vasp role and a licence not suspended: also the
                   accounts whose KYC names it (`kyc.vasp`) or that it attested
                   (`kyc.attested_by`): their holdings, transactions, events, subscriptions
    suspended_vasp the vasp role with a suspended (or no) licence: as `account`
    institution    an account holding issuer, registrar, paying_agent, cash_issuer, regulator
                   or auditor: everything, holders lists included
    operator       the node's own node key (its home's node_key.json): everything, on its
                   own node only (another node has another key)

Rights follow the chain: a principal is read from committed state (the key binding, the
account, the VASP licence: at most three store reads) and cached until a committed block
writes one of those records -- the cache's generation is the event bus's count of published
blocks, which the driver advances right after each commit, and the bus names the state keys
each of its last blocks wrote (`EventBus.changed_since`; when it cannot, every principal is
read again) -- so a role revoked or a licence suspended at height h changes the answers from
the first one after h is committed. Concurrent requests of one key share one lookup.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from ledger.codes import LedgerError
from ledger.crypto import address_from_public_key, address_from_text, address_to_text
from ledger.state import account_key, key_binding_key, vasp_key
from ledger.tx import decode_signed_tx
from ledger.types import (
    AUDITOR,
    CASH_ISSUER,
    ISSUER,
    PAYING_AGENT,
    REGISTRAR,
    REGULATOR,
    VASP,
    Account,
    KeyBinding,
    Vasp,
)
from node.rpc.errors import ACCESS_DENIED, RpcError
from node.rpc.nodeview import Store
from node.rpc.render import decode_record

ANONYMOUS = "anonymous"
ACCOUNT = "account"
VASP_KIND = "vasp"
SUSPENDED_VASP = "suspended_vasp"
INSTITUTION = "institution"
OPERATOR = "operator"
READ_ALL = frozenset({INSTITUTION, OPERATOR})

# Roles whose holders read everything (the four institutions' roles, THREATMODEL.md).
READ_ALL_ROLES = frozenset({ISSUER, REGISTRAR, PAYING_AGENT, CASH_ISSUER, REGULATOR, AUDITOR})

# Method rules: who may call at all; the data checks come on top, inside the methods.
ANY = "any"  # everybody, even with anonymous = "none"
PUBLIC = "public"  # the anonymous row
SIGNED = "signed"  # any authenticated key; the method checks the data asked for
INSTITUTIONS = "institutions"  # institutions and the node's operator
METHOD_RULES: dict[str, str] = {
    "health": ANY,
    "status": PUBLIC,
    "validators": PUBLIC,  # commits are public; checking one needs the validator set
    "block": PUBLIC,  # bodies only for READ_ALL (the others get "txs": null)
    "commit": PUBLIC,
    "instrument": PUBLIC,
    "instruments": PUBLIC,
    "quote": PUBLIC,  # arithmetic on a bond's public terms (node/rpc/quote_methods.py)
    "account": SIGNED,
    "tx": SIGNED,
    "events": SIGNED,
    "broadcast_tx_sync": SIGNED,
    "broadcast_tx_commit": SIGNED,
    "check_tx": SIGNED,
    "holders": INSTITUTIONS,
    "genesis": INSTITUTIONS,
    "net_info": INSTITUTIONS,
    "num_unconfirmed_txs": INSTITUTIONS,
    # CONTRACT.md's supervision methods (node/rpc/supervision_methods.py): the anonymous row
    # has "programme cap usage" and the OpenRPC document, and block times are public
    # (height_at); the supervision reports are the institutions' ("everything, including
    # supervision reports"). `account` with `height` keeps `account`'s rule.
    "rpc.discover": PUBLIC,
    "programme": PUBLIC,
    "height_at": PUBLIC,
    "parameters": INSTITUTIONS,
    "vasps": INSTITUTIONS,
    "reserves": INSTITUTIONS,
    "frozen": INSTITUTIONS,
    "holdings_summary": INSTITUTIONS,
}
# A method missing from the table (added later, unclassified) is for READ_ALL only: closed by
# default, never open by omission.
DEFAULT_RULE = INSTITUTIONS

MAX_PRINCIPALS = 4096  # cached principals per block; more: the cache starts over
MAX_CLIENT_ENTRIES = 65_536  # cached VASP-client answers per block (~10 MB at most)
MAX_CLIENT_CHECKS = 256  # accounts one answer may look up to filter a transaction's events

# The caller of the request being answered: a verified public key, or None (anonymous).
caller: contextvars.ContextVar[bytes | None] = contextvars.ContextVar("rpc_caller", default=None)


def unauthorized(rule: str, detail: str, **extra: Any) -> RpcError:
    return RpcError(ACCESS_DENIED, "unauthorized", {"rule": rule, "detail": detail, **extra})


def forbidden(rule: str, detail: str) -> RpcError:
    return RpcError(ACCESS_DENIED, "forbidden", {"rule": rule, "detail": detail})


def operator_keys_of(node_id: str) -> frozenset[bytes]:
    """The keys that read everything on the node `node_id` names: its node key, when `node_id`
    is one (64 hex digits)."""
    return frozenset({bytes.fromhex(node_id)}) if len(node_id) == 64 else frozenset()


class _Resolution:
    """One lookup of a key's principal that concurrent requests share (`Scopes.principal`)."""

    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: Principal | RpcError | None = None  # None: cancelled or failed


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking, as the committed chain says now."""

    kind: str
    address: bytes | None = None
    public_key: bytes | None = None

    @property
    def reads_all(self) -> bool:
        return self.kind in READ_ALL


ANONYMOUS_PRINCIPAL = Principal(ANONYMOUS)


class Scopes:
    """The read rules of one node. `store`: committed state; `generation()`: a value that
    changes with every committed block (the bus's published count); `changed_since(g)`: the
    state keys written since generation g, or None if unknown; `chain_id` and `node_id`: what
    a client signs its credentials for. `operator_keys`, the keys that read everything on
    this node, are its node key (`node_id`, the key's hex)."""

    def __init__(
        self,
        store: Store,
        *,
        generation: Callable[[], Any] | None = None,
        changed_since: Callable[[Any], frozenset[bytes] | None] | None = None,
        anonymous: str = "public",
        chain_id: str = "",
        node_id: str = "",
    ) -> None:
        self.store = store
        self._generation = generation
        self._changed_since = changed_since
        self.anonymous = anonymous
        self.operator_keys = operator_keys_of(node_id)
        self.chain_id = chain_id
        self.node_id = node_id
        self._cache_generation: Any = object()
        self._cache: dict[bytes, Principal | RpcError] = {}
        self._resolving: dict[bytes, _Resolution] = {}  # lookups running in this generation
        # (VASP, account) -> is a client: a subscription's notifications ask it per event.
        self._clients: dict[tuple[bytes, bytes], bool] = {}

    # -- who

    async def principal(self) -> Principal:
        """The caller of this request as the chain says now; `unauthorized` for a key the
        chain no longer authorises (recovered away)."""
        public_key = caller.get()
        if public_key is None:
            return ANONYMOUS_PRINCIPAL
        generation = (
            self._generation()
            if self._generation
            else await self.store.read(lambda s: s.blocks.latest_height())
        )
        if (
            generation != self._cache_generation
            or len(self._cache) >= MAX_PRINCIPALS
            or len(self._clients) >= MAX_CLIENT_ENTRIES
        ):
            self._new_generation(generation)
        found = self._cache.get(public_key)
        if found is None:
            found = await self._resolve_shared(public_key, generation)
        if isinstance(found, RpcError):
            raise found
        return found

    def _new_generation(self, generation: Any) -> None:
        """Blocks were committed since the cache was filled: forget what they changed.

        A principal is read from three records only (`_resolve`: the key's binding, the
        account, its VASP licence), and a record changes only through a write that the
        block's state changes name; so with the blocks' changed keys known (the event bus,
        `changed_since`), the principals whose records no block wrote stay as they are --
        exactly what a fresh lookup would read. Otherwise (too many blocks, a cache past its
        bound, no bus) everything starts over, as before."""
        changed = None
        if (
            self._changed_since is not None
            and isinstance(self._cache_generation, int)
            and len(self._cache) < MAX_PRINCIPALS
        ):
            changed = self._changed_since(self._cache_generation)
        if changed is None:
            self._cache = {}
        elif changed:
            self._cache = {
                key: found
                for key, found in self._cache.items()
                if isinstance(found, Principal) and changed.isdisjoint(self._records_of(key, found))
            }
        self._clients, self._resolving = {}, {}
        self._cache_generation = generation

    def _records_of(self, public_key: bytes, found: Principal) -> tuple[bytes, ...]:
        """The state keys `_resolve` read for `public_key` (its answer `found`; a refusal is
        never kept across a block)."""
        if public_key in self.operator_keys:
            return ()
        keys = [key_binding_key(public_key), account_key(address_from_public_key(public_key))]
        if found.address is not None:
            keys += [account_key(found.address), vasp_key(found.address)]
        return tuple(keys)

    async def _resolve_shared(self, public_key: bytes, generation: Any) -> Principal | RpcError:
        """`_resolve` once per key and generation, however many requests ask meanwhile.

        Every block starts a new generation, and a client's requests in flight (bench.py's
        lanes, a VASP's pipelined batches) all ask at once after it: each doing its own two or
        three store reads put them all in the store thread's read lane, behind the driver's
        commit and vote records, so submissions reached the driver one request per block
        (docs/BENCHMARKS.md, "Where a submission's time goes"). The others wait for the one
        lookup; if it is cancelled or fails, the next waiter looks up itself. A lookup begun
        in an older generation answers its own requests but is not cached in a newer one."""
        while True:
            shared = self._resolving.get(public_key)
            if shared is None:
                break
            await shared.done.wait()
            if shared.result is not None:
                return shared.result
        shared = self._resolving[public_key] = _Resolution()
        try:
            try:
                shared.result = await self._resolve(public_key)
            except RpcError as refused:
                shared.result = refused
        finally:
            shared.done.set()
            if self._resolving.get(public_key) is shared:
                del self._resolving[public_key]
        if generation == self._cache_generation:
            self._cache[public_key] = shared.result
        return shared.result

    async def _resolve(self, public_key: bytes) -> Principal:
        if public_key in self.operator_keys:
            return Principal(OPERATOR, None, public_key)
        store = self.store
        binding = await store.read(lambda s: s.state.get_state(key_binding_key(public_key)))
        if binding is not None:
            address = KeyBinding.from_map(decode_record(binding)).address
        else:
            address = address_from_public_key(public_key)
        raw = await store.read(lambda s: s.state.get_state(account_key(address)))
        if raw is None:
            return Principal(ACCOUNT, address, public_key)  # no account yet: its own only
        account = Account.from_map(decode_record(raw))
        if account.public_key is not None and account.public_key != public_key:
            raise unauthorized(
                "auth.key_replaced",
                f"this key no longer speaks for {address_to_text(address)} (key recovery)",
            )
        if not READ_ALL_ROLES.isdisjoint(account.roles):
            return Principal(INSTITUTION, address, public_key)
        if VASP in account.roles:
            licence = await store.read(lambda s: s.state.get_state(vasp_key(address)))
            if licence is not None and not Vasp.from_map(decode_record(licence)).suspended:
                return Principal(VASP_KIND, address, public_key)
            return Principal(SUSPENDED_VASP, address, public_key)
        return Principal(ACCOUNT, address, public_key)

    # -- methods

    async def gate(self, method: str) -> Principal:
        """The method-level rule of `method` for this caller; the principal if it passes."""
        rule = METHOD_RULES.get(method, DEFAULT_RULE)
        if rule == ANY:
            return ANONYMOUS_PRINCIPAL if caller.get() is None else await self.principal()
        principal = await self.principal()
        if principal.kind == ANONYMOUS:
            if rule == PUBLIC and self.anonymous == "public":
                return principal
            if rule == PUBLIC:
                raise self.no_credentials("rpc.anonymous_none", f"{method} needs credentials")
            raise self.no_credentials("auth.required", f"{method} needs credentials")
        if rule == INSTITUTIONS and not principal.reads_all:
            raise forbidden("scope.institutions_only", f"{method} is for institutions only")
        return principal

    def no_credentials(self, rule: str, detail: str, **extra: Any) -> RpcError:
        """`unauthorized`, with what a client needs to sign its next request."""
        return unauthorized(rule, detail, chain_id=self.chain_id, node_id=self.node_id, **extra)

    # -- data

    async def may_read_account(self, principal: Principal, address: bytes) -> bool:
        if principal.reads_all or address == principal.address:
            return True
        if principal.kind != VASP_KIND or principal.address is None:
            return False
        pair = (principal.address, address)
        known = self._clients.get(pair)
        if known is None:
            raw = await self.store.read(lambda s: s.state.get_state(account_key(address)))
            kyc = None if raw is None else Account.from_map(decode_record(raw)).kyc
            known = kyc is not None and principal.address in (kyc.vasp, kyc.attested_by)
            self._clients[pair] = known  # until the next block, like the principal
        return known

    async def check_account(self, address: bytes, what: str = "account") -> Principal:
        """Refuse unless the caller may read `address`'s account, holdings, txs and events."""
        principal = await self.principal()
        if principal.kind == ANONYMOUS:
            raise self.no_credentials("auth.required", f"{what} needs credentials")
        if not await self.may_read_account(principal, address):
            raise forbidden(
                "scope.account",
                f"{what} of {address_to_text(address)}: only its owner, its VASP and the "
                "institutions may read it",
            )
        return principal

    async def check_events(self, account: bytes | None) -> None:
        """`events` pages: everything for READ_ALL; for anyone else `account` must be given
        and readable, so a page is never filled by scanning others' events."""
        principal = await self.principal()
        if principal.reads_all:
            return
        if account is None:
            if principal.kind == ANONYMOUS:
                raise self.no_credentials("auth.required", "events needs credentials")
            raise forbidden("scope.events_account", "events: give account= (one you may read)")
        await self.check_account(account, "events")

    async def tx_view(self, raw: bytes, events: list[dict]) -> list[dict]:
        """Refuse a committed transaction the caller may not read; else the receipt's events
        it may see (READ_ALL: all; others: those naming an account it may read, so a coupon
        payment does not list every holder to each of them). `events`: rendered JSON."""
        principal = await self.principal()
        if principal.reads_all:
            return events
        if principal.kind == ANONYMOUS:
            raise self.no_credentials("auth.required", "tx needs credentials")
        memo: dict[str, bool] = {}
        sender = _sender(raw)
        visible = sender is not None and await self._may_read_memo(principal, sender, memo)
        shown = []
        for event in events:
            for text in _event_accounts(event):
                if await self._may_read_memo(principal, text, memo):
                    shown.append(event)
                    visible = True
                    break
        if not visible:
            raise forbidden(
                "scope.tx",
                "tx: only its sender, the accounts it names, their VASPs and "
                "the institutions may read it",
            )
        return shown

    async def _may_read_memo(
        self, principal: Principal, account: bytes | str, memo: dict[str, bool]
    ) -> bool:
        key = account if isinstance(account, str) else address_to_text(account)
        if key not in memo:
            if len(memo) >= MAX_CLIENT_CHECKS:
                return False
            address = account if isinstance(account, bytes) else _address(account)
            memo[key] = address is not None and await self.may_read_account(principal, address)
        return memo[key]

    async def submission_refusals(self, raws: list[bytes]) -> list[RpcError | None]:
        """For each transaction, None if the caller may submit it, else the refusal.

        Anonymous: nothing. READ_ALL: anything (the ledger checks the signatures and the
        policies). Others: a transaction whose sender it is or that it signed (a co-signer
        may relay); a licensed VASP also its clients' (see `may_read_account`). A transaction
        that does not decode goes on to admission, which refuses it with its code."""
        principal = await self.principal()
        if principal.kind == ANONYMOUS:
            refusal = self.no_credentials("auth.required", "submitting needs credentials")
            return [refusal] * len(raws)
        if principal.reads_all:
            return [None] * len(raws)
        answers: list[RpcError | None] = []
        for raw in raws:
            try:
                tx = decode_signed_tx(raw)
            except LedgerError:
                answers.append(None)
                continue
            sender = tx.body.sender
            own = sender == principal.address or any(
                s.public_key == principal.public_key for s in tx.signatures
            )
            if own or (
                principal.kind == VASP_KIND and await self.may_read_account(principal, sender)
            ):
                answers.append(None)
            else:
                answers.append(
                    forbidden(
                        "scope.submit",
                        f"a transaction of {address_to_text(sender)}: only its sender, its "
                        "signers, its VASP and the institutions may submit it",
                    )
                )
        return answers

    async def may_read_bodies(self) -> bool:
        """Block bodies (every transaction in them): READ_ALL only."""
        return (await self.principal()).reads_all

    async def check_subscription(self, query: Any) -> None:
        """A `node.events.Query` the caller may subscribe to (and keep receiving): NewBlock
        for whoever may read block headers; Tx: READ_ALL any, others only with `account=` or
        `balance_change.account=` naming accounts they may read."""
        if query.event == "NewBlock":
            await self.gate("block")
            return
        principal = await self.principal()
        if principal.reads_all:
            return
        if not query.accounts:
            if principal.kind == ANONYMOUS:
                raise self.no_credentials("auth.required", "Tx subscriptions need credentials")
            raise forbidden(
                "scope.subscribe_account", "Tx subscriptions: give account= (one you may read)"
            )
        for account in query.accounts:  # account= and balance_change.account=
            await self.check_account(account, "subscription")


def _sender(raw: bytes) -> bytes | None:
    try:
        return decode_signed_tx(raw).body.sender
    except LedgerError:
        return None


def _event_accounts(event: dict) -> list[str]:
    """The kz1 addresses an event's rendered attributes name (render.to_json)."""
    attributes = event.get("attributes") or {}
    return [v for v in attributes.values() if isinstance(v, str) and v.startswith("kz1")]


def _address(text: str) -> bytes | None:
    try:
        return address_from_text(text)
    except LedgerError:
        return None
