"""Keys, signatures, hashes, addresses and key files (ledger/crypto.py).

Expectations come from outside the module: RFC 8032 and BLAKE2 published vectors, BIP-350's
bech32m vectors, and a small pure-Python Ed25519 written here from RFC 8032 (section 5.1) that
shows the crafted malleable and small-order signatures really satisfy the plain verification
equation, so their refusal is the strict policy at work and not an accident.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import crypto
from ledger.codes import Code, LedgerError
from ledger.crypto import (
    KeyFileError,
    address_from_public_key,
    address_from_text,
    address_to_text,
    bech32m_decode,
    bech32m_encode,
    generate_key,
    hash256,
    is_encrypted_key_file,
    read_key_file,
    verify_signature,
    write_key_file,
)

# --------------------------------------------------------------------------------------
# A reference Ed25519 (RFC 8032 section 5.1), slow and simple, for crafting inputs.

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
IDENTITY = (0, 1, 1, 0)  # extended coordinates (X, Y, Z, T)


def point_add(a, b):
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = (y1 - x1) * (y2 - x2) % P
    bb = (y1 + x1) * (y2 + x2) % P
    cc = 2 * t1 * t2 * D % P
    dd = 2 * z1 * z2 % P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def point_mul(scalar, point):
    result = IDENTITY
    while scalar:
        if scalar & 1:
            result = point_add(result, point)
        point = point_add(point, point)
        scalar >>= 1
    return result


def point_equal(a, b):
    return (a[0] * b[2] - b[0] * a[2]) % P == 0 and (a[1] * b[2] - b[1] * a[2]) % P == 0


def recover_x(y, sign):
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    if (x & 1) != sign:
        x = P - x
    return x


def point_decode(encoded: bytes):
    y = int.from_bytes(encoded, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % P)


def point_encode(point) -> bytes:
    x, y, z, _ = point
    zinv = pow(z, P - 2, P)
    x, y = x * zinv % P, y * zinv % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


BASE = point_decode(bytes.fromhex("58" + "66" * 31))


def plain_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """RFC 8032's equation [S]B = R + [k]A with no canonicity or small-order checks."""
    a = point_decode(public_key)
    r = point_decode(signature[:32])
    if a is None or r is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    k = int.from_bytes(hashlib.sha512(signature[:32] + public_key + message).digest(), "little")
    return point_equal(point_mul(s, BASE), point_add(r, point_mul(k, a)))


# --------------------------------------------------------------------------------------
# hashing


def test_hash256_is_blake2b_256_published_vectors():
    # BLAKE2b-256 of "" and "abc", as published with the BLAKE2 reference implementation.
    assert hash256(b"").hex() == "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8"
    assert hash256(b"abc").hex() == (
        "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319"
    )


# --------------------------------------------------------------------------------------
# keys and signatures

