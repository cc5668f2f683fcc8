"""`actor_seed` is bit-exact with the Rust implementation
(`common/src/run_spec.rs`), and environment seeds wrap at 64 bits."""

import pytest

from flotilla.seeds import actor_seed, env_seeds, fnv1a64, sampling_seed


def test_pinned_by_the_rust_implementation():
    # The values the Rust test `an_actor_keeps_its_seed_across_connections_and_names_differ`
    # pins for `actor_seed`.
    assert actor_seed(1, "local-0") == 0x4D2B_C375_C091_31C3
    assert actor_seed(0, "") == 0xF52A_15E9_A9B5_E89B


def test_pinned_values_across_the_input_range():
    # Computed with this implementation from the FNV-1a and splitmix64
    # definitions; any change to the derivation shows up here. They cover
    # u64 wrap-around of the run seed and a non-ASCII (UTF-8) name.
    assert actor_seed(42, "a") == 0xDF36_8A75_D311_7DC0
    assert actor_seed(42, "b") == 0xFF9E_DDC1_6E4D_FA9D
    assert actor_seed(2**64 - 1, "actor-α") == 0x599A_5CC0_DE37_EA89
    assert actor_seed(7, "host-1234") == 0x6946_FC61_D4B1_BAD5
    assert actor_seed(123456789, "python-0") == 0xFC00_7065_33A3_8009


def test_fnv1a_reference_vectors():
    # The published FNV-1a 64-bit test vectors.
    assert fnv1a64(b"") == 0xCBF2_9CE4_8422_2325
    assert fnv1a64(b"a") == 0xAF63_DC4C_8601_EC8C
    assert fnv1a64(b"foobar") == 0x8594_4171_F739_67E8


def test_same_name_same_seed_and_names_differ():
    assert actor_seed(5, "x") == actor_seed(5, "x")
    assert actor_seed(5, "x") != actor_seed(5, "y")
    assert actor_seed(5, "x") != actor_seed(6, "x")
    assert 0 <= actor_seed(2**64 - 1, "z") < 2**64
    with pytest.raises(ValueError):
        actor_seed(-1, "x")
    with pytest.raises(ValueError):
        actor_seed(2**64, "x")


def test_env_seeds_wrap_like_the_rust_vec_env():
    assert env_seeds(10, 3) == [10, 11, 12]
    assert env_seeds(2**64 - 2, 4) == [2**64 - 2, 2**64 - 1, 0, 1]
    assert sampling_seed(0) == 0xAC70_12AC_7012
