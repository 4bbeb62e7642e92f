"""The signed-transaction envelope."""

from ledger.crypto import generate_key
from ledger.tx import TxBody, decode_signed_tx, sign_tx, verify_tx_signatures


def test_sign_encode_decode_verify():
    key = generate_key(bytes(32))
    body = TxBody("khazana-test", key.address, 0, "transfer", {"amount": 5})
    tx = sign_tx(body, [key])
    decoded = decode_signed_tx(tx.raw)
    assert decoded == tx
    verify_tx_signatures(decoded)