RFC8032_VECTORS = [
    # (secret seed, public key, message, signature): RFC 8032 section 7.1, TEST 1 and TEST 2.
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac"
        "c61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e"
        "458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]


@pytest.mark.parametrize("seed, public, message, signature", RFC8032_VECTORS)
def test_rfc8032_vectors(seed, public, message, signature):
    key = generate_key(bytes.fromhex(seed))
    assert key.public_key.hex() == public
    assert key.sign(bytes.fromhex(message)).hex() == signature
    assert verify_signature(key.public_key, bytes.fromhex(message), bytes.fromhex(signature))
    assert plain_verify(key.public_key, bytes.fromhex(message), bytes.fromhex(signature))


def test_generate_key_random_and_seed_checked():
    assert generate_key().seed != generate_key().seed
    for bad in (b"", bytes(31), bytes(33), "00" * 32):
        with pytest.raises(ValueError):
            generate_key(bad)


def test_keypair_repr_hides_the_seed():
    key = generate_key(bytes(range(32)))
    assert key.seed.hex() not in repr(key) and repr(key.seed) not in repr(key)


def test_signature_for_other_message_or_key_fails():
    key, other = generate_key(bytes(32)), generate_key(b"\x01" * 32)
    signature = key.sign(b"pay 10")
    assert verify_signature(key.public_key, b"pay 10", signature)
    assert not verify_signature(key.public_key, b"pay 11", signature)
    assert not verify_signature(other.public_key, b"pay 10", signature)
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    assert not verify_signature(key.public_key, b"pay 10", flipped)


def test_wrong_lengths_and_types_are_refused_without_raising():
    key = generate_key(bytes(32))
    signature = key.sign(b"m")
    pub = key.public_key
    assert not verify_signature(pub[:31], b"m", signature)
    assert not verify_signature(pub + b"\x00", b"m", signature)
    assert not verify_signature(pub, b"m", signature[:63])
    assert not verify_signature(pub, b"m", signature + b"\x00")
    assert not verify_signature(pub.hex(), b"m", signature)
    assert not verify_signature(pub, "m", signature)
    assert not verify_signature(pub, b"m", None)
    assert not verify_signature(bytearray(pub), b"m", signature)


def test_non_canonical_s_is_refused():
    """(R, S + L) satisfies the verification equation too; only (R, S) is accepted."""
    key = generate_key(bytes(range(32)))
    message = b"transfer 100"
    signature = key.sign(message)
    s = int.from_bytes(signature[32:], "little")
    malleated = signature[:32] + (s + L).to_bytes(32, "little")
    assert plain_verify(key.public_key, message, malleated)  # the crafted input is "valid"
    assert verify_signature(key.public_key, message, signature)
    assert not verify_signature(key.public_key, message, malleated)


def small_order_points():
    """The 8 points of order dividing 8, derived by curve arithmetic (not from crypto.py)."""
    for i in range(1000):
        y = int.from_bytes(hashlib.sha256(i.to_bytes(4, "little")).digest(), "little") % P
        point = point_decode(y.to_bytes(32, "little"))
        if point is None:
            continue
        torsion = point_mul(L, point)  # kills the prime-order part; what is left has order | 8
        if not point_equal(point_mul(4, torsion), IDENTITY):  # order exactly 8: generates all
            return [point_mul(k, torsion) for k in range(8)]
    raise AssertionError("no point of order 8 found")


def test_small_order_set_matches_curve_arithmetic():
    points = small_order_points()
    for point in points:
        assert point_equal(point_mul(8, point), IDENTITY)
    ys = {int.from_bytes(point_encode(p), "little") & ((1 << 255) - 1) for p in points}
    assert ys == crypto._SMALL_ORDER_Y


def test_small_order_public_keys_are_refused():
    """A small-order key with R = identity, S = 0 passes the plain equation whenever
    [k]A = 0; for the identity key that is every message (a key everyone can sign for)."""
    identity = point_encode(IDENTITY)
    forged = identity + bytes(32)
    assert plain_verify(identity, b"any message", forged)
    assert not verify_signature(identity, b"any message", forged)

    for point in small_order_points():
        public_key = point_encode(point)
        # Find a message whose k is a multiple of 8, so [k]A = 0 for this A.
        for n in range(200):
            message = b"msg %d" % n
            if plain_verify(public_key, message, forged):
                break
        else:
            raise AssertionError("no message found")
        assert not verify_signature(public_key, message, forged)
        assert not crypto.is_strict_public_key(public_key)


def test_non_canonical_public_key_encodings_are_refused():
    # y = p + 1 is a second encoding of y = 1 (the identity); y = p is a second encoding of 0.
    for y in (P, P + 1, 2**255 - 1):
        assert not crypto.is_strict_public_key(y.to_bytes(32, "little"))
    assert crypto.is_strict_public_key(generate_key(bytes(32)).public_key)


@settings(max_examples=200)
@given(st.binary(max_size=40), st.binary(max_size=100), st.binary(max_size=70))
def test_verify_never_raises(public_key, message, signature):
    assert verify_signature(public_key, message, signature) in (True, False)


@settings(max_examples=50)
@given(st.binary(min_size=32, max_size=32), st.binary(max_size=200))
def test_every_honest_signature_verifies(seed, message):
    key = generate_key(seed)
    assert verify_signature(key.public_key, message, key.sign(message))


# --------------------------------------------------------------------------------------
# bech32m (BIP-350 test vectors)

BIP350_VALID = [
    "A1LQFN3A",
    "a1lqfn3a",
    "an83characterlonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11sg7hg6",
    "abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx",
    "11llllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllludsr8",
    "split1checkupstagehandshakeupstreamerranterredcaperredlc445v",
    "?1v759aa",
]

BIP350_INVALID = [
    "\x20" + "1xj0phk",  # HRP character out of range
    "\x7f" + "1g6xzxy",  # HRP character out of range
    "\x80" + "1vctc34",  # HRP character out of range
    # overall max length exceeded
    "an84characterslonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11d6pts4",
    "qyrz8wqd2c9m",  # no separator character
    "1qyrz8wqd2c9m",  # empty HRP
    "y1b0jsk6g",  # invalid data character
    "lt1igcx5c0",  # invalid data character
    "in1muywd",  # too short checksum
    "mm1crxm3i",  # invalid character in checksum
    "au1s5cgom",  # invalid character in checksum
    "M1VUXWEZ",  # checksum calculated with uppercase form of HRP
    "16plkw9",  # empty HRP
    "1p2gdwpf",  # empty HRP
]

# BIP-350 segwit addresses: (address, scriptPubKey hex) = version op, push length, program.
BIP350_SEGWIT = [
    (
        "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y",
        "5128751e76e8199196d454941c45d1b3a323f1433bd6751e76e8199196d454941c45d1b3a323f1433bd6",
    ),
    ("BC1SW50QGDZ25J", "6002751e"),
    ("bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs", "5210751e76e8199196d454941c45d1b3a323"),
    (
        "tb1pqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesf3hn0c",
        "5120000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433",
    ),
]


@pytest.mark.parametrize("text", BIP350_VALID)
def test_bip350_valid_strings_decode_and_re_encode(text):
    hrp, data = bech32m_decode(text)
    assert bech32m_encode(hrp, data) == text.lower()


@pytest.mark.parametrize("text", BIP350_INVALID)
def test_bip350_invalid_strings_are_refused(text):
    with pytest.raises(ValueError):
        bech32m_decode(text)


@pytest.mark.parametrize("address, script", BIP350_SEGWIT)
def test_bip350_segwit_addresses(address, script):
    _, data = bech32m_decode(address)
    version, program = data[0], crypto._convert_bits(data[1:], 5, 8, pad=False)
    op = 0x50 + version if version else 0
    assert bytes([op, len(program)]) + program == bytes.fromhex(script)


def test_bech32_not_m_checksum_is_refused():
    # BIP-173's valid bech32 (constant 1) string is not valid bech32m.
    with pytest.raises(ValueError):
        bech32m_decode("a12uel5l")


# --------------------------------------------------------------------------------------
# addresses


def test_address_derivation_and_text_form():
    key = generate_key(bytes(32))
    expected = hashlib.blake2b(b"khazana/address/v1\x00" + key.public_key, digest_size=20)
    assert key.address == address_from_public_key(key.public_key) == expected.digest()
    text = address_to_text(key.address)
    assert text.startswith("kz1") and len(text) == 3 + 32 + 6
    assert text == text.lower()
    assert address_from_text(text) == key.address
    assert address_from_text(text.upper()) == key.address  # BIP-173: all-upper is the same


@settings(max_examples=100)
@given(st.binary(min_size=20, max_size=20))
def test_address_text_round_trip(address):
    assert address_from_text(address_to_text(address)) == address


def bad_address(text):
    with pytest.raises(LedgerError) as info:
        address_from_text(text)
    assert info.value.code is Code.BAD_ADDRESS
    return info.value


def test_every_single_character_typo_is_refused():
    text = address_to_text(generate_key(bytes(32)).address)
    for position in range(3, len(text)):
        for char in crypto._CHARSET:
            if char != text[position]:
                bad_address(text[:position] + char + text[position + 1 :])


def test_adjacent_swaps_are_refused():
    text = address_to_text(generate_key(b"\x05" * 32).address)
    for i in range(3, len(text) - 1):
        if text[i] != text[i + 1]:
            bad_address(text[:i] + text[i + 1] + text[i] + text[i + 2 :])


def test_malformed_address_texts_are_refused():
    text = address_to_text(generate_key(bytes(32)).address)
    bad_address(text[:-1])  # truncated
    bad_address(text + "q")  # extended
    bad_address(text[:5] + text[5].upper() + text[6:])  # mixed case
    bad_address("")
    bad_address(" " + text)
    bad_address(b"kz1".decode() + "b" * 38)  # 'b' is not in the charset
    # Valid bech32m with the wrong prefix or the wrong payload length.
    data = crypto._convert_bits(bytes(20), 8, 5, pad=True)
    bad_address(bech32m_encode("bc", data))
    bad_address(bech32m_encode("kz", crypto._convert_bits(bytes(21), 8, 5, pad=True)))
    bad_address(bech32m_encode("kz", crypto._convert_bits(bytes(19), 8, 5, pad=True)))
    error = bad_address(bech32m_encode("kz", data)[:-1] + "x")
    assert "checksum" in error.message
    bad_address(None)


# --------------------------------------------------------------------------------------
# key files


def test_key_file_round_trip(tmp_path):
    key = generate_key(bytes(range(32)))
    path = tmp_path / "alice.key"
    assert write_key_file(path, key) == address_to_text(key.address)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    document = json.loads(path.read_text())
    assert document == {
        "type": "khazana-ed25519-v1",
        "seed": key.seed.hex(),
        "public_key": key.public_key.hex(),
        "address": address_to_text(key.address),
    }
    assert read_key_file(path) == key
    assert os.listdir(tmp_path) == ["alice.key"]  # no temporary file left behind


def test_key_file_is_never_overwritten(tmp_path):
    path = tmp_path / "k.key"
    write_key_file(path, generate_key(bytes(32)))
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_key_file(path, generate_key(b"\x01" * 32))
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["k.key"]


def test_key_file_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "k.key"
    write_key_file(path, generate_key(bytes(32)))
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        read_key_file(path)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "type"),
        (b'{"type": "other"}', "type"),
        (b'{"type": "khazana-ed25519-v1", "seed": "zz"}', "seed is not a hex"),
        (b'{"type": "khazana-ed25519-v1", "seed": "00"}', "seed is 1 bytes"),
        (b" " * 5000, "larger than"),
    ],
)
def test_bad_key_files_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError, match=message):
        read_key_file(path)


