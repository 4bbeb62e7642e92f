"""The state commitment: root = f(key/value set), proofs, and a verifier that cannot be fooled.

Expected hashes are recomputed here with hashlib from the rules in the module docstring (and
docs/PROTOCOL.md), never with the module's own helpers.
"""

from __future__ import annotations

import hashlib
import itertools

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.commitment import (
    EMPTY_ROOT,
    MAX_DEPTH,
    TERMINAL_EMPTY,
    TERMINAL_LEAF,
    TERMINAL_OTHER_LEAF,
    Proof,
    ProofLevel,
    StateTree,
    verify_proof,
)


def blake(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def first_nibble(key: bytes) -> int:
    return blake(key)[0] >> 4


def expected_leaf(key: bytes, value: bytes) -> bytes:
    return blake(b"\x00" + blake(key) + blake(value))


def expected_internal(children: dict[int, bytes]) -> bytes:
    bitmap = sum(1 << nibble for nibble in children)
    body = b"".join(children[nibble] for nibble in sorted(children))
    return blake(b"\x01" + bitmap.to_bytes(2, "big") + body)


def keys_by_first_nibble() -> dict[int, list[bytes]]:
    found: dict[int, list[bytes]] = {}
    for index in range(400):
        key = b"k%d" % index
        found.setdefault(first_nibble(key), []).append(key)
    return found


# --- hand-computed vectors -------------------------------------------------------------------


def test_empty_tree_root_is_32_zero_bytes():
    assert StateTree().root == bytes(32) == EMPTY_ROOT
    assert StateTree.from_items([]).root == bytes(32)


def test_one_key_root_is_its_leaf_hash():
    tree = StateTree()
    root = tree.apply({b"acct/alice": b"balance=10"})
    assert root == blake(b"\x00" + blake(b"acct/alice") + blake(b"balance=10"))
    assert tree.root == root


def test_two_keys_in_different_slots():
    by_nibble = keys_by_first_nibble()
    low, high = sorted(by_nibble)[:2]
    key_a, key_b = by_nibble[high][0], by_nibble[low][0]  # inserted out of nibble order
    tree = StateTree()
    tree.apply({key_a: b"A", key_b: b"B"})
    bitmap = (1 << low) | (1 << high)
    expected = blake(
        b"\x01"
        + bitmap.to_bytes(2, "big")
        + expected_leaf(key_b, b"B")
        + expected_leaf(key_a, b"A")
    )
    assert tree.root == expected


def test_two_keys_sharing_the_first_nibble_hang_below_a_one_child_node():
    # A subtree with >= 2 entries is always an internal node, even with a single child slot.
    key_a, key_b = next(
        (a, b)
        for keys in keys_by_first_nibble().values()
        for a, b in itertools.combinations(keys, 2)
        if blake(a)[0] & 15 != blake(b)[0] & 15
    )
    nibble = first_nibble(key_a)
    second_a, second_b = blake(key_a)[0] & 15, blake(key_b)[0] & 15
    tree = StateTree()
    tree.apply({key_a: b"1", key_b: b"2"})
    inner = expected_internal(
        {second_a: expected_leaf(key_a, b"1"), second_b: expected_leaf(key_b, b"2")}
    )
    assert tree.root == blake(b"\x01" + (1 << nibble).to_bytes(2, "big") + inner)
    # Delete one: the survivor is the whole tree again, a bare leaf.
    tree.apply({key_b: None})
    assert tree.root == expected_leaf(key_a, b"1")


def test_hash_is_ledger_crypto_hash256():
    crypto = pytest.importorskip("ledger.crypto")
    tree = StateTree()
    tree.apply({b"k": b"v"})
    assert tree.root == crypto.hash256(b"\x00" + crypto.hash256(b"k") + crypto.hash256(b"v"))


def test_a_proof_reads_as_documented():
    by_nibble = keys_by_first_nibble()
    nibbles = sorted(by_nibble)[:3]
    keys = [by_nibble[n][0] for n in nibbles]
    tree = StateTree()
    tree.apply({key: key.upper() for key in keys})
    proof = tree.prove(keys[1])
    bitmap = sum(1 << n for n in nibbles)
    siblings = (expected_leaf(keys[0], keys[0].upper()), expected_leaf(keys[2], keys[2].upper()))
    assert proof == Proof((ProofLevel(bitmap, siblings),), TERMINAL_LEAF)
    assert proof.to_obj() == [[[bitmap, list(siblings)]], [TERMINAL_LEAF]]
    # An absent key whose first nibble is free: an empty slot under the same root.
    free = next(n for n in range(16) if n not in nibbles)
    absent = by_nibble[free][0]
    exclusion = tree.prove(absent)
    assert exclusion.terminal == TERMINAL_EMPTY
    assert exclusion.levels[0].siblings == tuple(expected_leaf(k, k.upper()) for k in keys)
    assert verify_proof(tree.root, absent, None, exclusion)
    # An absent key landing on another key's leaf: that leaf is shown.
    other = by_nibble[nibbles[0]][1]
    diverging = tree.prove(other)
    assert diverging.terminal == TERMINAL_OTHER_LEAF
    assert (diverging.other_path, diverging.other_value_hash) == (
        blake(keys[0]),
        blake(keys[0].upper()),
    )
    assert verify_proof(tree.root, other, None, diverging)


# The vectors given in docs/PROTOCOL.md, section "State commitment" (the two-key root is also
# recomputed from the rules here, so a change to either side is caught).
ROOT_ALICE = "e789fdefdebd56b19c3b07623115e1a681c9ba1973c3e9d212b11dc5249f48f0"
ROOT_ALICE_BOB = "d022c34df693acd7b9f0097c8efbd5d17e6cb80a40e5b5062923ea4d6f2667aa"
PROOF_ALICE = (
    "929192cd410091c420b88aff24ce8e37d921f8ceb173d284f4458df9d2db74a8b7a3797e953f15d3a79100"
)
PROOF_CAROL_ABSENT = (
    "929192cd410092c420b88aff24ce8e37d921f8ceb173d284f4458df9d2db74a8b7a3797e953f15d3a7c420"
    "e789fdefdebd56b19c3b07623115e1a681c9ba1973c3e9d212b11dc5249f48f09101"
)


def test_protocol_vectors():
    tree = StateTree()
    assert tree.apply({b"alice": b"10"}).hex() == ROOT_ALICE
    assert tree.apply({b"bob": b"20"}).hex() == ROOT_ALICE_BOB
    # alice's path starts with nibble 0xe, bob's with 0x8: one root node, bitmap bits 8 and 14.
    assert (blake(b"alice")[0] >> 4, blake(b"bob")[0] >> 4) == (14, 8)
    expected = expected_internal(
        {14: expected_leaf(b"alice", b"10"), 8: expected_leaf(b"bob", b"20")}
    )
    assert expected.hex() == ROOT_ALICE_BOB
    root = bytes.fromhex(ROOT_ALICE_BOB)
    assert tree.prove(b"alice").to_bytes().hex() == PROOF_ALICE
    assert verify_proof(root, b"alice", b"10", bytes.fromhex(PROOF_ALICE))
    assert tree.prove(b"carol").to_bytes().hex() == PROOF_CAROL_ABSENT
    assert verify_proof(root, b"carol", None, bytes.fromhex(PROOF_CAROL_ABSENT))


# --- the root is a function of the set ----------------------------------------------------

keys_st = st.binary(min_size=0, max_size=6)
values_st = st.binary(min_size=0, max_size=8)
states_st = st.dictionaries(keys_st, values_st, max_size=60)


@settings(max_examples=60)
@given(state=states_st, data=st.data())
def test_root_does_not_depend_on_order_or_batching(state, data):
    expected = StateTree.from_items(state.items()).root
    keys = data.draw(st.permutations(sorted(state)))
    cuts = sorted(data.draw(st.sets(st.integers(0, len(keys)), max_size=6)))
    tree = StateTree()
    for start, end in itertools.pairwise([0, *cuts, len(keys)]):
        tree.apply({key: state[key] for key in keys[start:end]})
    assert tree.root == expected
    assert len(tree) == len(state)


@settings(max_examples=60)
@given(
    initial=states_st,
    batches=st.lists(st.dictionaries(keys_st, st.none() | values_st, max_size=20), max_size=8),
)
def test_any_sequence_of_batches_matches_a_fresh_build_of_the_final_state(initial, batches):
    tree = StateTree.from_items(initial.items())
    model = dict(initial)
    for batch in batches:
        root = tree.apply(batch)
        for key, value in batch.items():
            if value is None:
                model.pop(key, None)
            else:
                model[key] = value
        assert root == tree.root == StateTree.from_items(model.items()).root
    assert len(tree) == len(model)
    if not model:
        assert tree.root == EMPTY_ROOT


@settings(max_examples=60)
@given(state=states_st, new=st.dictionaries(keys_st, values_st, min_size=1, max_size=20))
def test_insert_then_delete_returns_the_previous_root(state, new):
    new = {key: value for key, value in new.items() if key not in state}
    tree = StateTree.from_items(state.items())
    before = tree.root
    tree.apply(new)
    assert new == {} or tree.root != before
    tree.apply(dict.fromkeys(new))
    assert tree.root == before
    # Also one at a time, in reverse order, which collapses nodes one by one.
    for key, value in new.items():
        tree.apply({key: value})
    for key in reversed(list(new)):
        tree.apply({key: None})
    assert tree.root == before


def test_large_batches_cross_the_binary_search_threshold():
    # Batches of thousands of keys take the bisect path at the top levels; the result must be
    # the same as building from the final set.
    state = {b"acct/%d" % i: b"v%d" % i for i in range(3000)}
    tree = StateTree.from_items(state.items())
    changes: dict[bytes, bytes | None] = {b"acct/%d" % i: None for i in range(0, 3000, 3)}
    changes.update({b"acct/%d" % i: b"w%d" % i for i in range(1, 3000, 3)})
    changes.update({b"new/%d" % i: b"n" for i in range(1000)})
    tree.apply(changes)
    for key, value in changes.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    assert tree.root == StateTree.from_items(reversed(list(state.items()))).root
    assert len(tree) == len(state)


def test_unchanged_batches_keep_the_root():
    tree = StateTree.from_items([(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
    before = tree.root
    assert tree.apply({}) == before
    assert tree.apply({b"a": b"1"}) == before  # same value rewritten
    assert tree.apply({b"absent": None}) == before  # deleting an absent key


def test_bad_batches_are_refused_before_anything_changes():
    tree = StateTree.from_items([(b"a", b"1")])
    before = tree.root
    with pytest.raises(TypeError):
        tree.apply({b"b": b"2", b"c": "text"})
    with pytest.raises(TypeError):
        tree.apply({b"b": b"2", "c": b"3"})
    with pytest.raises(TypeError):
        tree.apply({b"b": 5})
    assert tree.root == before and len(tree) == 1
    with pytest.raises(TypeError):
        tree.prove("a")


def test_from_items_refuses_a_key_given_twice():
    with pytest.raises(ValueError, match="duplicate"):
        StateTree.from_items([(b"a", b"1"), (b"b", b"2"), (b"a", b"3")])


# --- proofs --------------------------------------------------------------------------------


@settings(max_examples=60)
@given(state=states_st, probes=st.lists(keys_st, max_size=10))
def test_proofs_verify_for_present_and_absent_keys(state, probes):
    tree = StateTree.from_items(state.items())
    for key in [*state, *probes]:
        proof = tree.prove(key)
        value = state.get(key)
        assert proof.is_inclusion == (value is not None)
        assert verify_proof(tree.root, key, value, proof)
        assert verify_proof(tree.root, key, value, proof.to_obj())
        assert verify_proof(tree.root, key, value, proof.to_bytes())
        assert Proof.from_obj(msgpack.unpackb(msgpack.packb(proof.to_obj()))) == proof
        assert Proof.from_bytes(proof.to_bytes()) == proof
        # The claim must be the truth: any other value, or absence, is refused.
        assert not verify_proof(tree.root, key, (value or b"") + b"x", proof)
        if value is not None:
            assert not verify_proof(tree.root, key, None, proof)


def flip_bit(data: bytes, bit: int) -> bytes:
    bit %= 8 * len(data)
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def tampered_proofs(proof: Proof, bit: int):
    """Every single-fault variant of `proof`, each labelled."""
    levels = list(proof.levels)
    for index, level in enumerate(levels):
        for position, sibling in enumerate(level.siblings):
            siblings = list(level.siblings)
            siblings[position] = flip_bit(sibling, bit)
            changed = [
                *levels[:index],
                ProofLevel(level.bitmap, tuple(siblings)),
                *levels[index + 1 :],
            ]
            yield f"sibling {index}/{position}", Proof(tuple(changed), *_terminal(proof))
        for bitmap_bit in range(16):
            bitmap = level.bitmap ^ (1 << bitmap_bit)
            changed = [*levels[:index], ProofLevel(bitmap, level.siblings), *levels[index + 1 :]]
            yield f"bitmap {index} bit {bitmap_bit}", Proof(tuple(changed), *_terminal(proof))
        yield (
            f"drop level {index}",
            Proof(tuple(levels[:index] + levels[index + 1 :]), *_terminal(proof)),
        )
        if level.siblings:
            fewer = ProofLevel(level.bitmap, level.siblings[1:])
            changed = [*levels[:index], fewer, *levels[index + 1 :]]
            yield f"drop a sibling at {index}", Proof(tuple(changed), *_terminal(proof))
    extra = ProofLevel(0b11, (bytes(32),))
    for index in range(len(levels) + 1):
        changed = [*levels[:index], extra, *levels[index:]]
        yield f"add level at {index}", Proof(tuple(changed), *_terminal(proof))
    if levels:
        yield "duplicate level", Proof((levels[0], *levels), *_terminal(proof))
    for kind in (TERMINAL_LEAF, TERMINAL_EMPTY, TERMINAL_OTHER_LEAF):
        if kind != proof.terminal:
            other = (bytes(32), bytes(32)) if kind == TERMINAL_OTHER_LEAF else (None, None)
            yield f"terminal {kind}", Proof(proof.levels, kind, *other)
    if proof.terminal == TERMINAL_OTHER_LEAF:
        yield (
            "other path",
            Proof(
                proof.levels,
                proof.terminal,
                flip_bit(proof.other_path, bit),
                proof.other_value_hash,
            ),
        )
        yield (
            "other value",
            Proof(
                proof.levels,
                proof.terminal,
                proof.other_path,
                flip_bit(proof.other_value_hash, bit),
            ),
        )


def _terminal(proof: Proof) -> tuple:
    return proof.terminal, proof.other_path, proof.other_value_hash


@settings(max_examples=40)
@given(
    state=st.dictionaries(keys_st, values_st, min_size=1, max_size=80),
    probe=keys_st,
    bit=st.integers(0, 255),
    present=st.booleans(),
)
def test_any_tampering_makes_verification_fail(state, probe, bit, present):
    tree = StateTree.from_items(state.items())
    key = sorted(state)[bit % len(state)] if present else probe
    value = state.get(key)
    proof = tree.prove(key)
    root = tree.root
    assert verify_proof(root, key, value, proof)
    assert not verify_proof(flip_bit(root, bit), key, value, proof), "root"
    if value is not None:
        # (An exclusion proof legitimately covers every absent key that falls into the same
        # empty slot or onto the same other leaf, so only inclusion is tested with a new key.)
        tampered_key = flip_bit(key, bit) if key else b"\x00"
        assert not verify_proof(root, tampered_key, value, proof), "key"
        assert not verify_proof(root, key, flip_bit(value, bit) if value else b"\x00", proof), (
            "value"
        )
    for label, bad in tampered_proofs(proof, bit):
        assert not verify_proof(root, key, value, bad), label
        assert not verify_proof(root, key, value, bad.to_obj()), label


def test_exclusion_cannot_be_claimed_for_a_present_key():
    state = {b"k%d" % i: b"v" for i in range(50)}
    tree = StateTree.from_items(state.items())
    for key in state:
        proof = tree.prove(key)
        # Reuse the levels with an exclusion terminal: an empty slot or a forged other leaf.
        assert not verify_proof(tree.root, key, None, Proof(proof.levels, TERMINAL_EMPTY))
        forged = Proof(proof.levels, TERMINAL_OTHER_LEAF, blake(key), blake(b"v"))
        assert not verify_proof(tree.root, key, None, forged)


def test_exclusion_of_an_other_leaf_must_sit_on_the_key_path():
    state = {b"k%d" % i: b"v%d" % i for i in range(40)}
    tree = StateTree.from_items(state.items())
    absent = next(
        b"x%d" % i
        for i in itertools.count()
        if tree.prove(b"x%d" % i).terminal == TERMINAL_OTHER_LEAF
    )
    proof = tree.prove(absent)
    assert verify_proof(tree.root, absent, None, proof)
    # The same leaf and levels do not prove the absence of a key on another path.
    elsewhere = next(
        b"y%d" % i for i in itertools.count() if first_nibble(b"y%d" % i) != first_nibble(absent)
    )
    assert not verify_proof(tree.root, elsewhere, None, proof)


def test_the_verifier_checks_shape_not_only_hashes():
    # Roots over hand-made, non-canonical nodes that no honest tree contains. Each proof
    # hashes up to its root exactly; only the verifier's shape rules refuse it. (With an honest
    # root these rules are backed by collision resistance; here they are the only defence.)
    key = b"k"
    nibble = first_nibble(key)
    other = (nibble + 1) % 16
    leaf = expected_leaf(key, b"v")
    filler = blake(b"filler")

    # A bitmap without the key's slot, yet the key's leaf among the children (in nibble order).
    bitmap = 1 << other
    children = leaf + filler if nibble < other else filler + leaf
    root = blake(b"\x01" + bitmap.to_bytes(2, "big") + children)
    bad = Proof((ProofLevel(bitmap, (filler,)),), TERMINAL_LEAF)
    assert not verify_proof(root, key, b"v", bad)

    # More children hashed than the bitmap has bits.
    bitmap = (1 << nibble) | (1 << other)
    children = [leaf, filler, filler] if nibble < other else [filler, leaf, filler]
    root = blake(b"\x01" + bitmap.to_bytes(2, "big") + b"".join(children))
    bad = Proof((ProofLevel(bitmap, (filler, filler)),), TERMINAL_LEAF)
    assert not verify_proof(root, key, b"v", bad)

    # Another leaf shown as the key's slot although its path does not lead there.
    off_path = next(
        blake(b"p%d" % i) for i in itertools.count() if blake(b"p%d" % i)[0] >> 4 != nibble
    )
    root = blake(
        b"\x01" + (1 << nibble).to_bytes(2, "big") + blake(b"\x00" + off_path + blake(b"w"))
    )
    bad = Proof((ProofLevel(1 << nibble, ()),), TERMINAL_OTHER_LEAF, off_path, blake(b"w"))
    assert not verify_proof(root, key, None, bad)


def test_empty_tree_proves_only_absence():
    tree = StateTree()
    proof = tree.prove(b"anything")
    assert proof == Proof((), TERMINAL_EMPTY)
    assert verify_proof(EMPTY_ROOT, b"anything", None, proof)
    assert not verify_proof(EMPTY_ROOT, b"anything", b"", Proof((), TERMINAL_LEAF))
    assert not verify_proof(blake(b"x"), b"anything", None, proof)


def test_bad_arguments_to_the_verifier_are_false_not_errors():
    tree = StateTree.from_items([(b"a", b"1"), (b"b", b"2")])
    proof = tree.prove(b"a")
    assert verify_proof(tree.root, b"a", b"1", proof)
    for root, key, value in [
        (tree.root[:31], b"a", b"1"),
        (tree.root.hex(), b"a", b"1"),
        (tree.root, "a", b"1"),
        (tree.root, b"a", "1"),
        (tree.root, b"a", 1),
        (None, b"a", b"1"),
    ]:
        assert verify_proof(root, key, value, proof) is False


# --- hostile proofs --------------------------------------------------------------------------

garbage_st = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.binary(max_size=40)
    | st.sampled_from([bytes(32), b"\xff" * 32])
    | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=2), inner, max_size=3)
    ),
    max_leaves=40,
)


