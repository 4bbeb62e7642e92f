"""The node runtime: `run_node(config)` assembles chain, store, peers, mempool, driver, RPC
and metrics in one trio nursery and runs until SIGTERM/SIGINT.

Order of start-up: open the chain (genesis on first use, else reload and check the state
root), restore the consensus record (the double-sign guard), start the peer manager
(listening and dialing), then the driver (which joins consensus or syncs first), then RPC
and metrics. Shutdown on SIGTERM/SIGINT: the driver is told to stop, so the block it may be
committing finishes (a started store write is never abandoned), then the nursery is
cancelled, which closes every peer link, and the database is closed. Exit status 0.

With `[signer]` the validator key is the remote signer's (node/signer_client.py): the node
key is then only the P2P identity, and the driver signs through a `RemoteValidatorKey`.

Validator-set changes need no restart: the driver signs with the node key at the heights
whose set names it (`_signing_identity`), and the peer allow-list asks the driver for the
keys of the sets of the next two heights on every handshake (`is_allowed`); after a commit
that takes keys off that list, the links it no longer admits are closed
(`_drop_removed_peers`), so a removed validator stops receiving the chain's traffic at once.

A store that cannot write (a full disk, an I/O error) stops the node: the failed SQLite
transaction was rolled back, so nothing is half-written; `run_node` logs one CRITICAL line
naming the store's error and returns `EXIT_STORAGE_FAILED` (74, EX_IOERR) instead of letting
a traceback out. The other nodes go on; free the space and start it again (it syncs).

A chain that activates a protocol version this code does not run (ledger/protocol.py) stops the
node before that block, with one CRITICAL line naming the version and the height, and
`EXIT_PROTOCOL_TOO_NEW` (76, EX_PROTOCOL): install a release that runs it and start again.

`khazana start` (node/cli.py) has already checked config, genesis, key and database and
holds the single-instance lock on the home folder when it calls `run_node`.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import signal
import sqlite3
import time

import trio

from consensus.types import DurableState
from ledger.chain import Chain
from ledger.crypto import read_key_file
from ledger.protocol import UnsupportedProtocol
from ledger.store import AsyncStore, StoreError
from node.api import NodeApi, NodeInfo
from node.byzantine import from_env as byzantine_from_env
from node.config import NodeConfig
from node.driver import Driver, failpoints_from_env
from node.driver_parts import DriverConfig, DriverOptions, DriverParts
from node.events import EventBus
from node.home import load_genesis
from node.mempool import Mempool, MempoolLimits
from node.metrics import Metrics, serve_metrics
from node.p2p import PeerAddress, PeerManager, PeerManagerConfig
from node.rpc.app import serve_rpc
from node.signer_client import RemoteValidatorKey, SignerConnection, SignerLink
from node.store_lanes import StoreLanes

log = logging.getLogger(__name__)

EXIT_STORAGE_FAILED = 74  # EX_IOERR (sysexits.h): the store could not write; see the docstring
EXIT_PROTOCOL_TOO_NEW = 76  # EX_PROTOCOL: the chain runs a protocol version this code does not


def wall_clock_ms() -> int:
    """Block times: the proposer's wall clock (the Chain keeps them strictly increasing)."""
    return time.time_ns() // 1_000_000


def driver_config(config: NodeConfig) -> DriverConfig:
    consensus = config.consensus
    core = consensus.core
    # The proposer may hold `need_value` for up to a heartbeat while the mempool is empty;
    # the others must not give up on it meanwhile, so their propose timeout covers it.
    # The same holds for the minimum block interval.
    hold_ms = max(consensus.heartbeat_ms, consensus.min_block_interval_ms)
    if core.timeout_propose_ms <= hold_ms:
        core = dataclasses.replace(core, timeout_propose_ms=hold_ms + core.timeout_propose_ms)
    return DriverConfig(
        core=core,
        max_block_txs=consensus.block_max_txs,
        max_block_bytes=consensus.block_max_bytes,
        heartbeat_ms=consensus.heartbeat_ms,
        min_block_interval_ms=consensus.min_block_interval_ms,
        sync_max_bytes=min(3 * 1024 * 1024, config.p2p.max_message_bytes - 65536),
    )