def test_key_file_with_inconsistent_fields_is_refused(tmp_path):
    key, other = generate_key(bytes(32)), generate_key(b"\x01" * 32)
    for field, value in (
        ("public_key", other.public_key.hex()),
        ("address", address_to_text(other.address)),
    ):
        path = tmp_path / f"{field}.key"
        document = {
            "type": "khazana-ed25519-v1",
            "seed": key.seed.hex(),
            "public_key": key.public_key.hex(),
            "address": address_to_text(key.address),
        }
        document[field] = value
        path.write_text(json.dumps(document))
        os.chmod(path, 0o600)
        with pytest.raises(KeyFileError, match=f"{field} does not match"):
            read_key_file(path)


def test_missing_key_file(tmp_path):
    with pytest.raises(KeyFileError, match="cannot open"):
        read_key_file(tmp_path / "absent.key")


# ------------------------------------------------------------------ encrypted key files

FAST = {"opslimit": 1, "memlimit": 8192}  # the library's minimum cost: tests only


def test_an_encrypted_key_file_opens_with_its_passphrase_only(tmp_path):
    key = generate_key(bytes(range(32)))
    path = tmp_path / "sealed.key"
    write_key_file(path, key, passphrase=b"correct horse", **FAST)
    text = path.read_text()
    assert key.seed.hex() not in text and "seed" not in json.loads(text)
    assert is_encrypted_key_file(path)
    assert read_key_file(path, b"correct horse").seed == key.seed
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        read_key_file(path, b"correct horsf")


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["kdf"].__setitem__("opslimit", 2),  # the cost lowered or raised
        lambda d: d.__setitem__("public_key", "11" * 32),  # another key's identity
        lambda d: d["cipher"].__setitem__("ciphertext", "00" + d["cipher"]["ciphertext"][2:]),
        lambda d: d["kdf"].__setitem__("salt", "00" * 16),
    ],
)
def test_an_altered_encrypted_key_file_does_not_open(tmp_path, edit):
    path = tmp_path / "sealed.key"
    write_key_file(path, generate_key(bytes(32)), passphrase=b"pw", **FAST)
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))
    with pytest.raises(KeyFileError):
        read_key_file(path, b"pw")


