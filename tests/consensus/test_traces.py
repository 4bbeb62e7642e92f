"""Scripted interaction tests in the style of etcd-raft's `testdata/`.

Each file in `testdata/` is a list of blocks:

    # optional comments
    command args...
    ----
    the expected output (one line per effect), then a blank line

The driver below runs every command against an in-process network of cores and compares
what it prints with the file. A mismatch fails with a diff; `REWRITE_TRACES=1` rewrites the
files from the actual output (review the diff before committing!).

Commands:
    net powers=1,1,1,1 [retransmit=MS]   a network of validators n1..nN (must come first)
    start                                 start every core
    propose NODE VALUE                    answer that node's pending need_value
    deliver [from=N] [to=N] [type=T] [count=K]   deliver pending messages (FIFO) that match
    drop [from=N] [to=N] [type=T]         lose pending messages that match
    timeout NODE STEP                     fire the node's latest timeout of STEP
    crash NODE                            the node loses memory; messages to it are lost
    restart NODE                          a new core from the node's last persisted state
    sync NODE HEIGHT                      block sync up to HEIGHT from a node that has it
    stabilize                             deliver until nothing is pending (prints effects)
    status                                height/round/step/lock/valid of every node
Types: proposal, prevote, precommit, commit.
"""

from __future__ import annotations

import difflib
import os
from collections import deque
from pathlib import Path

import pytest

from consensus.core import Core, CoreConfig
from consensus.types import Commit, Proposal, Ready, Step, Vote, VoteType
from tests.consensus.harness import CHAIN, address, hooks_for, valset, value_id

TESTDATA = Path(__file__).parent / "testdata"