def peer_manager_config(config: NodeConfig, genesis: dict) -> PeerManagerConfig:
    """The `[p2p]` section as the peer manager's config; the genesis validators and the
    configured peers are its reserved keys (never refused for want of an inbound place)."""
    p2p = config.p2p
    genesis_keys = {bytes.fromhex(v["public_key"]) for v in genesis["validators"]}
    return PeerManagerConfig(
        chain_id=genesis["chain_id"],
        dial=tuple(PeerAddress(peer.address.host, peer.address.port) for peer in p2p.peers),
        max_message_size=p2p.max_message_bytes,
        send_queue_size=p2p.send_queue_size,
        handshake_timeout_ms=p2p.handshake_timeout_ms,
        first_message_timeout_ms=p2p.first_message_timeout_ms,
        frame_timeout_ms=p2p.frame_timeout_ms,
        connect_timeout_ms=p2p.connect_timeout_ms,
        backoff_base_ms=p2p.backoff_base_ms,
        backoff_cap_ms=p2p.backoff_cap_ms,
        max_pending_handshakes=p2p.max_pending_handshakes,
        reserved_pending_handshakes=p2p.reserved_pending_handshakes,
        max_pending_per_ip=p2p.max_pending_per_ip,
        max_inbound_peers=p2p.max_inbound_peers,
        max_inbound_per_ip=p2p.max_inbound_per_ip,
        allow_ips=p2p.allow_ips,
        # Genesis validators and configured peers: a stranger can never take their place.
        reserved_keys=frozenset(genesis_keys | {peer.pub_key for peer in p2p.peers}),
    )


async def run_node(config: NodeConfig) -> int:
    genesis = load_genesis(config.genesis_path)
    key = read_key_file(config.node_key_path)
    config.data_path.mkdir(parents=True, exist_ok=True)
    # One worker-thread slot for the store; the driver's calls go before RPC reads.
    lanes = StoreLanes()
    run_sync = lanes.run_write
    chain = await run_sync(lambda: Chain.open(config.db_path, genesis))
    link = SignerLink.from_config(config) if config.is_validator else None
    signer = None if link is None else SignerConnection(link, key, genesis["chain_id"])
    try:
        if signer is not None:
            signer.start()  # its own thread: dialling and handshakes never block this loop
        return await _run(config, genesis, key, chain, lanes, signer)
    finally:
        if signer is not None:
            signer.close()
        closing = trio.current_time()
        await run_sync(chain.close)
        log.info("%s: database closed in %.2f s", config.name, trio.current_time() - closing)
        log.info("%s: stopped at height %d", config.name, chain.height)


async def _run(
    config: NodeConfig,
    genesis: dict,
    key,
    chain: Chain,
    lanes: StoreLanes,
    signer: SignerConnection | None = None,
) -> int:
    store = AsyncStore(chain.store, lanes.run_write, lanes.run_read)
    record = await store.load_consensus_record()
    durable = DurableState.from_bytes(record) if record else None
    genesis_keys = {bytes.fromhex(v["public_key"]) for v in genesis["validators"]}
    static_allowed = set(genesis_keys)
    static_allowed |= set(config.p2p.observers)
    static_allowed |= {peer.pub_key for peer in config.p2p.peers}
    driver_ref: list[Driver] = []

    def is_allowed(pub_key: bytes) -> bool:
        # Genesis validators (one removed by a change stays allowed, as an observer would
        # be), configured observers and peers, and the validators of the sets of the next two
        # heights (a validator added by a committed change; one added and later removed
        # is refused again once its last height is committed, unless configured).
        return pub_key in static_allowed or (
            bool(driver_ref) and pub_key in driver_ref[0].allowed_keys()
        )

    manager = PeerManager(
        peer_manager_config(config, genesis),
        key,
        is_allowed,
        rng=random.Random(key.public_key),
    )
    metrics = Metrics()
    if signer is not None:
        # The validator key is the signer's; `key` is only this node's P2P identity.
        identity = RemoteValidatorKey(
            signer.link.validator_key, signer.call, name=config.name, metrics=metrics
        )
    else:
        identity = _signing_identity(config, key, genesis_keys)
    mempool = Mempool(
        MempoolLimits.from_config(config.mempool), genesis["chain_id"], metrics=metrics
    )
    driver = Driver(
        DriverParts(chain, store, manager, mempool, wall_clock_ms),
        driver_config(config),
        identity=identity,
        durable=durable,
        options=DriverOptions(
            name=config.name,
            failpoints=failpoints_from_env(),
            metrics=metrics,
            # WebSocket subscribers: one per connection, so the bus cap is the connection cap.
            events=EventBus(max_subscribers=getattr(config.rpc, "ws_max_connections", 64)),
            byzantine=byzantine_from_env(
                config.home,
                genesis["chain_id"],
                key.sign if config.is_validator and signer is None else None,
            ),
        ),
    )
    driver_ref.append(driver)
    api = NodeApi(
        info=NodeInfo(name=config.name, role=config.role, node_key=key.public_key),
        genesis=genesis,
        driver=driver,
        store=store,
        peers=manager.peers,
    )
    listen = config.p2p.listen
    listeners = await trio.open_tcp_listeners(listen.port, host=listen.host or None)
    failures: list[Exception] = []
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(manager.run, listeners)
            driver_done = trio.Event()

            async def run_driver() -> None:
                try:
                    failure = await run_driver_until_store_fails(driver)
                finally:
                    driver_done.set()
                if failure is not None:
                    failures.append(failure)
                    nursery.cancel_scope.cancel()

            nursery.start_soon(run_driver)
            await nursery.start(serve_rpc, api, config, metrics)
            if config.metrics.listen is not None:
                await nursery.start(serve_metrics, metrics, config.metrics.listen)
            nursery.start_soon(_peer_gauge, manager, metrics)
            nursery.start_soon(_log_waiting_for_peers, api, driver, config)
            nursery.start_soon(_drop_removed_peers, driver, manager)
            log.info(
                "%s: running (%s) at height %d, p2p %s",
                config.name,
                config.role,
                chain.height,
                listen,
            )
            async for signum in signals:
                log.info(
                    "%s: signal %d: finishing the current commit and stopping", config.name, signum
                )
                driver.stop()
                asked = trio.current_time()
                with trio.move_on_after(DRIVER_STOP_WAIT_S):
                    await driver_done.wait()
                # A slow stop is named in the log (what the harnesses' SIGKILL would hide).
                log.info(
                    "%s: driver %s after %.2f s; closing links and listeners",
                    config.name,
                    "stopped" if driver_done.is_set() else "still busy, cancelled",
                    trio.current_time() - asked,
                )
                nursery.cancel_scope.cancel()
                break
    if failures and isinstance(failures[0], UnsupportedProtocol):
        log.critical("%s: stopping at height %d: %s", config.name, chain.height, failures[0])
        return EXIT_PROTOCOL_TOO_NEW
    if failures:
        log.critical(
            "%s: stopping at height %d: the store cannot write (%s); the failed write was "
            "rolled back, nothing is half-written: free disk space and start the node again",
            config.name,
            chain.height,
            failures[0],
        )
        return EXIT_STORAGE_FAILED
    return 0