def test_a_stranger_s_file_cannot_make_the_reader_allocate_gigabytes(tmp_path):
    path = tmp_path / "sealed.key"
    write_key_file(path, generate_key(bytes(32)), passphrase=b"pw", **FAST)
    document = json.loads(path.read_text())
    document["kdf"]["memlimit"] = 64 << 30
    path.write_text(json.dumps(document))
    with pytest.raises(KeyFileError, match="kdf cost out of range"):
        read_key_file(path, b"pw")


def test_the_passphrase_comes_from_the_passphrase_file(tmp_path, monkeypatch):
    path = tmp_path / "sealed.key"
    write_key_file(path, generate_key(bytes(32)), passphrase=b"from a file", **FAST)
    secret = tmp_path / "passphrase"
    secret.write_bytes(b"from a file\n")
    os.chmod(secret, 0o600)
    monkeypatch.setenv("KHAZANA_PASSPHRASE_FILE", str(secret))
    assert read_key_file(path).seed == bytes(32)
    os.chmod(secret, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        read_key_file(path)


def test_without_passphrase_file_or_terminal_an_encrypted_key_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "sealed.key"
    write_key_file(path, generate_key(bytes(32)), passphrase=b"pw", **FAST)
    monkeypatch.delenv("KHAZANA_PASSPHRASE_FILE", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal
    with pytest.raises(KeyFileError, match="is encrypted: set KHAZANA_PASSPHRASE_FILE"):
        read_key_file(path)
