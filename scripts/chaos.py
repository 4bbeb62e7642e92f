#!/usr/bin/env python3
"""Chaos against a real localnet: faults under load, then every invariant on every node.

    scripts/chaos.py --localnet DIR --duration S [--faults LIST] [--seed N] [--netns]

Makes a four-validator network in DIR (`khazana init`, short timeouts), puts a fault proxy
(`scripts/faultproxy.py`) on loopback in front of every peer port -- each node's config names
the proxy's port for each peer, so every peer link can be cut, delayed or reset one direction
at a time -- starts the nodes and a load generator, then injects faults one after another:
each requested kind at least once, then more rounds until `--duration` seconds have passed.
Each fault is healed before the next, so the network is never asked to survive more than it
promises (f = 1 of 4 down or byzantine, every partition healed):

  kill          SIGKILL one validator, restart it 2 s later
  pause         SIGSTOP one validator for 3 s, then SIGCONT
  restart_all   SIGKILL all four at once, restart all
  partition_1_3 / partition_2_2 / one_way   through the proxy (one_way: one node's outgoing
                traffic is dropped, it still hears the others), 4 s each
  delay         100 ms + up to 150 ms jitter on every link for 5 s
  loss / duplicate / reorder   per-chunk connection resets / closes after delivery / held
                bursts on every link for 5 s (what these mean on an encrypted stream is
                documented in faultproxy.py)
  truncate_wal  SIGKILL one validator, cut its SQLite `-wal` file in half, restart it
  delete_record stop one validator, delete its durable last-signed record, restart it
  full_disk     one validator's data dir on a small tmpfs, filled; it must stop cleanly (root
                only; skipped and reported otherwise)

After each fault it measures recovery: seconds from healing until every running node is past
the highest height seen at the heal; a victim restarted without its record (signing hold)
must also sign again before the next fault, as one fault at a time means. Then it heals everything, stops the load, checks LIVE
(every node at one tip, the chain grows), stops the nodes and checks from their stores:
SAFE (same block hash and app_hash per height on every node, every certificate verifies
against genesis, no validator signed two values for one slot), NO LOSS (every acknowledged
transaction is in every node's store exactly once, at the height it was acknowledged at) and
ROBUST (no node process died that chaos did not kill). The last line on stdout is JSON:

    {"forks": 0, "lost_acked": 0, "max_recovery_s": .., "faults": {kind: count}, ...}

Exit code 0 when every invariant holds, 1 otherwise.

`--netns` runs each node in its own network namespace (tests/node/test_netns.py's topology);
there partitions are blackhole routes and the proxy faults (delay, loss, ...) are not offered.

The load generator (`Load`) is deliberately small: one funded sender (the central bank's
client key issues a chaos cash instrument to itself, amount 1 per tx), transactions pre-signed
per nonce so a re-sent transaction is byte-identical, a window of outstanding nonces broadcast
to whichever node answers, and an acknowledged commit recorded as a `{"hash", "height"}` line
when a node reports the transaction committed. It should later share code with
scripts/bench.py (the benchmark's load generator).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from faultproxy import FaultProxy, Rule  # noqa: E402

from ledger.crypto import address_to_text, read_key_file  # noqa: E402
from ledger.tx import TxBody, sign_tx  # noqa: E402
from node.client.builders import TxBuilder  # noqa: E402
from tests.node.netsupport import (  # noqa: E402
    DOUBLE_SIGN_LOG,
    NAMES,
    Net,
    StoreView,
    check_certificates,
    find_double_signs,
    free_base_port,
    read_store,
    signed_votes,
)

ALL_FAULTS = (
    "kill",
    "partition_1_3",
    "pause",
    "delay",
    "one_way",
    "loss",
    "restart_all",
    "partition_2_2",
    "duplicate",
    "truncate_wal",
    "reorder",
    "delete_record",
    "full_disk",
)
# In namespaces partitions are blackhole routes (1|3 only); the proxy's faults are not there.
NETNS_FAULTS = ("kill", "partition_1_3", "pause", "restart_all", "truncate_wal", "delete_record")
NO_NAMESPACES_EXIT = 3  # --netns on a machine that cannot make namespaces (not root, ...)
RECOVERY_BOUND_S = 60  # LIVE: a healed network must be past its pre-fault tip within this
HOLD_S = 4
CHAOS_INSTRUMENT = "CHAOS"
WINDOW = 16  # outstanding nonces of the load generator
RESEND_S = 3.0
CONSENSUS_RECORD_KEY = "store.consensus_record"  # ledger/store.py _META_CONSENSUS


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------ the network


def point_peers_at_proxy(net: Net, proxy: FaultProxy) -> None:
    """Rewrite every `[[p2p.peers]]` address of every node to the proxy's link port."""
    for name in net.names:
        path = net.root / name / "config.toml"
        out, in_peer, peer = [], False, None
        for line in path.read_text().splitlines():
            stripped = line.strip()
            key, _, value = (part.strip() for part in stripped.partition("="))
            if stripped.startswith("["):
                in_peer, peer = stripped == "[[p2p.peers]]", None
            elif in_peer and key == "name":
                peer = value.strip('"')
            elif in_peer and key == "address":
                assert peer is not None, f"{path}: a peer's address before its name"
                line = f'address = "{proxy.address_for(name, peer)}"'
            out.append(line)
        path.write_text("\n".join(out) + "\n")