# How long SIGTERM waits for the driver to finish the item it is on (a block commit, a sync
# batch) before cancelling everything; process supervisors should allow more than this.
DRIVER_STOP_WAIT_S = 10


async def _drop_removed_peers(driver: Driver, manager: PeerManager) -> None:
    """After each commit that takes keys off the driver's allow-list (a validator removed
    by a committed change), close the links the allow-list no longer admits: the list is
    asked only at the handshake. Genesis validators, observers and configured peers stay
    allowed (see `is_allowed`), so only a validator that joined by a change is dropped."""
    allowed = driver.allowed_keys()
    while True:
        await driver.committed.wait()
        current = driver.allowed_keys()
        if allowed - current:
            manager.drop_disallowed()
        allowed = current


async def run_driver_until_store_fails(driver: Driver) -> Exception | None:
    """Run the driver; a store write that fails (StoreError, or a raw sqlite3.Error from a
    path the store does not wrap) or a block of a protocol version this code does not run
    ends it and is returned, anything else propagates."""
    failure: Exception | None = None
    try:
        await driver.run()
    except* (StoreError, sqlite3.Error, UnsupportedProtocol) as group:
        failure = _first_leaf(group)
    return failure


def _first_leaf(group: BaseExceptionGroup) -> Exception:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _signing_identity(config: NodeConfig, key, genesis_keys: set[bytes]):
    """The key the driver signs with while the validator set names it (docs/NODE.md,
    "Validator-set changes"): a validator's, and an observer's too, so an observer whose key
    the institutions add to the set starts validating at the height the change takes effect.
    An observer holding a genesis validator's key never signs: that key belongs to a
    validator node, and two nodes signing with one key would double-sign."""
    if config.is_validator or key.public_key not in genesis_keys:
        return key
    log.warning("%s: observer with a genesis validator's key: it will never sign", config.name)
    return None


PEER_WAIT_LOG_S = 30  # how often a node with no peer says so again


async def _log_waiting_for_peers(api: NodeApi, driver: Driver, config: NodeConfig) -> None:
    """While the node has no peer and cannot make blocks alone, say so in the log (at start,
    then every `PEER_WAIT_LOG_S`), with where it looks for them, and say when one connects: a
    lone `khazana start` of a network of several validators must not sit silently at
    height 0."""
    waited_s = 0
    waiting = False
    while True:
        if api.waiting_for_peers():
            if not waiting or waited_s >= PEER_WAIT_LOG_S:
                configured = (
                    ", ".join(f"{peer.name} {peer.address}" for peer in config.p2p.peers) or "none"
                )
                log.warning(
                    "%s: waiting for peers at height %d: no peer connected, and blocks need "
                    "validators holding more than 2/3 of the voting power (start the other "
                    "nodes; [p2p] peers in config.toml: %s)",
                    config.name,
                    driver.height,
                    configured,
                )
                waited_s = 0
            waiting = True
        elif waiting:
            log.info("%s: connected to %d peer(s)", config.name, len(api.peers()))
            waiting = False
        await trio.sleep(1)
        waited_s += 1


async def _peer_gauge(manager: PeerManager, metrics: Metrics) -> None:
    while True:
        metrics.set_peers(len(manager.peers()))
        metrics.set_p2p_inbound(manager.refusals(), manager.pending_handshakes())
        await trio.sleep(1)
