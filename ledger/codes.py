"""Stable rejection codes and the ledger's error hierarchy.

Every refusal the ledger can give -- a malformed encoding, a bad signature, a compliance
rule -- has one numeric code here and a message that names the values involved. The same
code comes back from `check_tx`, from mempool admission and from execution, because all
three call the same function. Codes are part of the external contract: never renumber one;
add new codes at the end of their range.

Ranges:
    0        accepted
    100-199  encoding and format
    200-299  authorisation: signatures, chain, nonce, roles, approvals
    300-399  compliance and asset rules
    400-499  node admission (mempool, limits) -- used by `node/`
"""

from __future__ import annotations

from enum import IntEnum


class Code(IntEnum):
    OK = 0

    # 1xx encoding and format
    MALFORMED = 100
    TOO_LARGE = 101
    TOO_DEEP = 102
    TRAILING_BYTES = 103
    NON_CANONICAL = 104
    FORBIDDEN_TYPE = 105
    BAD_FIELD = 106
    UNKNOWN_OPERATION = 107
    BAD_ADDRESS = 108

    # 2xx authorisation
    BAD_SIGNATURE = 200
    WRONG_CHAIN = 201
    NONCE_USED = 202
    NONCE_GAP = 203
    MISSING_APPROVALS = 204
    UNAUTHORIZED = 205
    DUPLICATE_TX = 206
    SENDER_NOT_SIGNED = 207
    ACCOUNT_NOT_FOUND = 208
    INSTITUTION_MISMATCH = 209  # a grant names another institution than the account's

    # 3xx compliance and asset rules
    INSTRUMENT_PAUSED = 300
    CLOSED_PERIOD = 301
    ACCOUNT_FROZEN = 302
    INSUFFICIENT_UNFROZEN_BALANCE = 303
    INSUFFICIENT_BALANCE = 304
    KYC_MISSING = 305
    KYC_EXPIRED = 306
    VASP_SUSPENDED = 307
    VASP_NOT_LICENSED = 308
    COUNTRY_NOT_ALLOWED = 309
    CATEGORY_NOT_ALLOWED = 310
    HOLDER_LIMIT = 311
    BALANCE_LIMIT = 312
    INSTRUMENT_CAP = 313
    PROGRAMME_CAP = 314
    RESERVE_STALE = 315
    RESERVE_EXCEEDED = 316
    INSTRUMENT_NOT_FOUND = 317
    INSTRUMENT_EXISTS = 318
    NOT_MATURED = 319
    INSTRUMENT_MATURED = 320
    INVALID_AMOUNT = 321
    COUPON_NOT_DUE = 322
    COUPON_UNPAID = 323
    WRONG_INSTRUMENT_KIND = 324
    RATE_FIXING_MISSING = 325  # a floating coupon whose fixing is not published (version 3)
    RATE_FIXING_EXISTS = 326  # a fixing for that index and date is already published
    NOT_CALLABLE = 327  # a call of a bond without call terms, or already called (version 3)
    CALL_NOTICE_TOO_SHORT = 328  # a call date closer than the bond's notice period
    # An amortisation not scheduled, out of order, already paid, or before its date (v3)
    AMORTISATION_NOT_DUE = 329
    AMORTISATION_UNPAID = 330  # a coupon or redemption before the amortisation due first
    # A part of an amortising bond dated on or after its call date (the call redeems it), or
    # a call for a date whose part is already paid (version 4).
    AMORTISATION_CALLED = 331

    # 4xx node admission
    MEMPOOL_FULL = 400
    TX_TOO_LARGE = 401
    ALREADY_IN_MEMPOOL = 402
    NONCE_TOO_FAR = 403
    SENDER_QUOTA = 404
    VASP_QUOTA = 405
    TX_TOO_COMPLEX = 406
    TOO_MANY_PARKED = 407
    # This very transaction is in a committed block (the node's store says so): final, not
    # to be built again. Answered instead of NONCE_USED (node/rpc/tx_methods.py).
    ALREADY_COMMITTED = 408


class LedgerError(Exception):
    """A refusal with a stable code. Raised at the first broken rule."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(f"{code.name} ({int(code)}): {message}")
        self.code = code
        self.message = message


class DecodeError(LedgerError):
    """Bytes that are not a valid canonical encoding (1xx codes)."""


class InvalidTransaction(LedgerError):
    """A transaction that breaks a rule (2xx and 3xx codes)."""


class InvalidBlock(Exception):
    """A block that must not be accepted: a proposer bug or a hostile proposer."""
