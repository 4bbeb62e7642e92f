"""Who may hold an inbound connection on the P2P port: the defence against strangers who
open sockets and sit on them.

What this module owns (sans-IO: no sockets, no clock; the manager calls it synchronously,
so every check and its update are one atomic step under trio):

* the IP allowlist (`allow_ips`, CIDR networks; empty: every address), asked before any
  handshake work;
* the table of *pending* inbound connections (accepted, handshake not finished) and its
  budgets: a connection from the IP of a configured peer (a *peer IP*) draws on the
  `reserved_pending` pool, every other connection on the `max_pending` pool, and one IP
  holds at most `max_pending_per_ip` pending connections in all;
* eviction: a new connection is never turned away because a budget is full. It takes the
  place of a pending connection of the same IP (that IP's cap) or of the same pool (the
  pool's cap): the one that has not yet sent its first handshake message, oldest first,
  else the oldest. An honest node sends its first message the moment it connects and
  finishes in a few round trips, so a silent socket or a stalled half-handshake is what
  goes. Strangers from other IPs can never touch the reserved pool;
* the caps on *established* inbound links of keys that are neither genesis validators nor
  configured peers (`max_inbound`, `max_inbound_per_ip`): a reserved key is always
  admitted (one link per key, and the reserved set is small and fixed);
* the counts of refusals by reason, which the node exports as metrics.

Peer IPs are what we can know before a handshake, when the remote's key is not yet known:
the IP literals of the configured dial addresses, the addresses our dials actually reached
(names resolved), and the IPs from which a reserved key has completed a handshake. Each is
kept per source (one per dial address, one per reserved key), so the set stays bounded.
On a single host (a local testnet) every node shares 127.0.0.1 with any local attacker;
then the eviction order, not the pool, is what lets a validator through.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

import trio

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Reasons an inbound connection ended before it became a peer link (the metric's label).
IP_NOT_ALLOWED = "ip_not_allowed"  # source address outside `allow_ips`
EVICTED_PER_IP = "evicted_per_ip"  # made room for a newer connection from the same IP
EVICTED_POOL_FULL = "evicted_pool_full"  # made room for a newer connection in the same pool
FIRST_MESSAGE_TIMEOUT = "first_message_timeout"  # connected, never sent a handshake message
HANDSHAKE_TIMEOUT = "handshake_timeout"  # started the handshake, did not finish in time
HANDSHAKE_FAILED = "handshake_failed"  # bad bytes, bad signature, wrong chain
UNKNOWN_KEY = "unknown_key"  # a key the node does not accept (not in genesis, banned)
INBOUND_FULL = "inbound_full"  # authenticated, but the non-reserved inbound links are full
INBOUND_PER_IP = "inbound_per_ip"  # authenticated, but its IP holds enough links already
REASONS = (
    IP_NOT_ALLOWED,
    EVICTED_PER_IP,
    EVICTED_POOL_FULL,
    FIRST_MESSAGE_TIMEOUT,
    HANDSHAKE_TIMEOUT,
    HANDSHAKE_FAILED,
    UNKNOWN_KEY,
    INBOUND_FULL,
    INBOUND_PER_IP,
)


def parse_ip(text: str | None) -> IPAddress | None:
    """An address as the kernel reports it, normalised: an IPv4-mapped IPv6 address (a
    dual-stack listener) is its IPv4 address, a scope id is dropped; None if not an IP."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def remote_ip(stream: trio.abc.Stream) -> IPAddress | None:
    """The remote IP of a socket stream (None for anything that has no socket)."""
    sock = getattr(stream, "socket", None)
    try:
        name = sock.getpeername()  # type: ignore[union-attr]
    except (AttributeError, OSError):
        return None
    return parse_ip(name[0]) if isinstance(name, tuple) and name else None