def p2p_targets(net: Net) -> dict[str, tuple[str, int]]:
    return {n.name: (n.p2p.host, n.p2p.port) for n in net.network.nodes}


# ------------------------------------------------------------------------ load


@dataclass
class Load:
    """One funded sender issuing 1 unit of CHAOS per transaction; see the module docstring."""

    net: Net
    acked_path: Path
    acked: dict[str, int] = field(default_factory=dict)  # tx hash -> acknowledged height
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.key = read_key_file(self.net.root / "clients" / "central-bank.key")
        self._signed: dict[int, tuple[str, bytes]] = {}
        self._sent_at: dict[int, float] = {}

    def tx(self, nonce: int) -> tuple[str, bytes]:
        """The transaction for `nonce` (signed once: the same bytes every time it is sent)."""
        if nonce not in self._signed:
            if nonce == 0:
                op = TxBuilder.register_instrument(
                    id=CHAOS_INSTRUMENT,
                    kind="cash",
                    name="Chaos cash",
                    currency="PKR",
                    face_value=1,
                    decimals=2,
                    cap=10**15,
                )
            else:
                op = TxBuilder.issue(instrument=CHAOS_INSTRUMENT, to=self.key.address, amount=1)
            body: TxBody = op.body(self.net.chain_id, self.key.address, nonce)
            signed = sign_tx(body, [self.key])
            self._signed[nonce] = (signed.tx_id.hex(), signed.raw)
        return self._signed[nonce]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _live(self) -> list[str]:
        names = [n for n in self.net.names if n in self.net.procs]
        random.shuffle(names)
        return names

    def _run(self) -> None:
        with self.acked_path.open("a") as out:
            while not self._stop.is_set():
                try:
                    self._step(out)
                except (OSError, RuntimeError, KeyError, ValueError):
                    self.errors += 1
                self._stop.wait(0.3)

    def _step(self, out) -> None:
        names = self._live()
        if not names:
            return
        node = names[0]
        try:
            account = self.net.rpc(node, "account", address=address_to_text(self.key.address))
            nonce = account["nonce"]
        except RuntimeError as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
            if error.get("message") != "Not found":
                raise
            nonce = 0  # the chain does not know the sender yet
        # Acknowledge every sent nonce below the chain's: ask a node where it committed.
        for n in sorted(k for k in self._sent_at if k < nonce):
            tx_hash, _ = self.tx(n)
            if tx_hash not in self.acked:
                result = self.net.rpc(node, "tx", hash=tx_hash)
                self.acked[tx_hash] = result["height"]
                out.write(json.dumps({"hash": tx_hash, "height": result["height"]}) + "\n")
                out.flush()
            del self._sent_at[n]
            self._signed.pop(n, None)  # bounded: only the window stays signed
        now = time.monotonic()
        for n in range(nonce, nonce + WINDOW):
            if now - self._sent_at.get(n, -RESEND_S) < RESEND_S:
                continue
            _, raw = self.tx(n)
            try:
                self.net.rpc(node, "broadcast_tx_sync", tx=base64.b64encode(raw).decode())
            except RuntimeError:
                pass  # a nonce gap or a full mempool after a restart: sent again later
            self._sent_at[n] = now