class TraceNet:
    def __init__(self, powers: list[int], retransmit: int) -> None:
        self.vs = valset(powers)
        self.config = CoreConfig(
            timeout_propose_ms=300,
            timeout_propose_delta_ms=100,
            timeout_prevote_ms=100,
            timeout_prevote_delta_ms=50,
            timeout_precommit_ms=100,
            timeout_precommit_delta_ms=50,
            retransmit_ms=retransmit,
        )
        self.names = {address(i + 1): f"n{i + 1}" for i in range(len(powers))}
        self.by_name = {n: a for a, n in self.names.items()}
        self.cores: dict[bytes, Core | None] = {}
        self.durable: dict[bytes, object] = {}
        self.decided: dict[bytes, list] = {a: [] for a in self.names}
        self.timeouts: dict[bytes, list] = {a: [] for a in self.names}
        self.need: dict[bytes, tuple | None] = {a: None for a in self.names}
        self.wire: deque = deque()
        self.value_names: dict[bytes, str] = {}
        for a in self.names:
            self.cores[a] = self._new_core(a)

    def _new_core(self, a: bytes) -> Core:
        decided = self.decided[a]
        return Core(
            CHAIN,
            a,
            lambda h: self.vs,
            hooks_for(a),
            self.config,
            durable=self.durable.get(a),
            start_height=len(decided) + 1,
            last_commit=decided[-1].commit if decided else None,
        )

    # -------------------------------------------------------------- rendering

    def v(self, vid: bytes | None) -> str:
        if vid is None:
            return "nil"
        return self.value_names.get(vid, vid.hex()[:8])

    def msg(self, m) -> str:
        if isinstance(m, Proposal):
            pol = f" pol={m.pol_round}" if m.pol_round >= 0 else ""
            return f"Proposal h{m.height} r{m.round} {self.v(value_id(m.value))}{pol}"
        if isinstance(m, Vote):
            kind = "Prevote" if m.vote_type is VoteType.PREVOTE else "Precommit"
            return f"{kind}({self.names[m.validator]}) h{m.height} r{m.round} {self.v(m.value_id)}"
        signers = ",".join(self.names[a] for a, _ in m.signatures)
        return f"Commit h{m.height} r{m.round} {self.v(m.value_id)} [{signers}]"

    def apply(self, a: bytes, ready: Ready, out: list[str]) -> None:
        n = self.names[a]
        if ready.persist is not None:
            p = ready.persist
            self.durable[a] = p
            out.append(
                f"{n} persist h{p.height} r{p.round} {p.step.name} "
                f"locked={p.locked_round} valid={p.valid_round}"
            )
        for o in ready.messages:
            to = "all" if o.to is None else self.names[o.to]
            out.append(f"{n} -> {to} {self.msg(o.message)}")
            targets = [o.to] if o.to is not None else [b for b in self.names if b != a]
            for dst in targets:
                self.wire.append((a, dst, o.message))
        for t in ready.timeouts:
            self.timeouts[a].append(t)
            out.append(f"{n} timeout {t.step.name} h{t.height} r{t.round} {t.duration_ms}ms")
        for e in ready.evidence:
            out.append(f"{n} EVIDENCE {self.msg(e.vote_a)} / {self.msg(e.vote_b)}")
        if ready.sync_needed is not None:
            out.append(f"{n} sync_needed {ready.sync_needed}")
        if ready.need_value is not None:
            self.need[a] = ready.need_value
            out.append(f"{n} need_value h{ready.need_value[0]} r{ready.need_value[1]}")
        for d in ready.decisions:
            self.decided[a].append(d)
            out.append(f"{n} DECIDE h{d.height} r{d.round} {self.v(d.value_id)}")
        if ready.decisions:
            self.apply(a, self.cores[a].advance(), out)

    # -------------------------------------------------------------- commands

    def matches(self, item, args: dict) -> bool:
        src, dst, m = item
        kind = (
            "proposal"
            if isinstance(m, Proposal)
            else "commit"
            if isinstance(m, Commit)
            else m.vote_type.name.lower()
        )
        return (
            args.get("from", self.names[src]) == self.names[src]
            and args.get("to", self.names[dst]) == self.names[dst]
            and args.get("type", kind) == kind
        )

    def deliver_one(self, item, out: list[str], quiet: bool) -> None:
        src, dst, m = item
        core = self.cores[dst]
        if core is None:
            return
        if not quiet:
            out.append(f"{self.names[dst]} <- {self.names[src]} {self.msg(m)}")
        effects: list[str] = []
        self.apply(dst, core.step(m), effects)
        if quiet:
            effects = [e for e in effects if any(k in e for k in ("DECIDE", "EVIDENCE", "sync"))]
        out.extend("  " + e for e in effects)

    def run(self, cmd: str, args: list[str]) -> list[str]:
        kv = dict(x.split("=", 1) for x in args if "=" in x)
        pos = [x for x in args if "=" not in x]
        out: list[str] = []
        if cmd == "start":
            for a, core in self.cores.items():
                self.apply(a, core.start(), out)
        elif cmd == "propose":
            a = self.by_name[pos[0]]
            value = pos[1].encode()
            self.value_names[value_id(value)] = pos[1]
            h, r = self.need[a]
            self.need[a] = None
            self.apply(a, self.cores[a].propose_value(h, r, value), out)
        elif cmd in ("deliver", "drop"):
            limit = int(kv.get("count", 10**9))
            pending, kept = list(self.wire), deque()
            self.wire.clear()
            chosen = []
            for item in pending:
                if len(chosen) < limit and self.matches(item, kv):
                    chosen.append(item)
                else:
                    kept.append(item)
            self.wire.extend(kept)
            if cmd == "drop":
                out.append(f"dropped {len(chosen)}")
            for item in chosen if cmd == "deliver" else ():
                self.deliver_one(item, out, quiet=False)
        elif cmd == "timeout":
            a = self.by_name[pos[0]]
            step = Step[pos[1].upper()]
            pending = [t for t in self.timeouts[a] if t.step is step]
            if not pending:
                return ["no such timeout"]
            t = pending[-1]
            self.timeouts[a].remove(t)
            out.append(f"{pos[0]} fires {t.step.name} h{t.height} r{t.round}")
            self.apply(a, self.cores[a].on_timeout(t), out)
        elif cmd == "crash":
            a = self.by_name[pos[0]]
            self.cores[a] = None
            self.timeouts[a] = []
            self.need[a] = None
            self.wire = deque(i for i in self.wire if i[1] != a)
            out.append(f"{pos[0]} crashed")
        elif cmd == "restart":
            a = self.by_name[pos[0]]
            self.cores[a] = self._new_core(a)
            self.apply(a, self.cores[a].start(), out)
        elif cmd == "sync":
            a, height = self.by_name[pos[0]], int(pos[1])
            source = next(d for d in self.decided.values() if len(d) >= height)
            mine = self.decided[a]
            for d in source[len(mine) : height]:
                mine.append(d)
                out.append(f"{pos[0]} synced h{d.height} {self.v(d.value_id)}")
            self.apply(a, self.cores[a].on_synced(height, source[height - 1].commit), out)
        elif cmd == "stabilize":
            n = 0
            while self.wire and n < 10_000:
                self.deliver_one(self.wire.popleft(), out, quiet=True)
                n += 1
            out.insert(0, f"delivered {n}")
        elif cmd == "status":
            for a, core in self.cores.items():
                if core is None:
                    out.append(f"{self.names[a]} down")
                    continue
                out.append(
                    f"{self.names[a]} h{core.height} r{core.round} {core.current_step.name} "
                    f"locked={core.locked_round} valid={core.valid_round} "
                    f"decided={[self.v(d.value_id) for d in self.decided[a]]}"
                )
        else:
            raise ValueError(f"unknown command {cmd!r}")
        return out


