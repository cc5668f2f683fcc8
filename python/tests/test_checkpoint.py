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


OBS = {"Box": {"low": [-10.0, "-inf"], "high": [10.0, "inf"], "shape": [2]}}


def test_a_discrete_policy_acts_greedily_by_default(tmp_path):
    path = write_checkpoint(
        tmp_path / "c.safetensors", "Two-v0", {"observation": OBS, "action": {"Discrete": {"n": 2}}}, tiny(2, False)
    )
    p = flotilla.load_policy(path)
    assert (p.env_id, p.version, p.run_id, p.obs_dim) == ("Two-v0", 12, "r1", 2)
    assert p.observation_space.high.tolist()[1] == math.inf  # "inf": unbounded
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


def test_a_pixel_runs_checkpoint_plays_its_bytes(tmp_path):
    """A run of uint8 observations records its space with `"dtype": "uint8"`
    (the learner's JSON): it loads, and plays uint8 observations as their
    values, with or without the environment's spaces."""
    pixels = {"Box": {"low": [0.0, 0.0], "high": [255.0, 255.0], "shape": [2], "dtype": "uint8"}}
    path = write_checkpoint(
        tmp_path / "c.safetensors", "Pix-v0", {"observation": pixels, "action": {"Discrete": {"n": 2}}}, tiny(2, False)
    )
    p = flotilla.load_policy(path)
    assert p.observation_space.dtype == "uint8" and repr(p.observation_space) == "Box(shape=[2], uint8)"
    assert "Box(shape=[2], uint8)" in repr(p)
    frames = np.array([[200, 90], [100, 60], [3, 2]], np.uint8)
    # logits [200, 180], [100, 120], [3, 4]: the values, not wrapped bytes
    assert p(frames).tolist() == [0, 1, 1] and p(frames[0]) == 0
    np.testing.assert_allclose(p.value(frames[:1]), [290.5])
    gym = flotilla.load_policy(path, observation_space=gs.Box(0, 255, (2,), np.uint8))
    assert gym(frames).tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="not the run's"):
        flotilla.load_policy(path, observation_space=gs.Box(0, 15, (2,), np.uint8))
    # A pixel environment also plays a run from before uint8 observations
    # (declared float32, same shape and bounds): the dtype is how they
    # travelled, not what the policy computes.
    old = {"Box": {k: v for k, v in pixels["Box"].items() if k != "dtype"}}
    path = write_checkpoint(
        tmp_path / "old.safetensors", "Pix-v0", {"observation": old, "action": {"Discrete": {"n": 2}}}, tiny(2, False)
    )
    p = flotilla.load_policy(path, observation_space=gs.Box(0, 255, (2,), np.uint8))
    assert p.observation_space.dtype == "float32" and p(frames).tolist() == [0, 1, 1]


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


def scalar_model():
    """obs_dim 1, one Box action: the mean is the observation itself
    (relu(x) - relu(-x)), the value |x|."""
    return {
        "torso.0.weight": np.array([[1.0], [-1.0]], np.float32),
        "torso.0.bias": np.zeros(2, np.float32),
        "actor.head.weight": np.array([[1.0, -1.0]], np.float32),
        "actor.head.bias": np.zeros(1, np.float32),
        "critic.head.weight": np.array([[1.0, 1.0]], np.float32),
        "critic.head.bias": np.zeros(1, np.float32),
        "log_std": np.zeros(1, np.float32),
    }


SCALAR_SPACES = {
    # What an actor declares for Box((), ...) spaces: shape [1].
    "observation": {"Box": {"low": [-1.0], "high": [1.0], "shape": [1]}},
    "action": {"Box": {"low": [-0.1], "high": [0.1], "shape": [1]}},
}


def test_scalar_observations_one_or_a_batch(tmp_path):
    path = write_checkpoint(tmp_path / "c.safetensors", "Scalar-v0", SCALAR_SPACES, scalar_model())
    p = flotilla.load_policy(path)
    np.testing.assert_allclose(p(0.05), [0.05])  # one scalar
    np.testing.assert_allclose(p(np.float64(-0.5)), [np.float32(-0.1)])
    np.testing.assert_allclose(p(np.array([0.05])), [0.05])  # one observation of the declared shape
    batch = p(np.array([0.05, -0.02, 3.0]))  # a batch of scalars
    assert batch.shape == (3, 1)
    np.testing.assert_allclose(batch[:, 0], [0.05, -0.02, np.float32(0.1)])
    np.testing.assert_allclose(p.value(np.array([0.5, -2.0])), [0.5, 2.0])

    # With the environment's spaces: scalars in, scalars of its dtype out,
    # inside its own (float64) bounds.
    obs_space, act_space = gs.Box(-1.0, 1.0, (), np.float32), gs.Box(-0.1, 0.1, (), np.float64)
    p = flotilla.load_policy(path, observation_space=obs_space, action_space=act_space)
    a = p(0.5)
    assert a.shape == () and a.dtype == np.float64 and a == 0.1 and act_space.contains(a)
    batch = p(np.array([0.5]))  # a batch of one scalar observation
    assert batch.shape == (1,) and batch[0] == 0.1
    batch = p(np.array([0.05, -3.0]))
    assert batch.dtype == np.float64 and batch.tolist() == [float(np.float32(0.05)), -0.1]
    assert all(act_space.contains(np.asarray(x)) for x in p(np.linspace(-1, 1, 201), greedy=False))
    raw = p(np.array([3.0, -3.0]), clip=False)
    assert raw.dtype == np.float32 and raw.tolist() == [3.0, -3.0]


