"""Seeds an actor derives from its run.

Every actor of a run derives its seeds from the run's seed
(`RunSpec.seed`) and its own name, exactly as the Rust actor does
(`common/src/run_spec.rs`, `actor_seed`): the same name gets the same
environment seeds after a reconnect, and different names get unrelated
ones. The derivation is bit-exact across the two implementations, so a
Python and a Rust actor of the same name reset their environments with the
same seeds.
"""

from __future__ import annotations

_U64 = (1 << 64) - 1

_FNV_OFFSET = 0xCBF2_9CE4_8422_2325
_FNV_PRIME = 0x0000_0100_0000_01B3
_GOLDEN = 0x9E37_79B9_7F4A_7C15

#: Mixed into the actor seed to seed the action-sampling stream, so it is
#: independent of the environments' streams (the Rust actor's constant).
SAMPLING_SALT = 0xAC70_12AC_7012


def fnv1a64(data: bytes) -> int:
    """64-bit FNV-1a of `data`."""
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & _U64
    return h


def actor_seed(run_seed: int, actor_name: str) -> int:
    """The seed of the actor called `actor_name` in a run seeded `run_seed`.

    FNV-1a of the name's UTF-8 bytes, mixed with the run seed through the
    splitmix64 finalizer; all arithmetic wraps at 64 bits.
    """
    if not 0 <= run_seed <= _U64:
        raise ValueError(f"run seed must be a u64, got {run_seed}")
    x = ((run_seed * _GOLDEN) & _U64) ^ fnv1a64(actor_name.encode("utf-8"))
    x = ((x ^ (x >> 30)) * 0xBF58_476D_1CE4_E5B9) & _U64
    x = ((x ^ (x >> 27)) * 0x94D0_49BB_1331_11EB) & _U64
    return x ^ (x >> 31)


def env_seeds(seed: int, num_envs: int) -> list[int]:
    """Reset seeds of an actor's environments: `seed + i` for environment
    `i`, wrapping at 64 bits like the Rust `VecEnv`."""
    return [(seed + i) & _U64 for i in range(num_envs)]


def sampling_seed(seed: int) -> int:
    """Seed of the actor's action-sampling stream."""
    return seed ^ SAMPLING_SALT
