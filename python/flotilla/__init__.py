"""Flotilla for Python: run Gymnasium environments as actors of a Flotilla
learner, and play trained policies from its checkpoints.

* `flotilla-actor` (`flotilla.cli`) connects to a learner, declares its
  environment and streams trajectories to it (see python/README.md).
* `flotilla.load_policy(path)` reads a learner checkpoint and returns a
  callable policy, numpy only.
* `flotilla.actor_seed(run_seed, name)` is the seed an actor of that name
  derives in a run, bit-exact with the Rust actors.
* `flotilla.atari.make_atari_env(id)` builds an Atari game with the standard
  DQN/PPO preprocessing, as `flotilla-actor --atari` does (needs the `atari`
  extra: ale-py and OpenCV).
"""

from .checkpoint import CheckpointError, LoadedPolicy, load_policy
from .policy import ModelSpec, Policy, PolicyError
from .seeds import actor_seed

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "LoadedPolicy",
    "ModelSpec",
    "Policy",
    "PolicyError",
    "actor_seed",
    "load_policy",
    "__version__",
]
