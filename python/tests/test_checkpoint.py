"""`flotilla.load_policy` on checkpoints in the learner's format
(`common/src/checkpoint.rs`); a real learner's checkpoint is played in
test_e2e_cartpole.py."""

import json
import math

import gymnasium.spaces as gs
import numpy as np
import pytest
from safetensors.numpy import save_file

import flotilla
from flotilla.checkpoint import CheckpointError
from flotilla.policy import ModelSpec

CONFIG = """
algo = "ppo"

[env]
id = "{env}"
source = "external"

[model]
hidden_sizes = [2]
activation = "relu"
shared_torso = true
init_log_std = 0.0
"""


def write_checkpoint(path, env, spaces, model, extra_meta=None, drop=()):
    meta = {
        "format": "flotilla-checkpoint-v1",
        "run_id": "r1",
        "version": "12",
        "config": CONFIG.format(env=env),
    }
    if spaces is not None:
        meta["spaces"] = json.dumps(spaces)
    meta.update(extra_meta or {})
    tensors = {f"model/{k}": v for k, v in model.items() if k not in drop}
    # The optimizer's sections are ignored.
    tensors.update({f"adam.m/{k}": np.zeros_like(v) for k, v in model.items()})
    save_file(tensors, str(path), metadata=meta)
    return path


def tiny(act: int, box: bool):
    """obs_dim 2, one shared relu layer of identity weights; head rows
    [1, 0] and [0, 2] (and [1, 1] for a third output)."""
    head = np.array([[1, 0], [0, 2], [1, 1]][:act], np.float32)
    m = {
        "torso.0.weight": np.eye(2, dtype=np.float32),
        "torso.0.bias": np.zeros(2, np.float32),
        "actor.head.weight": head,
        "actor.head.bias": np.zeros(act, np.float32),
        "critic.head.weight": np.array([[1, 1]], np.float32),
        "critic.head.bias": np.array([0.5], np.float32),
    }
    if box:
        m["log_std"] = np.array([0.0, math.log(2.0)][:act], np.float32)
    return m


OBS = {"Box": {"low": [-10.0, None], "high": [10.0, None], "shape": [2]}}


def test_a_discrete_policy_acts_greedily_by_default(tmp_path):
    path = write_checkpoint(
        tmp_path / "c.safetensors", "Two-v0", {"observation": OBS, "action": {"Discrete": {"n": 2}}}, tiny(2, False)
    )
    p = flotilla.load_policy(path)
    assert (p.env_id, p.version, p.run_id, p.obs_dim) == ("Two-v0", 12, "r1", 2)
    assert p.observation_space.high.tolist()[1] == math.inf  # null: unbounded
    assert p.network.model == ModelSpec(hidden_sizes=(2,), activation="relu", shared_torso=True)
    assert p(np.array([3.0, 1.0])) == 0  # logits [3, 2]
    assert p([0.5, 1.0]) == 1  # logits [0.5, 2]
    batch = p(np.array([[3.0, 1.0], [0.5, 1.0], [-1.0, -1.0]]))
    assert batch.dtype == np.int64 and batch.tolist() == [0, 1, 0]
    assert isinstance(p(np.array([3.0, 1.0])), int)
    np.testing.assert_allclose(p.value(np.array([[1.0, 2.0]])), [3.5])
    # Sampling follows the softmax: logits [2, 0] give action 0 with p ~ 0.88.
    sampled = p(np.tile([2.0, 0.0], (4000, 1)), greedy=False)
    assert abs(np.mean(sampled == 0) - math.exp(2) / (math.exp(2) + 1)) < 0.02


def test_a_box_policy_returns_clipped_means(tmp_path):
    action = {"Box": {"low": [-1.0, -1.0], "high": [1.0, 0.5], "shape": [2]}}
    path = write_checkpoint(tmp_path / "c.safetensors", "Box-v0", {"observation": OBS, "action": action}, tiny(2, True))
    p = flotilla.load_policy(path, seed=3)
    np.testing.assert_allclose(p(np.array([0.3, 0.2])), [0.3, 0.4])
    np.testing.assert_allclose(p(np.array([3.0, 2.0])), [1.0, 0.5])  # clipped to the box
    np.testing.assert_allclose(p(np.array([3.0, 2.0]), clip=False), [3.0, 4.0])
    samples = p(np.zeros((3000, 2)), greedy=False, clip=False)
    np.testing.assert_allclose(samples.std(axis=0), [1.0, 2.0], rtol=0.07)
    clipped = p(np.zeros((3000, 2)), greedy=False)
    assert clipped.min() >= -1.0 and clipped[:, 1].max() <= 0.5
    raw = p.act(np.zeros((1, 2), np.float32), greedy=True, with_value=True)
    assert raw.value.tolist() == [0.5]


def test_environment_spaces_convert_observations_and_actions(tmp_path):
    one_hot = {"Box": {"low": [0.0, 0.0], "high": [1.0, 1.0], "shape": [2]}}
    spaces = {"observation": one_hot, "action": {"Discrete": {"n": 3}}}
    path = write_checkpoint(tmp_path / "c.safetensors", "Lake-v0", spaces, tiny(3, False))
    p = flotilla.load_policy(path, observation_space=gs.Discrete(2, start=5), action_space=gs.Discrete(3, start=-1))
    # Observation 5 is one-hot [1, 0]: logits [1, 0, 1] -> action 0 -> env action -1.
    assert p(5) == -1
    # Observation 6 is [0, 1]: logits [0, 2, 1] -> action 1 -> env action 0.
    assert p(6) == 0
    assert p(np.array([5, 6])).tolist() == [-1, 0]
    with pytest.raises(ValueError, match="not the run's"):
        flotilla.load_policy(path, observation_space=gs.Discrete(3))
    with pytest.raises(ValueError, match="not the run's"):
        flotilla.load_policy(path, action_space=gs.Discrete(4))


def test_checkpoints_without_spaces_fall_back_to_the_tensors(tmp_path):
    path = write_checkpoint(tmp_path / "c.safetensors", "Old-v0", None, tiny(2, True))
    p = flotilla.load_policy(path)
    assert p.observation_space.shape == (2,)
    assert p.action_space.shape == (2,) and p.action_space.high.tolist() == [math.inf, math.inf]
    np.testing.assert_allclose(p(np.array([3.0, 2.0])), [3.0, 4.0])  # nothing to clip to


def test_files_that_are_not_checkpoints_are_refused(tmp_path):
    good = {"observation": OBS, "action": {"Discrete": {"n": 2}}}
    cases = [
        (write_checkpoint(tmp_path / "a", "X", good, tiny(2, False), {"format": "other"}), "format"),
        (write_checkpoint(tmp_path / "b", "X", good, tiny(2, False), {"spaces": "{"}), "spaces"),
        (write_checkpoint(tmp_path / "c", "X", good, tiny(2, False), drop=("actor.head.bias",)), "actor.head.bias"),
        (
            write_checkpoint(
                tmp_path / "d",
                "X",
                good,
                tiny(2, False),
                {"config": "[model]\nhidden_sizes = [3]\nshared_torso = true"},
            ),
            "shape",
        ),
    ]
    (tmp_path / "e").write_bytes(b"not a checkpoint")
    cases.append((tmp_path / "e", "safetensors"))
    for path, needle in cases:
        with pytest.raises(CheckpointError, match=needle):
            flotilla.load_policy(path)
    policy = flotilla.load_policy(write_checkpoint(tmp_path / "f", "X", good, tiny(2, False)))
    with pytest.raises(ValueError, match="does not fit"):
        policy(np.zeros(3))
