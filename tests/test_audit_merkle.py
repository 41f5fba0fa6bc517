"""RFC 9162 Merkle tree: published vectors (transparency-dev/merkle test data) and properties."""

import hashlib
import random

import pytest

from phigate.audit import merkle

# Test data from transparency-dev/merkle testonly/constants.go and proof/verify_test.go.
LEAF_INPUTS = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
)]
ROOTS = [bytes.fromhex(h) for h in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]
# (0-based leaf index, tree size, audit path)
INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
CONSISTENCY = [
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]
LEAVES = [merkle.leaf_hash(d) for d in LEAF_INPUTS]


def reference_root(leaves):
    """MTH straight from the RFC's recursive definition, as an independent check."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + reference_root(leaves[:k]) + reference_root(leaves[k:])).digest()


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8 % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


@pytest.mark.parametrize("size", range(9))
def test_roots_match_published_vectors(size):
    assert merkle.root(LEAVES[:size]) == ROOTS[size]
    tree = merkle.CompactRange()
    for leaf in LEAVES[:size]:
        tree.append(leaf)
    assert tree.root() == ROOTS[size]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_inclusion_vectors(index, size, path):
    expected = [bytes.fromhex(h) for h in path]
    assert merkle.inclusion_proof(index, LEAVES[:size]) == expected
    assert merkle.verify_inclusion(index, size, LEAVES[index], expected, ROOTS[size])
    assert not merkle.verify_inclusion(index ^ 1, size, LEAVES[index], expected, ROOTS[size])
    assert not merkle.verify_inclusion(index, size * 2, LEAVES[index], expected, ROOTS[size])
    assert not merkle.verify_inclusion(index, size, LEAVES[index], expected[:-1], ROOTS[size])
    assert not merkle.verify_inclusion(index, size, LEAVES[index], [*expected, ROOTS[size]], ROOTS[size])


@pytest.mark.parametrize(("first", "second", "path"), CONSISTENCY)
def test_consistency_vectors(first, second, path):
    expected = [bytes.fromhex(h) for h in path]
    assert merkle.consistency_proof(first, LEAVES[:second]) == expected
    assert merkle.verify_consistency(first, second, ROOTS[first], ROOTS[second], expected)
    assert not merkle.verify_consistency(first, second, ROOTS[second], ROOTS[first], expected)
    assert not merkle.verify_consistency(first + 1, second, ROOTS[first], ROOTS[second], expected)
    assert not merkle.verify_consistency(first, second, ROOTS[first], ROOTS[second], expected[:-1])
    assert not merkle.verify_consistency(first, second, ROOTS[first], ROOTS[second], [])


def test_trivial_consistency_cases():
    a, b = ROOTS[3], ROOTS[4]
    assert merkle.verify_consistency(0, 0, a, a, [])
    assert not merkle.verify_consistency(0, 0, a, b, [])
    assert merkle.verify_consistency(0, 5, a, b, [])
    assert merkle.verify_consistency(3, 3, a, a, [])
    assert not merkle.verify_consistency(3, 3, a, a, [a])
    assert not merkle.verify_consistency(4, 3, a, b, [a])


def test_single_leaf_and_out_of_range():
    leaf = merkle.leaf_hash(b"data")
    assert merkle.verify_inclusion(0, 1, leaf, [], leaf)
    assert not merkle.verify_inclusion(1, 1, leaf, [], leaf)
    assert not merkle.verify_inclusion(0, 0, leaf, [], leaf)
    with pytest.raises(IndexError):
        merkle.inclusion_proof(3, LEAVES[:3])


def test_random_trees_every_proof_verifies_and_a_flipped_bit_fails():
    rng = random.Random(9162)
    for size in [*range(1, 34), *rng.sample(range(34, 300), 6)]:
        leaves = [merkle.leaf_hash(rng.randbytes(rng.randrange(0, 40))) for _ in range(size)]
        root = merkle.root(leaves)
        assert root == reference_root(leaves)
        for index in range(size):
            proof = merkle.inclusion_proof(index, leaves)
            assert merkle.verify_inclusion(index, size, leaves[index], proof, root)
            bit = rng.randrange(256)
            assert not merkle.verify_inclusion(index, size, flip(leaves[index], bit), proof, root)
            assert not merkle.verify_inclusion(index, size, leaves[index], proof, flip(root, bit))
            if proof:
                j = rng.randrange(len(proof))
                broken = [*proof[:j], flip(proof[j], bit), *proof[j + 1 :]]
                assert not merkle.verify_inclusion(index, size, leaves[index], broken, root)
        for m in range(1, size):
            old = reference_root(leaves[:m])
            proof = merkle.consistency_proof(m, leaves)
            assert merkle.verify_consistency(m, size, old, root, proof)
            bit = rng.randrange(256)
            assert not merkle.verify_consistency(m, size, flip(old, bit), root, proof)
            j = rng.randrange(len(proof))
            broken = [*proof[:j], flip(proof[j], bit), *proof[j + 1 :]]
            assert not merkle.verify_consistency(m, size, old, root, broken)


def test_compact_range_round_trips_through_bytes():
    tree = merkle.CompactRange()
    for leaf in LEAVES[:7]:
        tree.append(leaf)
    again = merkle.CompactRange.from_bytes(7, tree.to_bytes())
    again.append(LEAVES[7])
    assert again.root() == ROOTS[8]
    with pytest.raises(ValueError):
        merkle.CompactRange(6, tree.hashes)