def parse(text: str) -> list[tuple[list[str], str, list[str]]]:
    """Blocks of (comment lines, command line, expected output lines)."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        comments = []
        while i < len(lines) and (lines[i].startswith("#") or not lines[i].strip()):
            if lines[i].startswith("#"):
                comments.append(lines[i])
            i += 1
        if i >= len(lines):
            break
        command = lines[i]
        i += 1
        assert i < len(lines) and lines[i] == "----", f"expected ---- after {command!r}"
        i += 1
        expected = []
        while i < len(lines) and lines[i].strip():
            expected.append(lines[i])
            i += 1
        blocks.append((comments, command, expected))
    return blocks


def run_trace(text: str) -> str:
    net = None
    rendered = []
    for comments, command, _ in parse(text):
        cmd, *args = command.split()
        if cmd == "net":
            kv = dict(x.split("=", 1) for x in args)
            powers = [int(p) for p in kv["powers"].split(",")]
            net = TraceNet(powers, int(kv.get("retransmit", 1000)))
            output = ["ok"]
        else:
            output = net.run(cmd, args) or ["(nothing)"]
        rendered.append("\n".join([*comments, command, "----", *output]))
    return "\n\n".join(rendered) + "\n"


TRACES = sorted(TESTDATA.glob("*.txt"))


@pytest.mark.parametrize("path", TRACES, ids=[p.stem for p in TRACES])
def test_trace(path: Path) -> None:
    text = path.read_text()
    actual = run_trace(text)
    if os.environ.get("REWRITE_TRACES"):
        path.write_text(actual)
        return
    if actual != text:
        diff = difflib.unified_diff(
            text.splitlines(), actual.splitlines(), "expected", "actual", lineterm=""
        )
        pytest.fail(f"{path.name} differs (REWRITE_TRACES=1 to accept):\n" + "\n".join(diff))


def test_trace_driver_detects_a_mismatch():
    # Negative control: a wrong expectation must not pass.
    text = "net powers=1,1,1,1\n----\nok\n\nstatus\n----\nn1 h9 r9 PROPOSE\n"
    assert run_trace(text) != text
