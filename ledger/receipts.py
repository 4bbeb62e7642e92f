"""What execution reports: `Event`, one fact for the audit trail, and `Receipt`, the verdict
on one transaction with its events, each with its canonical encoding (`codec`).

`ledger/types.py` names both too (the record types' module, where callers long found them);
this module imports nothing of the ledger but the codec and the address size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ledger import codec
from ledger.crypto import ADDRESS_BYTES

# Event attributes that name an instrument (the others that are 20-byte values name accounts).
_INSTRUMENT_ATTRIBUTES = frozenset({"instrument", "asset", "cash", "security"})
# The event type of one credit or debit (protocol version 3, ledger/execute.py).
BALANCE_CHANGE = "balance_change"

_EVENT_VALUE_TYPES = frozenset({int, str, bytes, bool, type(None)})


def _check_event_value(name: object, value: object) -> None:
    if type(value) in _EVENT_VALUE_TYPES:
        return
    if type(name) is not str:
        raise TypeError(f"event attribute names are str, got {type(name).__name__}")
    # int and str subclasses (IntEnum codes) encode as their base value, like `codec.encode`.
    if not isinstance(value, (int, str)):
        raise TypeError(f"event attribute {name!r} is a {type(value).__name__}, not a scalar")


@dataclass(frozen=True, slots=True)
class Event:
    """One fact for the audit trail. Attributes name the accounts (bytes addresses) and
    instruments concerned under the keys "account", "from", "to", "instrument", ...;
    values are ints, strs or bytes so an event encodes canonically."""

    type: str
    attributes: dict[str, int | str | bytes | None]
    # `codec.encode(self.to_map())`, computed on first use and kept: an event of a block is
    # encoded into its receipt, its own index row and the block's results hash, while the
    # events of a mempool dry run are never encoded at all. An event is a fact: never mutate
    # `attributes` after construction.
    _encoded: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Events are encoded with `codec.encode_presorted` (no walk), which is only canonical
        # for scalar values: refuse anything else here, where the operation that built the
        # event is on the stack (the encoding itself may come much later).
        attributes = self.attributes
        if not _EVENT_VALUE_TYPES.issuperset(map(type, attributes.values())):
            for name, value in attributes.items():
                _check_event_value(name, value)

    @property
    def encoded(self) -> bytes:
        """The event's canonical encoding, `codec.encode(self.to_map())`."""
        encoded = self._encoded
        if encoded is None:
            encoded = codec.encode_presorted(self.to_map())
            object.__setattr__(self, "_encoded", encoded)
        return encoded

    def to_map(self) -> dict:
        attributes = self.attributes
        keys = sorted(attributes)
        if keys != list(attributes):  # operations mostly build them in order already
            attributes = {key: attributes[key] for key in keys}
        else:
            attributes = dict(attributes)  # a copy either way: the caller may change it
        return {"attributes": attributes, "type": self.type}

    def accounts(self) -> list[bytes]:
        """Every account the event concerns (each 20-byte value), sorted, for indexing."""
        return sorted(
            {v for v in self.attributes.values() if type(v) is bytes and len(v) == ADDRESS_BYTES}
        )

    def instruments(self) -> list[str]:
        """Every instrument the event concerns, sorted, for indexing."""
        return sorted(
            {
                v
                for k, v in self.attributes.items()
                if k in _INSTRUMENT_ATTRIBUTES and type(v) is str
            }
        )


def event_in_key_order(type_: str, attributes: dict[str, int | str | bytes | None]) -> Event:
    """`Event(type_, attributes)` with its encoding made now, for `attributes` the caller built
    in key order (a literal with its keys sorted): the event map's fixed bytes around the
    packed attributes, which is `codec.encode(event.to_map())` exactly then, without
    `to_map`'s sort and copy (tests/ledger/test_event_encoding.py). For the events of every
    transfer (`ledger/ops/transfers.py` `move_event`); the scalar check runs as for any event.
    """
    event = Event(type_, attributes)
    encoded = b"".join(
        (_EVENT_MAP_HEAD, codec.encode_presorted(attributes), _EVENT_TYPE_KEY, _pack_str(type_))
    )
    object.__setattr__(event, "_encoded", encoded)
    return event


# An event's map is {"attributes": ..., "type": ...}: two entries, in key order.
_EVENT_MAP_HEAD = b"\x82" + codec.encode("attributes")
_EVENT_TYPE_KEY = codec.encode("type")
_pack_str = codec.encode_presorted


@dataclass(frozen=True, slots=True)
class Receipt:
    """The verdict on one transaction: code 0 (OK) or the stable code of the first broken rule."""

    tx_id: bytes
    code: int
    log: str = ""
    events: tuple[Event, ...] = ()
    # False when refused before execution (decode, chain, signatures, sender, nonce): such a
    # transaction cannot be in a block and consumed no nonce. True once it was executed,
    # whatever its code.
    executed: bool = True
    # `codec.join_array` of the events' encodings, made on first use and kept: a block's
    # receipt needs it twice, in the results hash (execution) and in its own encoding (the
    # commit). Never mutate a receipt's events.
    _events_encoded: bytes | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def events_encoded(self) -> bytes:
        """The canonical bytes of the list of the events, `codec.encode([e.to_map() ...])`."""
        found = self._events_encoded
        if found is None:
            found = codec.join_array([e.encoded for e in self.events])
            object.__setattr__(self, "_events_encoded", found)
        return found

    @property
    def ok(self) -> bool:
        return self.code == 0

    def to_map(self) -> dict:
        return {
            "code": int(self.code),
            "events": [e.to_map() for e in self.events],
            "log": self.log,
            "tx_id": self.tx_id,
        }

    def encode(self) -> bytes:
        """`codec.encode(self.to_map())`, composed from the events' cached encodings."""
        pack = codec.encode_presorted
        return b"".join(
            (
                _RECEIPT_MAP_HEAD,
                pack(int(self.code)),
                _RECEIPT_EVENTS_KEY,
                self.events_encoded,
                _RECEIPT_LOG_KEY,
                pack(self.log),
                _RECEIPT_TX_ID_KEY,
                pack(self.tx_id),
            )
        )


# The fixed parts of a receipt's map, in key order: a 4-entry map, then each key before its
# value (see `Receipt.to_map`).
_RECEIPT_MAP_HEAD = b"\x84" + codec.encode("code")
_RECEIPT_EVENTS_KEY = codec.encode("events")
_RECEIPT_LOG_KEY = codec.encode("log")
_RECEIPT_TX_ID_KEY = codec.encode("tx_id")