# ------------------------------------------------------------------------ faults


@dataclass
class Chaos:
    net: Net
    proxy: FaultProxy | None
    rng: random.Random
    spaces: object | None = None  # tests.node.test_netns.Namespaces in --netns mode
    faults: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    recoveries: list[float] = field(default_factory=list)
    killed: Counter = field(default_factory=Counter)  # deliberate process ends
    honest_crashes: list[str] = field(default_factory=list)
    unclean_stops: list[str] = field(default_factory=list)  # full disk: stopped, not cleanly
    notes: list[str] = field(default_factory=list)
    tmpfs: list[Path] = field(default_factory=list)

    def tip(self) -> int:
        return max(self.net.height(n) for n in self.net.names)

    def check_processes(self) -> None:
        """ROBUST: a node process that ended without chaos ending it is an honest crash."""
        for name, proc in list(self.net.procs.items()):
            code = proc.poll()
            if code is not None:
                del self.net.procs[name]
                self.honest_crashes.append(f"{name} exited {code}: {self.net.log(name)[-300:]}")
                log(f"HONEST CRASH {name} exit {code}")
                self.net.start(name)  # keep the network going; the run still fails

    def recover(self, since_tip: int, kind: str) -> None:
        """Wait until every running node is past `since_tip`; record the seconds."""
        healed = time.monotonic()
        target = since_tip + 1
        deadline = healed + RECOVERY_BOUND_S
        while time.monotonic() < deadline:
            self.check_processes()
            if all(self.net.height(n) >= target for n in self.net.procs):
                seconds = round(time.monotonic() - healed, 2)
                self.recoveries.append(seconds)
                log(f"{kind}: recovered past {since_tip} in {seconds} s")
                return
            time.sleep(0.2)
        self.recoveries.append(float(RECOVERY_BOUND_S))
        self.notes.append(f"{kind}: not recovered past {since_tip} within {RECOVERY_BOUND_S} s")
        log(self.notes[-1])

    def wait_signing_again(self, victim: str, kind: str) -> None:
        """A victim restarted without its record follows without signing (the signing hold)
        until the network decides past its tip. Until then it is one fault of the f = 1 the
        network tolerates, so the next fault waits for it to sign again (bounded): two held
        validators at once halt four, by design, until an operator restores a record."""
        text = self.net.log(victim)
        held_at = text.rfind("NOT SIGNING")
        if held_at < 0 or "SIGNING AGAIN" in text[held_at:]:
            return
        deadline = time.monotonic() + RECOVERY_BOUND_S
        while time.monotonic() < deadline:
            self.check_processes()
            if "SIGNING AGAIN" in self.net.log(victim)[held_at:]:
                return
            time.sleep(0.2)
        self.notes.append(f"{kind}: {victim} still not signing after {RECOVERY_BOUND_S} s")
        log(self.notes[-1])

    def inject(self, kind: str) -> None:
        names = list(self.net.names)
        victim = self.rng.choice(names)
        tip = self.tip()
        log(f"fault {kind} (victim {victim}) at tip {tip}")
        handler = getattr(self, f"_{kind}")
        if handler(victim) is False:
            self.skipped[kind] += 1
            return
        self.faults[kind] += 1
        self.recover(max(tip, self.tip()), kind)  # past the tip at the heal
        self.wait_signing_again(victim, kind)

    # -- process faults

    def _kill(self, victim: str) -> None:
        self.net.kill(victim)
        self.killed[victim] += 1
        time.sleep(2)
        self.net.start(victim)

    def _pause(self, victim: str) -> None:
        proc = self.net.procs[victim]
        proc.send_signal(signal.SIGSTOP)
        time.sleep(3)
        proc.send_signal(signal.SIGCONT)

    def _restart_all(self, victim: str) -> None:
        for name in list(self.net.procs):
            self.net.kill(name)
            self.killed[name] += 1
        time.sleep(1)
        for name in self.net.names:
            self.net.start(name)

    def _truncate_wal(self, victim: str) -> None:
        before = self.net.height(victim)
        self.net.kill(victim)
        self.killed[victim] += 1
        wal = self.net.root / victim / "data" / "node.db-wal"
        size = wal.stat().st_size if wal.exists() else 0
        if size:
            os.truncate(wal, size // 2)
        self.net.start(victim)
        # A torn -wal loses the blocks of its tail: the node comes back lower and syncs them
        # (and, like a deleted record, may have lost its last-signed record).
        after = self.net.first_height(victim)
        self.notes.append(
            f"truncate_wal: {victim} -wal {size} -> {size // 2} bytes, height {before} -> {after}"
        )

    def _delete_record(self, victim: str) -> None:
        asked = time.monotonic()
        code = self.net.stop(victim)
        stop_s = time.monotonic() - asked
        if stop_s > 5:
            self.notes.append(f"delete_record: {victim} took {stop_s:.1f} s to stop on SIGTERM")
        if code != 0:
            self.honest_crashes.append(f"{victim} stopped with {code} before delete_record")
        db = sqlite3.connect(self.net.root / victim / "data" / "node.db")
        try:
            deleted = db.execute("DELETE FROM meta WHERE key = ?", (CONSENSUS_RECORD_KEY,))
            db.commit()
            count = deleted.rowcount
        finally:
            db.close()
        self.notes.append(f"delete_record: {victim} lost {count} last-signed record(s)")
        self.net.start(victim)

    def _full_disk(self, victim: str) -> bool:
        """Move the victim's data dir onto a small tmpfs, fill it, and expect a clean stop."""
        if os.geteuid() != 0 or shutil.which("mount") is None:
            self.notes.append("full_disk: skipped (needs root to mount a tmpfs)")
            return False
        code = self.net.stop(victim)
        data = self.net.root / victim / "data"
        moved = self.net.root / victim / "data.disk"
        shutil.move(data, moved)
        data.mkdir()
        used = sum(p.stat().st_size for p in moved.iterdir())
        size_kb = used // 1024 + 2048
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(data)],
            capture_output=True,
        )
        if mounted.returncode != 0:
            data.rmdir()
            shutil.move(moved, data)
            self.net.start(victim)
            self.notes.append(f"full_disk: skipped ({mounted.stderr.decode().strip()})")
            return False
        self.tmpfs.append(data)
        for item in moved.iterdir():
            shutil.copy2(item, data / item.name)
        # Leave ~256 KiB so the node starts, then runs out within a few blocks under load.
        free = shutil.disk_usage(data).free
        with (data / "filler").open("wb") as filler:
            filler.write(b"\0" * max(0, free - 256 * 1024))
        self.net.start(victim)
        proc = self.net.procs[victim]
        try:
            code = proc.wait(timeout=45)
            del self.net.procs[victim]
            self.killed[victim] += 1  # ended by the fault on purpose
            clean = code in (0, 1, 2, 74)  # an orderly exit, not a signal or a traceback
            text = self.net.log(victim)[-4000:]
            traceback = "Traceback" in text
            self.notes.append(
                f"full_disk: {victim} stopped by itself, exit {code}"
                + ("" if clean and not traceback else " (NOT clean: see its log)")
            )
            if not clean or traceback:  # it did stop, but not as an operator should see it
                self.unclean_stops.append(f"{victim} full disk: exit {code}, traceback {traceback}")
        except subprocess.TimeoutExpired:
            self.notes.append(f"full_disk: {victim} still running 45 s on a full disk")
        # Free the disk: back onto the real file system (what an operator would do).
        if victim in self.net.procs:
            self.net.stop(victim)
        (data / "filler").unlink()
        shutil.rmtree(moved)
        shutil.copytree(data, moved)
        subprocess.run(["umount", str(data)], capture_output=True)
        self.tmpfs.remove(data)
        data.rmdir()
        shutil.move(moved, data)
        self.net.start(victim)
        return None

    # -- network faults

    def _hold_network(self, apply, heal) -> None:
        apply()
        deadline = time.monotonic() + HOLD_S
        while time.monotonic() < deadline:
            self.check_processes()
            time.sleep(0.2)
        heal()

    def _partition_1_3(self, victim: str) -> None:
        others = [n for n in self.net.names if n != victim]
        if self.spaces is not None:
            index = list(self.net.names).index(victim)
            self._hold_network(
                lambda: self.spaces.partition(index, True),
                lambda: self.spaces.partition(index, False),
            )
            return
        self._hold_network(lambda: self.proxy.partition([victim], others), self.proxy.heal)

    def _partition_2_2(self, victim: str) -> None:
        names = list(self.net.names)
        self.rng.shuffle(names)
        self._hold_network(lambda: self.proxy.partition(names[:2], names[2:]), self.proxy.heal)

    def _one_way(self, victim: str) -> None:
        def apply() -> None:
            for other in self.net.names:
                if other != victim:
                    self.proxy.block(victim, other)

        self._hold_network(apply, self.proxy.heal)

    def _links(self, rule: Rule) -> None:
        self._hold_network(lambda: self.proxy.set_all(rule), self.proxy.heal)

    def _delay(self, victim: str) -> None:
        self._links(Rule(delay_ms=100, jitter_ms=150))

    def _loss(self, victim: str) -> None:
        self._links(Rule(loss=30))

    def _duplicate(self, victim: str) -> None:
        self._links(Rule(duplicate=30))

    def _reorder(self, victim: str) -> None:
        self._links(Rule(jitter_ms=50, reorder=100))