def test_integer_box_actions_are_rounded_not_truncated(tmp_path):
    spaces = {
        "observation": SCALAR_SPACES["observation"],
        "action": {"Box": {"low": [-3.0], "high": [3.0], "shape": [1]}},
    }
    path = write_checkpoint(tmp_path / "c.safetensors", "Int-v0", spaces, scalar_model())
    act_space = gs.Box(-3, 3, (), np.int64)
    p = flotilla.load_policy(path, action_space=act_space)
    out = p(np.array([[0.6], [-0.6], [2.4], [9.0]]))
    assert out.dtype == np.int64 and out.tolist() == [1, -1, 2, 3]


def test_malformed_spaces_are_checkpoint_errors_naming_the_problem(tmp_path):
    box = {"Box": {"low": [-10.0, "-inf"], "high": [10.0, "huge"], "shape": [2]}}
    cases = [
        ({"observation": box, "action": {"Discrete": {"n": 2}}}, r"observation: Box high\[1\]: \"huge\""),
        ({"observation": OBS, "action": {"Discrete": {"n": 0}}}, "action: Discrete n must be an integer of at least 1"),
        ({"observation": {"Box": {"low": [None, 0], "high": [1, 1], "shape": [2]}}, "action": {"Discrete": {"n": 2}}},
         r"observation: Box low\[0\]: null"),
        ({"observation": {"Box": {**OBS["Box"], "dtype": "uint16"}}, "action": {"Discrete": {"n": 2}}},
         r"observation: Box dtype must be \"float32\" or \"uint8\", got \"uint16\""),
    ]  # fmt: skip
    for i, (spaces, needle) in enumerate(cases):
        path = write_checkpoint(tmp_path / f"c{i}", "X", spaces, tiny(2, False))
        with pytest.raises(CheckpointError, match=needle):
            flotilla.load_policy(path)


def test_a_normalizing_run_plays_on_normalized_observations(tmp_path):
    # The learner's effective config names every [model] key.
    config = CONFIG.format(env="Norm-v0") + "normalize_observations = true\nobservation_clip = 5.0\n"
    stats = {"obs_norm.mean": np.array([1.0, 4.0], np.float32), "obs_norm.var": np.array([4.0, 1.0], np.float32)}
    spaces = {"observation": OBS, "action": {"Discrete": {"n": 2}}}
    model = {**tiny(2, False), **stats}
    path = write_checkpoint(tmp_path / "c.safetensors", "Norm-v0", spaces, model, {"config": config})
    p = flotilla.load_policy(path)
    assert p.network.model.normalize_observations and p.network.model.observation_clip == 5.0
    # [5, 3] is seen as [(5 - 1) / 2, (3 - 4) / 1] = [2, -1]: relu [2, 0],
    # logits [2, 0], value 2.5 (raw, it would be logits [5, 6], value 8.5).
    assert p(np.array([5.0, 3.0])) == 0
    np.testing.assert_array_equal(p.value(np.array([5.0, 3.0])), 2.5)
    # [100, 4] is seen as [49.5, 0], clipped to [5, 0]: value 5.5.
    np.testing.assert_array_equal(p.value(np.array([[100.0, 4.0], [5.0, 3.0]])), [5.5, 2.5])
    raw = p.act(np.array([[5.0, 3.0]], np.float32), greedy=True, with_value=True)
    assert raw.actions.tolist() == [0] and raw.value.tolist() == [2.5]

    # The same weights in a run without normalization ignore the statistics.
    plain = write_checkpoint(tmp_path / "p.safetensors", "Norm-v0", spaces, model)
    assert flotilla.load_policy(plain)(np.array([5.0, 3.0])) == 1

    # A normalizing run's checkpoint without its statistics is refused, naming the missing one.
    broken = write_checkpoint(tmp_path / "b", "Norm-v0", spaces, model, {"config": config}, drop=("obs_norm.var",))
    with pytest.raises(CheckpointError, match="`obs_norm.var` is missing"):
        flotilla.load_policy(broken)
    bad_clip = write_checkpoint(
        tmp_path / "k.safetensors", "Norm-v0", spaces, tiny(2, False), {"config": config.replace("5.0", "-1.0")}
    )
    with pytest.raises(CheckpointError, match="model.observation_clip"):
        flotilla.load_policy(bad_clip)


def test_one_hot_observations_are_normalized_after_encoding(tmp_path):
    config = CONFIG.format(env="Lake-v0") + "normalize_observations = true\n"
    one_hot = {"Box": {"low": [0.0, 0.0], "high": [1.0, 1.0], "shape": [2]}}
    spaces = {"observation": one_hot, "action": {"Discrete": {"n": 3}}}
    # Observation 0 is [1, 0], normalized to [(1 - 0.5) / 0.5, (0 - 0.5) / 0.5] = [1, -1]:
    # relu [1, 0], logits [1, 0, 1], value 1.5.
    stats = {"obs_norm.mean": np.full(2, 0.5, np.float32), "obs_norm.var": np.full(2, 0.25, np.float32)}
    model = {**tiny(3, False), **stats}
    path = write_checkpoint(tmp_path / "c.safetensors", "Lake-v0", spaces, model, {"config": config})
    p = flotilla.load_policy(path, observation_space=gs.Discrete(2))
    np.testing.assert_allclose(p.value(0), 1.5, rtol=1e-6)
    # Observation 1 is [0, 1] -> [-1, 1]: relu [0, 1], value 1.5 as well, logits [0, 2, 1] -> action 1.
    assert p(1) == 1
