"""The signed-transaction envelope (ledger/tx.py): ids, signatures, and strict decoding."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import codec
from ledger.codes import Code, DecodeError, InvalidTransaction
from ledger.crypto import TX_DOMAIN_TAG, address_to_text, generate_key, hash256
from ledger.tx import (
    MAX_SIGNATURES,
    MAX_TX_BYTES,
    Signature,
    SignedTx,
    TxBody,
    add_signatures,
    decode_signed_tx,
    encode_signed_tx,
    sign_tx,
    verify_tx_signatures,
)

KEYS = [generate_key(bytes([i]) * 32) for i in range(1, 11)]
ALICE, BOB, CAROL = KEYS[0], KEYS[1], KEYS[2]


def transfer(chain: str = "khazana-test", nonce: int = 7, **args) -> TxBody:
    args = args or {"amount": 1_500_000, "instrument": "KZ-BOND-2030", "to": BOB.address}
    return TxBody(chain, ALICE.address, nonce, "transfer", args)


def envelope(body=None, sigs=None) -> dict:
    """A signed transaction as a plain map, for crafting hostile variants."""
    body = transfer().to_obj() if body is None else body
    sigs = [[ALICE.public_key, b"\x00" * 64]] if sigs is None else sigs
    return {"body": body, "sigs": sigs}


def refused(obj_or_raw, code: Code) -> DecodeError:
    raw = obj_or_raw if isinstance(obj_or_raw, bytes) else codec.encode(obj_or_raw)
    with pytest.raises(DecodeError) as info:
        decode_signed_tx(raw)
    assert info.value.code is code, info.value
    return info.value


# --------------------------------------------------------------------------------------
# body, id, signing bytes


def test_body_bytes_id_and_signing_bytes():
    body = transfer()
    expected = codec.encode(
        {
            "chain": "khazana-test",
            "sender": ALICE.address,
            "nonce": 7,
            "op": "transfer",
            "args": {"amount": 1_500_000, "instrument": "KZ-BOND-2030", "to": BOB.address},
        }
    )
    assert body.encoded == expected
    assert body.tx_id == hash256(expected)
    assert body.signing_bytes() == b"khazana/tx/v1\x00" + expected
    assert TX_DOMAIN_TAG == b"khazana/tx/v1\x00"
    assert codec.decode(body.encoded) == body.to_obj()


def test_body_equality_and_hash():
    assert transfer() == transfer()
    assert hash(transfer()) == hash(transfer())
    assert len({transfer(), transfer(), transfer(nonce=8)}) == 2
    assert transfer() != transfer(nonce=8)


@pytest.mark.parametrize(
    "fields",
    [
        ("", ALICE.address, 0, "transfer", {}),  # empty chain id
        ("a" * 65, ALICE.address, 0, "transfer", {}),  # chain id too long
        ("has space", ALICE.address, 0, "transfer", {}),
        ("chaîne", ALICE.address, 0, "transfer", {}),  # not ASCII
        (b"chain", ALICE.address, 0, "transfer", {}),
        ("c", ALICE.address[:19], 0, "transfer", {}),  # sender too short
        ("c", ALICE.address + b"\x00", 0, "transfer", {}),
        ("c", address_to_text(ALICE.address), 0, "transfer", {}),  # text, not bytes
        ("c", ALICE.address, -1, "transfer", {}),
        ("c", ALICE.address, 2**63, "transfer", {}),
        ("c", ALICE.address, True, "transfer", {}),  # bool is not a nonce
        ("c", ALICE.address, 0, "", {}),
        ("c", ALICE.address, 0, "1transfer", {}),
        ("c", ALICE.address, 0, "trans fer", {}),
        ("c", ALICE.address, 0, "trans-fer", {}),
        ("c", ALICE.address, 0, "t" * 65, {}),
        ("c", ALICE.address, 0, "tränsfer", {}),
        ("c", ALICE.address, 0, "transfer", []),  # args must be a map
        ("c", ALICE.address, 0, "transfer", None),
    ],
)
def test_body_fields_are_checked(fields):
    with pytest.raises(DecodeError) as info:
        TxBody(*fields)
    assert info.value.code is Code.BAD_FIELD


def test_body_limits_are_inclusive():
    TxBody("a" * 64, ALICE.address, 2**63 - 1, "t" * 64, {})
    TxBody("x", ALICE.address, 0, "register_instrument", {})


def test_body_with_unencodable_args_is_our_bug():
    with pytest.raises(TypeError):
        transfer(amount=1.5)


# --------------------------------------------------------------------------------------
# signing: the id never depends on the signatures


def test_tx_id_is_independent_of_signatures():
    body = transfer()
    one = sign_tx(body, [ALICE])
    both = sign_tx(body, [ALICE, BOB])
    reversed_order = sign_tx(body, [BOB, ALICE])
    added = add_signatures(sign_tx(body, [BOB]), [ALICE])
    assert one.tx_id == both.tx_id == reversed_order.tx_id == added.tx_id == body.tx_id
    assert both.raw == reversed_order.raw == added.raw
    assert both == reversed_order == added
    assert one.raw != both.raw
    for tx in (one, both, added):
        assert decode_signed_tx(tx.raw).tx_id == body.tx_id
        verify_tx_signatures(tx)


def test_signatures_sorted_by_public_key_without_duplicates():
    body = transfer()
    tx = add_signatures(sign_tx(body, [CAROL, ALICE, CAROL]), [BOB, ALICE])
    keys = [s.public_key for s in tx.signatures]
    assert keys == sorted({ALICE.public_key, BOB.public_key, CAROL.public_key})
    assert tx.signers == tuple(keys)


def test_signature_count_limits():
    body = transfer()
    assert len(sign_tx(body, KEYS[:MAX_SIGNATURES]).signatures) == MAX_SIGNATURES
    with pytest.raises(ValueError):
        sign_tx(body, KEYS[: MAX_SIGNATURES + 1])
    with pytest.raises(ValueError):
        add_signatures(sign_tx(body, KEYS[:MAX_SIGNATURES]), [KEYS[MAX_SIGNATURES]])
    with pytest.raises(ValueError):
        sign_tx(body, [])


def test_signature_for_one_chain_fails_on_another():
    on_a = sign_tx(transfer(chain="khazana-a"), [ALICE])
    body_b = transfer(chain="khazana-b")
    moved = SignedTx(body_b, on_a.signatures, b"", body_b.tx_id)
    moved = decode_signed_tx(encode_signed_tx(moved))
    with pytest.raises(InvalidTransaction) as info:
        verify_tx_signatures(moved)
    assert info.value.code is Code.BAD_SIGNATURE
    assert "khazana-b" in info.value.message


def test_bad_signature_names_the_signer():
    tx = sign_tx(transfer(), [ALICE, BOB, CAROL])
    signatures = list(tx.signatures)
    bad = signatures[1]
    signatures[1] = Signature(bad.public_key, bad.signature[:10] + b"\x00" + bad.signature[11:])
    forged = decode_signed_tx(encode_signed_tx(SignedTx(tx.body, tuple(signatures), b"", b"")))
    with pytest.raises(InvalidTransaction) as info:
        verify_tx_signatures(forged)
    assert info.value.code is Code.BAD_SIGNATURE
    signer = next(k for k in KEYS if k.public_key == bad.public_key)
    assert "signature 1" in info.value.message
    assert address_to_text(signer.address) in info.value.message


def test_signature_over_body_without_domain_tag_fails():
    body = transfer()
    untagged = Signature(ALICE.public_key, ALICE.sign(body.encoded))
    tx = decode_signed_tx(encode_signed_tx(SignedTx(body, (untagged,), b"", body.tx_id)))
    with pytest.raises(InvalidTransaction):
        verify_tx_signatures(tx)


# --------------------------------------------------------------------------------------
# wire form


def test_signed_bytes_are_the_canonical_envelope():
    tx = sign_tx(transfer(), [BOB, ALICE])
    expected = codec.encode(
        {"body": tx.body.to_obj(), "sigs": [[s.public_key, s.signature] for s in tx.signatures]}
    )
    assert tx.raw == encode_signed_tx(tx) == expected
    decoded = decode_signed_tx(expected)
    assert decoded == tx
    assert decoded.body.encoded == tx.body.encoded


def test_oversize_refused_before_parsing():
    raw = sign_tx(transfer(), [ALICE]).raw
    refused(raw + b"\x00" * (MAX_TX_BYTES + 1 - len(raw)), Code.TOO_LARGE)
    with pytest.raises(ValueError):
        sign_tx(transfer(blob=b"\x00" * MAX_TX_BYTES), [ALICE])


def test_envelope_codec_refusals_keep_their_codes():
    raw = sign_tx(transfer(), [ALICE]).raw
    refused(raw + b"\x00", Code.TRAILING_BYTES)
    refused(raw[:-1], Code.MALFORMED)
    refused(b"", Code.MALFORMED)
    # The same transaction with the nonce as a uint16 instead of a fixint.
    body = codec.encode(transfer().to_obj())
    assert b"\xa5nonce\x07" in body
    hostile = raw.replace(b"\xa5nonce\x07", b"\xa5nonce\xcd\x00\x07")
    refused(hostile, Code.NON_CANONICAL)


@pytest.mark.parametrize(
    "obj",
    [
        [],
        "tx",
        {"body": transfer().to_obj()},  # no sigs
        {"sigs": []},
        envelope() | {"extra": 1},
        envelope() | {"body": []},
        envelope() | {"body": {k: v for k, v in transfer().to_obj().items() if k != "op"}},
        envelope() | {"body": transfer().to_obj() | {"memo": "x"}},
        envelope() | {"body": transfer().to_obj() | {"chain": 5}},
        envelope() | {"body": transfer().to_obj() | {"sender": b"\x00" * 21}},
        envelope() | {"body": transfer().to_obj() | {"nonce": -1}},
        envelope() | {"body": transfer().to_obj() | {"nonce": 2**63}},
        envelope() | {"body": transfer().to_obj() | {"nonce": "7"}},
        envelope() | {"body": transfer().to_obj() | {"op": "no way"}},
        envelope() | {"body": transfer().to_obj() | {"args": [1]}},
        envelope(sigs=[]),
        envelope(sigs={}),
        envelope(
            sigs=[
                [k.public_key, b"\x00" * 64] for k in sorted(KEYS[:9], key=lambda k: k.public_key)
            ]
        ),
        envelope(sigs=[[ALICE.public_key]]),
        envelope(sigs=[[ALICE.public_key, b"\x00" * 64, 1]]),
        envelope(sigs=[[ALICE.public_key[:31], b"\x00" * 64]]),
        envelope(sigs=[[ALICE.public_key, b"\x00" * 63]]),
        envelope(sigs=[[ALICE.public_key.hex(), b"\x00" * 64]]),
        envelope(sigs=[ALICE.public_key + b"\x00" * 64]),
        envelope(sigs=[[ALICE.public_key, b"\x00" * 64], [ALICE.public_key, b"\x01" * 64]]),
    ],
)
def test_schema_refusals(obj):
    refused(obj, Code.BAD_FIELD)


def test_unsorted_signatures_are_non_canonical():
    low, high = sorted([ALICE.public_key, BOB.public_key])
    refused(envelope(sigs=[[high, b"\x00" * 64], [low, b"\x00" * 64]]), Code.NON_CANONICAL)


def test_decode_does_not_verify_but_verify_catches_garbage():
    tx = decode_signed_tx(codec.encode(envelope()))  # all-zero signature: well-formed
    with pytest.raises(InvalidTransaction) as info:
        verify_tx_signatures(tx)
    assert info.value.code is Code.BAD_SIGNATURE


# --------------------------------------------------------------------------------------
# properties

arg_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.builds(
    TxBody,
    st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True),
    st.binary(min_size=20, max_size=20),
    st.integers(0, 2**63 - 1),
    st.from_regex(r"[a-z][a-z_]{0,20}", fullmatch=True),
    st.dictionaries(st.text(max_size=10), arg_values, max_size=5),
)


@settings(max_examples=60)
@given(bodies, st.lists(st.sampled_from(KEYS[:MAX_SIGNATURES]), min_size=1, max_size=8))
def test_any_body_round_trips_with_any_signers(body, signers):
    tx = sign_tx(body, signers)
    decoded = decode_signed_tx(tx.raw)
    assert decoded == tx
    assert decoded.body.encoded == codec.encode(body.to_obj())  # the slice is the body
    assert decoded.tx_id == hash256(codec.encode(body.to_obj()))
    verify_tx_signatures(decoded)


@settings(max_examples=300)
@given(st.data())
def test_mutated_transactions_decode_or_refuse(data):
    raw = bytearray(sign_tx(transfer(nonce=data.draw(st.integers(0, 2**40))), [ALICE, BOB]).raw)
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    try:
        tx = decode_signed_tx(bytes(raw))
    except DecodeError:
        return
    # Accepted: then it is canonical and its id is the hash of its body's bytes.
    assert encode_signed_tx(tx) == bytes(raw)
    assert tx.tx_id == hash256(tx.body.encoded)
    try:
        verify_tx_signatures(tx)
    except InvalidTransaction as error:
        assert error.code is Code.BAD_SIGNATURE
