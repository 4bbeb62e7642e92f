"""`decode_signed_tx` remembers its successful results (a node decodes the same bytes at
admission, in the proposal and for events): a remembered result must be the result, refusals
must not be remembered, and the memory must be bounded."""

from __future__ import annotations

import pytest

import ledger.tx as tx_module
from ledger.codes import Code, DecodeError
from ledger.crypto import generate_key
from ledger.tx import DECODE_CACHE_SIZE, TxBody, decode_signed_tx, sign_tx

KEY = generate_key(b"decode-cache".ljust(32, b"\x00"))


def raw_transfer(nonce: int) -> bytes:
    body = TxBody("khazana-test", KEY.address, nonce, "transfer", {"amount": 1})
    return sign_tx(body, [KEY]).raw


def test_equal_bytes_decode_once_to_an_equal_transaction(monkeypatch):
    calls = []
    real = tx_module._decode_envelope
    monkeypatch.setattr(tx_module, "_decode_envelope", lambda raw: calls.append(raw) or real(raw))
    tx_module._decode_remembered.cache_clear()
    raw = raw_transfer(1)
    first = decode_signed_tx(raw)
    again = decode_signed_tx(bytes(bytearray(raw)))  # another object, the same bytes
    assert again is first and calls == [raw]
    # bytearray / memoryview input decodes to the same transaction.
    assert decode_signed_tx(bytearray(raw)) == first == decode_signed_tx(memoryview(raw))
    assert first.raw == raw and first.body.nonce == 1


def test_refusals_are_not_remembered(monkeypatch):
    calls = []
    real = tx_module._decode_envelope
    monkeypatch.setattr(tx_module, "_decode_envelope", lambda raw: calls.append(raw) or real(raw))
    tx_module._decode_remembered.cache_clear()
    bad = raw_transfer(2) + b"\x00"
    for _ in range(2):
        with pytest.raises(DecodeError) as refused:
            decode_signed_tx(bad)
        assert refused.value.code == Code.TRAILING_BYTES
    assert calls == [bad, bad]


def test_the_memory_is_bounded():
    info = tx_module._decode_remembered.cache_info()
    assert info.maxsize == DECODE_CACHE_SIZE
    tx_module._decode_remembered.cache_clear()
    for nonce in range(50):
        decode_signed_tx(raw_transfer(nonce))
    assert tx_module._decode_remembered.cache_info().currsize == 50