# ------------------------------------------------------------------------ invariants


def count_forks(views: dict[str, StoreView]) -> int:
    """Heights where two nodes hold different (block hash, app_hash)."""
    by_height: dict[int, set[tuple[bytes, bytes]]] = {}
    for view in views.values():
        for entry in view.blocks:
            by_height.setdefault(entry.height, set()).add((entry.block_hash, entry.app_hash))
    return sum(1 for hashes in by_height.values() if len(hashes) > 1)


def lost_acked(net: Net, acked: dict[str, int]) -> tuple[int, list[str]]:
    """Acknowledged transactions not present exactly once at their height, per node."""
    from ledger.genesis import genesis_hash
    from ledger.store import Store

    lost = 0
    problems = []
    for name in net.names:
        store = Store.open(
            net.root / name / "data" / "node.db",
            chain_id=net.genesis["chain_id"],
            genesis_hash=genesis_hash(net.genesis),
        )
        try:
            seen: Counter = Counter()
            where: dict[str, int] = {}
            for height in range(1, (store.blocks.latest_height() or 0) + 1):
                for record in store.blocks.block_txs(height):
                    seen[record.tx_id.hex()] += 1
                    where[record.tx_id.hex()] = height
        finally:
            store.close()
        for tx_hash, height in sorted(acked.items()):
            if seen[tx_hash] != 1 or where.get(tx_hash) != height:
                lost += 1
                problems.append(f"{name}: {tx_hash} x{seen[tx_hash]} at {where.get(tx_hash)}")
    return lost, problems[:10]