def parse_networks(texts: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDR texts ("10.0.0.0/8", "2001:db8::/32", "192.0.2.7") as networks; ValueError names
    the bad one (host bits set below the prefix are refused: likely a typo)."""
    return tuple(ipaddress.ip_network(text, strict=True) for text in texts)


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    max_pending: int = 32  # pending handshakes from strangers' IPs
    reserved_pending: int = 16  # pending handshakes from peer IPs
    max_pending_per_ip: int = 8
    max_inbound: int = 64  # established inbound links of non-reserved keys
    max_inbound_per_ip: int = 8  # the same, from one IP
    allow_ips: tuple[IPNetwork, ...] = ()  # empty: every address


class Pending:
    """One accepted connection whose handshake has not finished."""

    __slots__ = ("answered", "cancel_scope", "evicted", "ip", "reserved_pool", "seq")

    def __init__(self, ip: IPAddress | None, reserved_pool: bool, seq: int) -> None:
        self.ip = ip
        self.reserved_pool = reserved_pool
        self.seq = seq
        self.answered = False  # its first handshake message arrived
        self.evicted = False
        self.cancel_scope = trio.CancelScope()


class InboundGate:
    """The allowlist, the pending table with its pools and eviction, the established-link
    caps, and the refusal counts (see the module docstring)."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self.refused: Counter[str] = Counter({reason: 0 for reason in REASONS})
        self._pending: dict[int, Pending] = {}  # by seq: insertion order is age order
        self._per_ip: Counter[IPAddress | None] = Counter()
        self._per_pool: Counter[bool] = Counter()
        self._seq = 0
        self._peer_ips: dict[Hashable, frozenset[IPAddress]] = {}

    # ---- peer IPs ---------------------------------------------------------------------

    def set_peer_ips(self, source: Hashable, ips: Iterable[IPAddress | None]) -> None:
        """What `source` (a dial address, a reserved key) says its peer's IPs are."""
        known = frozenset(ip for ip in ips if ip is not None)
        if known:
            self._peer_ips[source] = known

    def is_peer_ip(self, ip: IPAddress | None) -> bool:
        return ip is not None and any(ip in ips for ips in self._peer_ips.values())

    # ---- before the handshake ---------------------------------------------------------

    def ip_allowed(self, ip: IPAddress | None) -> bool:
        """True if `allow_ips` admits `ip`; an unknown address passes only an empty list.
        Counts a refusal."""
        networks = self.limits.allow_ips
        if not networks or (ip is not None and any(ip in net for net in networks)):
            return True
        self.refused[IP_NOT_ALLOWED] += 1
        return False

    def open(self, ip: IPAddress | None) -> Pending:
        """Register a new pending connection from `ip`, evicting (cancelling) whichever
        pending connection must make room for it. Never refuses."""
        reserved_pool = self.is_peer_ip(ip)
        if self._per_ip[ip] >= self.limits.max_pending_per_ip:
            self._evict(lambda p: p.ip == ip, EVICTED_PER_IP)
        cap = self.limits.reserved_pending if reserved_pool else self.limits.max_pending
        if self._per_pool[reserved_pool] >= cap:
            self._evict(lambda p: p.reserved_pool == reserved_pool, EVICTED_POOL_FULL)
        self._seq += 1
        pending = Pending(ip, reserved_pool, self._seq)
        self._pending[pending.seq] = pending
        self._per_ip[ip] += 1
        self._per_pool[reserved_pool] += 1
        return pending

    def close(self, pending: Pending) -> None:
        """The handshake ended (done, failed or evicted): free its place. Idempotent."""
        if self._pending.pop(pending.seq, None) is None:
            return
        self._per_ip[pending.ip] -= 1
        if not self._per_ip[pending.ip]:
            del self._per_ip[pending.ip]
        self._per_pool[pending.reserved_pool] -= 1

    def pending_count(self) -> int:
        return len(self._pending)

    def _evict(self, candidate, reason: str) -> None:
        victim = None
        for pending in self._pending.values():  # oldest first
            if candidate(pending):
                if not pending.answered:
                    victim = pending
                    break
                victim = victim or pending
        if victim is None:
            return
        victim.evicted = True
        victim.cancel_scope.cancel()
        self.close(victim)
        self.refused[reason] += 1

    # ---- after the handshake ----------------------------------------------------------

    def inbound_refusal(
        self, ip: IPAddress | None, others: Iterable[IPAddress | None]
    ) -> str | None:
        """Why a new inbound link of a non-reserved key from `ip` is refused (None: it is
        admitted), given the IPs of the other non-reserved inbound links. Counts it."""
        others = list(others)
        reason = None
        if len(others) >= self.limits.max_inbound:
            reason = INBOUND_FULL
        elif ip is not None and others.count(ip) >= self.limits.max_inbound_per_ip:
            reason = INBOUND_PER_IP
        if reason is not None:
            self.refused[reason] += 1
        return reason
