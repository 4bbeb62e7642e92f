"""node.app: links to a validator that a committed change removed are closed.

The peer allow-list is asked only at the handshake; `_drop_removed_peers` watches the
driver's commits and asks the peer manager to close the links the list no longer admits
whenever a commit took keys off it. The manager's side (which links close, redials refused)
is tested in tests/node/test_p2p_manager.py; this is the wiring between the two.
"""

from __future__ import annotations

import trio
import trio.testing

from node.app import _drop_removed_peers


class FakeDriver:
    """The two things `_drop_removed_peers` uses: the allow-list and the commit event."""

    def __init__(self, allowed: set[bytes]) -> None:
        self.allowed = frozenset(allowed)
        self.committed = trio.Event()

    def allowed_keys(self) -> frozenset[bytes]:
        return self.allowed

    def commit(self, allowed: set[bytes]) -> None:
        # As Driver._commit: the new sets are learnt, then the event fires and is replaced.
        self.allowed = frozenset(allowed)
        self.committed.set()
        self.committed = trio.Event()


class FakeManager:
    def __init__(self) -> None:
        self.drops = 0

    def drop_disallowed(self) -> int:
        self.drops += 1
        return 0


def test_links_are_dropped_only_after_a_commit_that_takes_keys_off_the_allow_list():
    async def main() -> None:
        driver, manager = FakeDriver({b"a", b"b", b"c"}), FakeManager()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drop_removed_peers, driver, manager)
            await trio.testing.wait_all_tasks_blocked()
            driver.commit({b"a", b"b", b"c"})  # an ordinary block
            await trio.testing.wait_all_tasks_blocked()
            assert manager.drops == 0
            driver.commit({b"a", b"b", b"c", b"d"})  # a validator added: nobody to drop
            await trio.testing.wait_all_tasks_blocked()
            assert manager.drops == 0
            driver.commit({b"a", b"b", b"d"})  # c removed
            await trio.testing.wait_all_tasks_blocked()
            assert manager.drops == 1
            driver.commit({b"a", b"b", b"d"})  # the next block: already dropped
            await trio.testing.wait_all_tasks_blocked()
            assert manager.drops == 1
            # Two commits before the task runs again: a key that left in either counts.
            driver.commit({b"a", b"b"})
            driver.commit({b"a", b"b", b"e"})
            await trio.testing.wait_all_tasks_blocked()
            assert manager.drops == 2
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
