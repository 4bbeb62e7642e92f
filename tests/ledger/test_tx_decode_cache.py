"""`decode_signed_tx` returns remembered results for bytes whose signatures were verified
(`remember_verified`): a remembered result must be the result, refusals and unverified bytes
must never be remembered, and the memory must be bounded in bytes, whatever the shape of the
transactions (the attack: 64 KiB of nested empty maps keeps ~5 MiB alive once decoded)."""

from __future__ import annotations

import pytest

import ledger.tx as tx_module
from ledger.codes import Code, DecodeError
from ledger.crypto import generate_key
from ledger.tx import (
    DECODE_CACHE_BYTES,
    Signature,
    TxBody,
    clear_decode_cache,
    decode_cache_stats,
    decode_signed_tx,
    encode_signed_tx,
    remember_verified,
    set_decode_cache_bytes,
    sign_tx,
    tx_footprint,
)

KEY = generate_key(b"decode-cache".ljust(32, b"\x00"))


def raw_transfer(nonce: int) -> bytes:
    body = TxBody("khazana-test", KEY.address, nonce, "transfer", {"amount": 1})
    return sign_tx(body, [KEY]).raw


def bomb(chain: str = "wrong-chain", width: int = 20_000) -> bytes:
    """A body of `width` empty maps under junk signatures: ~3 bytes on the wire each, ~70
    bytes each in memory once decoded."""
    body = TxBody(chain, KEY.address, 0, "transfer", {"a": [{} for _ in range(width)]})
    tx = sign_tx(body, [KEY])
    forged = tx_module.SignedTx(body, (Signature(KEY.public_key, b"\x07" * 64),), b"", tx.tx_id)
    return encode_signed_tx(forged)


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_decode_cache()
    set_decode_cache_bytes(DECODE_CACHE_BYTES)
    yield
    clear_decode_cache()
    set_decode_cache_bytes(DECODE_CACHE_BYTES)


def counting(monkeypatch) -> list[bytes]:
    calls: list[bytes] = []
    real = tx_module._decode_envelope
    monkeypatch.setattr(tx_module, "_decode_envelope", lambda raw: calls.append(raw) or real(raw))
    return calls


def test_remembered_bytes_decode_once_to_an_equal_transaction(monkeypatch):
    calls = counting(monkeypatch)
    raw = raw_transfer(1)
    first = decode_signed_tx(raw)
    remember_verified(first)
    again = decode_signed_tx(bytes(bytearray(raw)))  # another object, the same bytes
    assert again is first and calls == [raw]
    # bytearray / memoryview input decodes to the same transaction.
    assert decode_signed_tx(bytearray(raw)) == first == decode_signed_tx(memoryview(raw))
    assert first.raw == raw and first.body.nonce == 1


def test_decoding_alone_remembers_nothing(monkeypatch):
    calls = counting(monkeypatch)
    raw = raw_transfer(2)
    assert decode_signed_tx(raw) == decode_signed_tx(raw)
    assert calls == [raw, raw] and decode_cache_stats() == (0, 0)


def test_refusals_are_not_remembered(monkeypatch):
    calls = counting(monkeypatch)
    bad = raw_transfer(2) + b"\x00"
    for _ in range(2):
        with pytest.raises(DecodeError) as refused:
            decode_signed_tx(bad)
        assert refused.value.code == Code.TRAILING_BYTES
    assert calls == [bad, bad]


def test_forged_envelopes_leave_nothing_behind():
    # The probe's attack, through every path that decodes bytes from outside: decoding and
    # the ledger's own check (which refuses the wrong chain before any signature).
    from ledger.execute import check_transaction
    from ledger.genesis import default_genesis, state_from_genesis
    from ledger.types import BlockContext

    genesis = default_genesis(
        validators=[("v", generate_key(b"v".ljust(32, b"\x00")).public_key)],
        institutions={
            name: generate_key(name.encode().ljust(32, b"\x00")).address
            for name in ("ministry", "central-bank", "regulator", "auditor")
        },
        chain_id="khazana-test",
        genesis_time_ms=1_767_225_600_000,
    )
    state = state_from_genesis(genesis)
    ctx = BlockContext("khazana-test", 1, 1_767_225_600_000)
    for chain in ("wrong-chain", "khazana-test"):
        raw = bomb(chain, width=5_000)
        decode_signed_tx(raw)
        receipt = check_transaction(state, raw, ctx)
        assert receipt.code in (Code.WRONG_CHAIN, Code.BAD_SIGNATURE)
    assert decode_cache_stats() == (0, 0)


def test_the_memory_is_bounded_in_bytes_not_entries():
    tx = decode_signed_tx(raw_transfer(0))
    cost = tx_footprint(tx)
    set_decode_cache_bytes(cost * 10)
    for nonce in range(50):
        remember_verified(decode_signed_tx(raw_transfer(nonce)))
    count, used = decode_cache_stats()
    assert used <= cost * 10 and count == 10  # the oldest were forgotten
    # A transaction whose decoded form is large (even a genuinely signed one) counts for
    # what it keeps: larger than an eighth of the bound, it is not remembered at all.
    wide = sign_tx(TxBody("khazana-test", KEY.address, 99, "x", {"a": [{}] * 2_000}), [KEY])
    wide = decode_signed_tx(wide.raw)  # separate dicts, as from the wire
    assert tx_footprint(wide) > cost * 10 // 8
    remember_verified(wide)
    assert decode_cache_stats()[1] <= cost * 10
    assert decode_signed_tx(wide.raw) is not wide


def test_footprint_counts_what_decoding_keeps():
    # 20 000 empty maps: at least 64 bytes each in CPython, so > 1.2 MiB from ~60 KiB.
    raw = bomb(width=20_000)
    tx = decode_signed_tx(raw)
    assert len(raw) < 70_000 and tx_footprint(tx) > 20_000 * 64
    # With a limit, the walk stops early and says only "more than the limit".
    assert 100_000 < tx_footprint(tx, 100_000) < 20_000 * 64


def test_shrinking_the_bound_forgets_at_once_and_zero_turns_it_off():
    for nonce in range(5):
        remember_verified(decode_signed_tx(raw_transfer(nonce)))
    assert decode_cache_stats()[0] == 5
    set_decode_cache_bytes(0)
    assert decode_cache_stats() == (0, 0)
    remember_verified(decode_signed_tx(raw_transfer(7)))
    assert decode_cache_stats() == (0, 0)
    with pytest.raises(ValueError):
        set_decode_cache_bytes(-1)
