"""The PRF stream: AES-128-CTR known answers, determinism, independence across keys and counters."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from mpcnp import ring

# NIST SP 800-38A, F.5.1 CTR-AES128.Encrypt: keystream = ciphertext XOR plaintext.
SP800_38A_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
SP800_38A_COUNTER = int("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff", 16)
SP800_38A_PLAIN = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172a" "ae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52ef" "f69f2445df4f9b17ad2b417be66c3710")
SP800_38A_CIPHER = bytes.fromhex(
    "874d6191b620e3261bef6864990db6ce" "9806f66b7970fdff8617187bb9fffdff"
    "5ae4df3edbd5d35e5b4f09020db03eab" "1e031dda2fbe03d1792170a0f3009cee")
# FIPS-197 appendix C.1 (AES-128): AES_k(plaintext) is the keystream block of CTR at counter = plaintext.
FIPS197_KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
FIPS197_PLAIN = int("00112233445566778899aabbccddeeff", 16)
FIPS197_CIPHER = bytes.fromhex("69c4e0d86a7b0430d8cdb78070b4c55a")


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def test_sp800_38a_ctr_vectors():
    keystream = ring.prf_keystream(SP800_38A_KEY, SP800_38A_COUNTER, 64)
    assert xor(keystream, SP800_38A_PLAIN) == SP800_38A_CIPHER


def test_fips197_block():
    assert ring.prf_keystream(FIPS197_KEY, FIPS197_PLAIN, 16) == FIPS197_CIPHER


def test_counter_wraps_at_2_128_like_ctr_mode():
    # The last block before the wrap and the first after it, as two separate streams.
    key = bytes(range(16))
    across = ring.prf_keystream(key, (1 << 128) - 1, 32)
    assert across[:16] == ring.prf_keystream(key, (1 << 128) - 1, 16)
    assert across[16:] == ring.prf_keystream(key, 0, 16)


def test_draws_are_a_sequential_stream():
    key = bytes(16)
    whole = ring.PRF(key).bytes(8 * 1000 + 3 + 7 * 13)
    prf = ring.PRF(key)
    parts = prf.uint64(1000).tobytes() + prf.uint8(3).tobytes() + prf.uint8((7, 13)).tobytes()
    assert parts == whole
    assert prf.position == len(whole)


def test_large_draw_spans_chunks_identically():
    key = b"k" * 16
    n = 3 * 256 * 1024 // 8 + 5  # not a whole number of the internal chunks
    one = ring.PRF(key).uint64(n)
    prf = ring.PRF(key)
    pieces = np.concatenate([prf.uint64(1), prf.uint64(n - 1)])
    np.testing.assert_array_equal(one, pieces)


@given(st.binary(min_size=16, max_size=16), st.integers(0, (1 << 128) - 1))
def test_same_key_and_counter_same_values(key, counter):
    a = ring.PRF(key, counter).uint64((3, 5))
    b = ring.PRF(key, counter).uint64((3, 5))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint64 and a.shape == (3, 5)


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16),
       st.integers(0, (1 << 128) - 2))
def test_streams_differ_across_keys_and_counters(key1, key2, counter):
    base = ring.PRF(key1, counter).uint64(4)
    assert not np.array_equal(base, ring.PRF(key1, counter + 1).uint64(4))
    if key1 != key2:
        assert not np.array_equal(base, ring.PRF(key2, counter).uint64(4))


def test_output_looks_uniform():
    # Each of the 64 bit positions of 2^16 draws is set about half the time (6 sigma bounds).
    values = ring.PRF(b"u" * 16).uint64(1 << 16)
    bits = (values[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
    freq = bits.mean(axis=0)
    sigma = 0.5 / np.sqrt(values.size)
    assert np.all(np.abs(freq - 0.5) < 6 * sigma)


def test_integers_mod_p_cover_the_range_uniformly():
    values = ring.PRF(b"p" * 16).integers(67, 67 * 2000, dtype=np.uint8)
    assert values.dtype == np.uint8 and values.max() < 67
    counts = np.bincount(values, minlength=67)
    chi2 = ((counts - 2000) ** 2 / 2000).sum()
    assert chi2 < 140  # 66 degrees of freedom: P(chi2 > 140) < 1e-6


@pytest.mark.parametrize("key", [b"short", bytes(17), "a string of 16 b", None])
def test_bad_keys_are_refused(key):
    with pytest.raises(ValueError, match="16 bytes"):
        ring.PRF(key)


def test_bad_counter_and_modulus_are_refused():
    with pytest.raises(ValueError, match="counter"):
        ring.PRF(bytes(16), -1)
    with pytest.raises(ValueError, match="modulus"):
        ring.PRF(bytes(16)).integers(1, 3)


def test_fill_refuses_non_contiguous_output():
    with pytest.raises(ValueError, match="contiguous"):
        ring.PRF(bytes(16)).fill(np.empty((4, 4), np.uint64).T)
