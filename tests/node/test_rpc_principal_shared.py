"""`Scopes.principal`: concurrent requests of one key share one store lookup per block.

Each block starts a new generation of the principal cache. Requests in flight when it starts
(a client's pipelined lanes) must not each read the store (they queued behind the driver's
writes and reached the driver one per block, docs/BENCHMARKS.md "Where a submission's time
goes"); and rights still follow the chain: a lookup begun before a block is never cached as
the answer after it.
"""

from __future__ import annotations

import trio
import trio.testing

from ledger.codec import encode
from ledger.crypto import generate_key
from ledger.state import account_key
from ledger.types import Account
from node.events import CHANGES_KEPT, EventBus
from node.rpc import scopes as rules
from node.rpc.scopes import Scopes, caller

INSTITUTION = generate_key(b"\x11" * 32)


class GatedStore:
    """A store whose reads wait for `release` and are counted; the account's roles are
    whatever `roles` says when the read runs."""

    def __init__(self) -> None:
        self.reads = 0
        self.release = trio.Event()
        self.roles: tuple[str, ...] = ("regulator",)

    async def read(self, fn, *args):
        # One read of `AsyncStore.read`: `fn(store, *args)`, with this fake as the store.
        self.reads += 1
        await self.release.wait()
        return fn(self, *args)

    @property
    def state(self) -> GatedStore:
        return self

    def get_state(self, key: bytes):
        if key != account_key(INSTITUTION.address):
            return None
        account = Account(INSTITUTION.address, 0, None, self.roles)
        return encode(account.to_map())


def _scopes(store: GatedStore, generation: list[int]) -> Scopes:
    return Scopes(store, generation=lambda: generation[0])


async def _ask(scopes: Scopes, out: list) -> None:
    caller.set(INSTITUTION.public_key)
    try:
        out.append(await scopes.principal())
    except Exception as error:
        out.append(error)


def test_concurrent_requests_share_one_lookup():
    async def main() -> None:
        store, generation = GatedStore(), [1]
        scopes = _scopes(store, generation)
        answers: list = []
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(_ask, scopes, answers)
            await trio.testing.wait_all_tasks_blocked()
            assert store.reads == 1  # one lookup in the store, seven requests waiting on it
            store.release.set()
        assert len(answers) == 8
        assert all(p.kind == rules.INSTITUTION for p in answers)
        assert store.reads == 2  # key binding, then the account: once, not 8 times
        await _ask(scopes, answers)  # cached for the rest of the block
        assert store.reads == 2

    trio.run(main)


def test_a_lookup_from_before_a_block_is_not_cached_after_it():
    async def main() -> None:
        store, generation = GatedStore(), [1]
        scopes = _scopes(store, generation)
        early: list = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_ask, scopes, early)
            await trio.testing.wait_all_tasks_blocked()
            generation[0] = 2  # a block is committed meanwhile: the role is revoked in it
            store.roles = ()
            later: list = []
            nursery.start_soon(_ask, scopes, later)  # a new generation: its own lookup
            await trio.testing.wait_all_tasks_blocked()
            store.release.set()
        assert later[0].kind == rules.ACCOUNT  # read after the block: the role is gone
        after: list = []
        await _ask(scopes, after)
        assert after[0].kind == rules.ACCOUNT  # the early lookup was not cached over it

    trio.run(main)


def test_a_cancelled_lookup_leaves_the_waiters_to_look_up_themselves():
    async def main() -> None:
        store, generation = GatedStore(), [1]
        scopes = _scopes(store, generation)
        answers: list = []
        async with trio.open_nursery() as nursery:
            first = trio.CancelScope()
            nursery.start_soon(_ask_in, scopes, answers, first)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(_ask, scopes, answers)
            await trio.testing.wait_all_tasks_blocked()
            first.cancel()
            await trio.testing.wait_all_tasks_blocked()
            store.release.set()
        assert [p.kind for p in answers] == [rules.INSTITUTION]

    async def _ask_in(scopes: Scopes, out: list, scope: trio.CancelScope) -> None:
        with scope:
            await _ask(scopes, out)

    trio.run(main)


def _block(height: int):
    from node.events import CommittedBlock

    return CommittedBlock(height, b"h" * 32, b"", ())


def test_a_block_forgets_only_the_principals_whose_records_it_wrote():
    async def main() -> None:
        store, bus = GatedStore(), EventBus()
        store.release.set()
        scopes = Scopes(store, generation=lambda: bus.published, changed_since=bus.changed_since)
        answers: list = []
        await _ask(scopes, answers)
        assert store.reads == 2 and answers[-1].kind == rules.INSTITUTION
        bus.publish(_block(1), [account_key(generate_key(b"\x22" * 32).address)])
        await _ask(scopes, answers)
        assert store.reads == 2  # another account changed: no lookup
        store.roles = ()  # the block that revokes the role writes the account record
        bus.publish(_block(2), [account_key(INSTITUTION.address)])
        await _ask(scopes, answers)
        assert store.reads == 4 and answers[-1].kind == rules.ACCOUNT  # from that block on
        bus.publish(_block(3))  # changes not known: everything is looked up again
        await _ask(scopes, answers)
        assert store.reads == 6

    trio.run(main)


def test_changed_since_is_bounded_and_says_when_it_does_not_know():
    bus = EventBus()
    assert bus.changed_since(0) == frozenset()
    for height in range(1, CHANGES_KEPT + 3):
        bus.publish(_block(height), [bytes([height])])
    last = bus.published
    assert bus.changed_since(last) == frozenset()
    assert bus.changed_since(last - 2) == {bytes([last - 1]), bytes([last])}
    assert bus.changed_since(last - CHANGES_KEPT) is not None
    assert bus.changed_since(last - CHANGES_KEPT - 1) is None  # older than it keeps
    assert len(bus._changes) == CHANGES_KEPT
