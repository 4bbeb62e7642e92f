"""Our Noise XX implementation against published test vectors.

The vectors in `p2p_noise_vectors.json` are copied verbatim from the cacophony test-vector
file (haskell-cryptography/cacophony, vectors/cacophony.txt, also vendored by the Rust
`snow` library as tests/vectors/cacophony.txt), entry Noise_XX_25519_ChaChaPoly_BLAKE2b.
They fix every key, so every byte each side writes must equal the published ciphertext,
and each side must read the other's bytes back to the published payload.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.p2p.errors import PeerCode, PeerProtocolError
from node.p2p.noise import PROTOCOL_NAME, HandshakeState, blake2b, hkdf, hmac_hash

VECTORS = json.loads((Path(__file__).parent / "p2p_noise_vectors.json").read_text())["vectors"]


def _sides(vector: dict) -> tuple[HandshakeState, HandshakeState]:
    initiator = HandshakeState(
        initiator=True,
        static_private_key=bytes.fromhex(vector["init_static"]),
        prologue=bytes.fromhex(vector["init_prologue"]),
        ephemeral_private_key=bytes.fromhex(vector["init_ephemeral"]),
    )
    responder = HandshakeState(
        initiator=False,
        static_private_key=bytes.fromhex(vector["resp_static"]),
        prologue=bytes.fromhex(vector["resp_prologue"]),
        ephemeral_private_key=bytes.fromhex(vector["resp_ephemeral"]),
    )
    return initiator, responder


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_published_vector_byte_for_byte(vector):
    assert vector["name"] == PROTOCOL_NAME.decode()
    initiator, responder = _sides(vector)
    messages = vector["messages"]
    handshake, transport = messages[:3], messages[3:]
    for index, message in enumerate(handshake):
        writer, reader = (initiator, responder) if index % 2 == 0 else (responder, initiator)
        payload = bytes.fromhex(message["payload"])
        ciphertext = writer.write_message(payload)
        assert ciphertext.hex() == message["ciphertext"], f"handshake message {index}"
        assert reader.read_message(ciphertext) == payload
    assert initiator.finished and responder.finished
    assert initiator.handshake_hash == responder.handshake_hash
    assert initiator.remote_static == responder.static_public_key
    assert responder.remote_static == initiator.static_public_key

    init_send, init_recv = initiator.split()
    resp_send, resp_recv = responder.split()
    for index, message in enumerate(transport):
        # After XX the messages keep alternating; the initiator wrote last, so the
        # responder sends first.
        from_responder = index % 2 == 0
        send, recv = (resp_send, init_recv) if from_responder else (init_send, resp_recv)
        payload = bytes.fromhex(message["payload"])
        ciphertext = send.encrypt_with_ad(b"", payload)
        assert ciphertext.hex() == message["ciphertext"], f"transport message {index}"
        assert recv.decrypt_with_ad(b"", ciphertext) == payload


def test_a_flipped_bit_in_the_vector_fails_authentication():
    # Negative control: the vector test would notice a wrong byte anywhere in message 2.
    vector = VECTORS[0]
    initiator, responder = _sides(vector)
    responder.read_message(initiator.write_message(b""))
    message = bytearray(responder.write_message(b""))
    message[40] ^= 0x01  # inside the encrypted static key
    with pytest.raises(PeerProtocolError) as caught:
        initiator.read_message(bytes(message))
    assert caught.value.code == PeerCode.BAD_MAC


def test_hmac_and_hkdf_follow_rfc_2104_and_section_4_3():
    # Independent HMAC built by hand from RFC 2104 with BLOCKLEN 128.
    key, data = b"k" * 70, b"some data"
    padded = key.ljust(128, b"\x00")
    inner = blake2b(bytes(b ^ 0x36 for b in padded) + data)
    expected = blake2b(bytes(b ^ 0x5C for b in padded) + inner)
    assert hmac_hash(key, data) == expected
    out1, out2, out3 = hkdf(b"ck" * 32, b"ikm", 3)
    temp = hmac_hash(b"ck" * 32, b"ikm")
    assert out1 == hmac_hash(temp, b"\x01")
    assert out2 == hmac_hash(temp, out1 + b"\x02")
    assert out3 == hmac_hash(temp, out2 + b"\x03")


def test_small_order_ephemeral_key_is_refused():
    # An all-zero X25519 key gives an all-zero shared secret anyone can compute.
    vector = VECTORS[0]
    initiator, responder = _sides(vector)
    responder.read_message(initiator.write_message(b""))
    forged = b"\x00" * 32 + responder.write_message(b"")[32:]
    with pytest.raises(PeerProtocolError) as caught:
        initiator.read_message(forged)
    assert caught.value.code == PeerCode.BAD_KEY