# ------------------------------------------------------------------------ main


def run(args: argparse.Namespace) -> dict:
    root = Path(args.localnet).resolve()
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"--localnet {root} exists and is not empty; chaos makes its own network")
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    random.seed(args.seed)
    spaces = None
    proxy = None
    if args.netns:
        from tests.node.test_netns import NamespacedNet, Namespaces

        spaces = Namespaces(len(NAMES))
        try:
            spaces.create()
        except (subprocess.CalledProcessError, OSError) as exc:
            spaces.remove()
            detail = getattr(exc, "stderr", b"") or str(exc).encode()
            print(f"cannot create network namespaces: {detail.decode().strip()}", file=sys.stderr)
            raise SystemExit(NO_NAMESPACES_EXIT) from None
        net: Net = NamespacedNet(root, free_base_port(), spaces)
        allowed = NETNS_FAULTS
    else:
        net = Net(root, free_base_port(), chain_id="khazana-chaos")
        proxy = FaultProxy(p2p_targets(net), seed=args.seed).start()
        point_peers_at_proxy(net, proxy)
        allowed = ALL_FAULTS
    kinds = [k for k in (args.faults.split(",") if args.faults else allowed) if k]
    unknown = sorted(set(kinds) - set(allowed))
    if unknown:
        raise SystemExit(f"unknown or unavailable faults {unknown}; choose from {allowed}")
    chaos = Chaos(net, proxy, rng, spaces)
    load = Load(net, root / "acked.jsonl")
    summary: dict = {}
    started = time.monotonic()
    try:
        for name in net.names:
            net.start(name)
        net.wait(lambda: all(net.height(n) >= 2 for n in net.names), "first blocks", 60)
        load.start()
        index = 0
        # Every requested kind at least once, then more rounds until the duration is spent.
        while index < len(kinds) or time.monotonic() - started < args.duration:
            chaos.inject(kinds[index % len(kinds)])
            index += 1
            if index % len(kinds) == 0:
                rng.shuffle(kinds)
            time.sleep(1)
        # Heal everything, let the load finish its window, then LIVE at one tip.
        if proxy is not None:
            proxy.heal()
        for name in net.names:
            if name not in net.procs:
                net.start(name)
        tip = chaos.tip()
        chaos.recover(tip, "final heal")
        load.stop()
        chaos.check_processes()
        tip = chaos.tip()
        net.wait(lambda: all(net.height(n) >= tip + 2 for n in net.names), "growth", 60)
        # LIVE: all four past the healed tip and holding one block there (checked while they
        # run: they are then stopped one by one, so their final heights may differ by a few).
        summary["live"] = len({net.hashes(n, tip, tip)[0] for n in net.names}) == 1
        chaos.check_processes()
        for name in list(net.procs):
            code = net.stop(name)
            if code != 0:
                chaos.honest_crashes.append(f"{name} exited {code} on SIGTERM")
    except AssertionError as exc:  # a wait that timed out: LIVE failed
        chaos.notes.append(f"LIVE: {str(exc)[:600]}")
        summary["live"] = False
    finally:
        load.stop()
        net.stop_all()
        if proxy is not None:
            proxy.close()
        for mount in chaos.tmpfs:
            subprocess.run(["umount", str(mount)], capture_output=True)
        if spaces is not None:
            spaces.remove()

    views = {name: read_store(root / name / "data" / "node.db", net.genesis) for name in net.names}
    forks = count_forks(views)
    bad_certificates = 0
    for view in views.values():
        try:
            check_certificates(view, net.genesis)
        except AssertionError:
            bad_certificates += 1
    records = [v.record for v in views.values() if v.record is not None]
    double_signs = len(find_double_signs(signed_votes(views.values(), records), net.genesis))
    double_sign_logs = sum(DOUBLE_SIGN_LOG in net.log(n) for n in net.names)
    lost, problems = lost_acked(net, load.acked)
    heights = {name: view.height for name, view in views.items()}
    summary.setdefault("live", False)
    summary.update(
        {
            "duration_s": round(time.monotonic() - started, 1),
            "netns": bool(args.netns),
            "heights": heights,
            "acked": len(load.acked),
            "load_errors": load.errors,
            "bad_certificates": bad_certificates,
            "double_signs": double_signs,
            "double_sign_logs": double_sign_logs,
            "lost_problems": problems,
            "faults": dict(sorted(chaos.faults.items())),
            "skipped": dict(sorted(chaos.skipped.items())),
            "killed": dict(sorted(chaos.killed.items())),
            "honest_crashes": len(chaos.honest_crashes),
            "crash_details": chaos.honest_crashes[:5],
            "unclean_stops": chaos.unclean_stops,
            "recoveries_s": chaos.recoveries,
            "notes": chaos.notes,
            "forks": forks,
            "lost_acked": lost,
            "max_recovery_s": max(chaos.recoveries, default=0.0),
        }
    )
    if proxy is not None:
        summary["proxy"] = {"chunks": proxy.chunks, "resets": proxy.resets}
    summary["ok"] = (
        forks == 0
        and lost == 0
        and bad_certificates == 0
        and double_signs == 0
        and not chaos.honest_crashes
        and not chaos.unclean_stops
        and summary["live"]
        and summary["acked"] > 0
        and summary["max_recovery_s"] < RECOVERY_BOUND_S
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--localnet", required=True, help="an empty or new directory")
    parser.add_argument("--duration", type=int, default=120, help="seconds of faults")
    parser.add_argument("--faults", default="", help=f"comma-separated, from {ALL_FAULTS}")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--netns", action="store_true", help="each node in its own namespace")
    args = parser.parse_args(argv)
    summary = run(args)
    print(json.dumps(summary, sort_keys=True))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
