"""The two root exceptions (consensus/errors.py, docs/ARCHITECTURE.md "Errors"): every error a
remote party causes is a `RemoteProtocolError`, every misuse of our own code a
`LocalProtocolError`, the ledger's refusals are neither, and the old bases still hold."""

from __future__ import annotations

import pytest

from consensus.core import BrokenInvariant as CoreInvariant
from consensus.errors import LocalProtocolError, RemoteProtocolError
from consensus.types import ConsensusError, Validator, ValidatorSchedule, ValidatorSet
from consensus.wire import WireError, decode_message
from ledger.chain import ChainMisuse
from ledger.codes import DecodeError, InvalidBlock, InvalidTransaction, LedgerError
from ledger.store import HeightError, InvalidRecordError, StoreError
from ledger.transition import BrokenInvariant as LedgerInvariant
from node import messages
from node.events import QueryError, parse_query
from node.messages import MessageError
from node.p2p.errors import ConnectionClosed, PeerProtocolError
from node.rpc.errors import BadRequest, RpcError, invalid_params
from node.sync import SyncError

REMOTE = (WireError, MessageError, SyncError, PeerProtocolError, QueryError, BadRequest)
LOCAL = (
    ConsensusError,
    CoreInvariant,
    LedgerInvariant,
    HeightError,
    InvalidRecordError,
    ChainMisuse,
)
NEITHER = (LedgerError, DecodeError, InvalidTransaction, InvalidBlock, StoreError, ConnectionClosed)


@pytest.mark.parametrize("cls", REMOTE)
def test_remote_errors_have_the_remote_root(cls):
    assert issubclass(cls, RemoteProtocolError) and not issubclass(cls, LocalProtocolError)


@pytest.mark.parametrize("cls", LOCAL)
def test_our_misuse_has_the_local_root(cls):
    assert issubclass(cls, LocalProtocolError) and not issubclass(cls, RemoteProtocolError)


@pytest.mark.parametrize("cls", NEITHER)
def test_refusals_and_environment_failures_are_neither(cls):
    assert not issubclass(cls, (RemoteProtocolError, LocalProtocolError))


def test_the_old_bases_still_catch_what_they_caught():
    assert issubclass(WireError, ValueError) and issubclass(MessageError, ValueError)
    assert issubclass(QueryError, ValueError)
    assert issubclass(CoreInvariant, AssertionError) and issubclass(LedgerInvariant, AssertionError)
    assert issubclass(HeightError, StoreError) and issubclass(InvalidRecordError, StoreError)
    assert issubclass(ChainMisuse, RuntimeError) and issubclass(BadRequest, RpcError)


def test_what_a_peer_or_client_sends_raises_a_remote_error():
    for bad in (
        lambda: decode_message(b"\xc1"),
        lambda: messages.decode(b"\x00garbage"),
        lambda: parse_query("tm.event = 'Nope' OR x"),
    ):
        with pytest.raises(RemoteProtocolError):
            bad()
    assert isinstance(invalid_params("height must be an integer"), RemoteProtocolError)


def test_misusing_our_own_code_raises_a_local_error():
    members = ValidatorSet.of([Validator(b"a" * 20, b"k" * 32, 1)])
    schedule = ValidatorSchedule(1, members)
    with pytest.raises(LocalProtocolError):
        schedule.record(7)  # out of order
    with pytest.raises(LocalProtocolError):
        ValidatorSet.of([])  # a set needs a validator
