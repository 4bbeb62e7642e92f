"""Keys, signatures, hashes and addresses."""

from ledger.crypto import address_from_text, address_to_text, generate_key, verify_signature


def test_sign_verify_and_address_round_trip():
    key = generate_key(bytes(32))
    signature = key.sign(b"message")
    assert verify_signature(key.public_key, b"message", signature)
    assert not verify_signature(key.public_key, b"other", signature)
    assert address_from_text(address_to_text(key.address)) == key.address