@settings(max_examples=300)
@given(garbage=garbage_st, value=st.none() | st.binary(max_size=4))
def test_garbage_proofs_never_raise(garbage, value):
    # Two keys: a valid proof for b"a" needs b"b"'s leaf hash, which garbage cannot contain.
    root = StateTree.from_items([(b"a", b"1"), (b"b", b"2")]).root
    assert verify_proof(root, b"a", value, garbage) is False
    try:
        Proof.from_obj(garbage)
    except ValueError:
        pass


@settings(max_examples=300)
@given(data=st.binary(max_size=200))
def test_garbage_proof_bytes_never_raise(data):
    assert verify_proof(EMPTY_ROOT, b"a", b"1", data) is False
    try:
        Proof.from_bytes(data)
    except ValueError:
        pass


@settings(max_examples=200)
@given(
    levels=st.lists(
        st.tuples(
            st.integers(-2, 70000),
            st.lists(st.sampled_from([bytes(32), b"\x01" * 32, b"", b"x"]), max_size=17),
        ),
        max_size=5,
    ),
    terminal=st.lists(st.integers(-1, 3) | st.binary(max_size=33), max_size=4),
)
def test_near_miss_shapes_are_refused_cleanly(levels, terminal):
    obj = [[list(level) for level in levels], terminal]
    root = StateTree.from_items([(b"a", b"1"), (b"b", b"2")]).root
    for value in (None, b"1"):
        assert verify_proof(root, b"a", value, obj) is False
        hand_made = Proof(
            tuple(ProofLevel(b, tuple(s)) for b, s in levels), *(terminal + [None] * 3)[:3]
        )
        assert verify_proof(root, b"a", value, hand_made) is False
    try:
        Proof.from_obj(obj)
    except ValueError:
        pass


@pytest.mark.parametrize(
    "obj",
    [
        None,
        b"",
        [],
        [[], []],
        [[], [3]],
        [[], [0, b"x"]],
        [[], [2, bytes(32)]],
        [[], [2, bytes(32), bytes(31)]],
        [[], [True]],
        [[[0, []]], [1]],
        [[[1 << 16, []]], [1]],
        [[[True, []]], [1]],
        [[[0b11, [bytes(32), bytes(32), bytes(32)]]], [1]],
        [[[0b111, [bytes(32)]]], [1]],
        [[[0b1, [bytes(31)]]], [1]],
        [[[0b1, (bytearray(32),)]], [1]],
        [[[0b1, []]] * (MAX_DEPTH + 1), [1]],
        {"levels": [], "terminal": [1]},
    ],
)
def test_from_obj_refuses_malformed_shapes(obj):
    with pytest.raises(ValueError):
        Proof.from_obj(obj)
    assert verify_proof(EMPTY_ROOT, b"k", None, obj) is False
