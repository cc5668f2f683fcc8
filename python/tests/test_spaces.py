"""Gymnasium spaces as an actor declares them, and the conversions of
observations and actions."""

import json

import gymnasium.spaces as gs
import numpy as np
import pytest

from flotilla.spaces import (
    ActionAdapter,
    Box,
    Discrete,
    ObservationAdapter,
    SpaceError,
    from_json,
    from_proto,
    to_proto,
)


def test_box_observations_are_declared_with_their_shape_and_sent_flat():
    a = ObservationAdapter(gs.Box(-2.0, 3.0, (2, 3), np.float64))
    assert a.space.shape == (2, 3) and a.dim == 6
    assert a.space.low.dtype == np.float32 and (a.space.low == -2).all() and (a.space.high == 3).all()
    batch = np.arange(12, dtype=np.float64).reshape(2, 2, 3)
    out = a.encode_batch(batch)
    assert out.dtype == np.float32 and out.shape == (2, 6)
    np.testing.assert_array_equal(out[1], np.arange(6, 12))  # row-major
    np.testing.assert_array_equal(a.encode_one(batch[0]), np.arange(6))


def test_discrete_observations_are_sent_one_hot():
    a = ObservationAdapter(gs.Discrete(4, start=10))
    assert a.space == Box(np.zeros(4, np.float32), np.ones(4, np.float32), (4,))
    np.testing.assert_array_equal(a.encode_batch(np.array([10, 13])), [[1, 0, 0, 0], [0, 0, 0, 1]])
    np.testing.assert_array_equal(a.encode_one(np.int64(12)), [0, 0, 1, 0])


def test_scalar_boxes_get_a_shape():
    a = ObservationAdapter(gs.Box(-1.0, 1.0, (), np.float32))
    assert a.space.shape == (1,)
    assert a.encode_batch(np.array([0.5, -0.5], np.float32)).shape == (2, 1)


def test_discrete_actions_keep_their_start_for_the_env():
    a = ActionAdapter(gs.Discrete(3, start=-1))
    assert a.space == Discrete(3)
    assert a.to_env_batch(np.array([0, 1, 2])).tolist() == [-1, 0, 1]
    assert a.to_env_one(2) == 1


def test_box_actions_are_clipped_reshaped_and_typed_for_the_env():
    a = ActionAdapter(gs.Box(-1.0, 1.0, (2, 2), np.float64))
    assert a.space.shape == (2, 2) and a.space.flat_dim == 4
    raw = np.array([[-3.0, 0.5, 2.0, 0.0]], np.float32)
    env = a.to_env_batch(raw)
    assert env.shape == (1, 2, 2) and env.dtype == np.float64
    np.testing.assert_array_equal(env.reshape(-1), [-1.0, 0.5, 1.0, 0.0])
    assert raw[0, 0] == -3.0  # the policy's sample is untouched
    assert a.to_env_one(raw[0]).shape == (2, 2)


@pytest.mark.parametrize(
    "space",
    [gs.MultiDiscrete([2, 3]), gs.Dict({"a": gs.Discrete(2)}), gs.MultiBinary(3)],
)
def test_other_spaces_are_refused_with_advice(space):
    with pytest.raises(SpaceError, match="not supported"):
        ObservationAdapter(space)
    with pytest.raises(SpaceError, match="not supported"):
        ActionAdapter(space)


def test_wire_round_trip_keeps_infinities_and_shapes():
    b = Box(np.array([-np.inf, 0.0], np.float32), np.array([np.inf, 1.5], np.float32), (2,))
    for s in (b, Discrete(5)):
        assert from_proto(to_proto(s)) == s
    p = to_proto(b)
    assert list(p.box.shape) == [2] and p.box.low[0] == -np.inf
    with pytest.raises(SpaceError, match="low and"):
        Box(np.zeros(3), np.zeros(3), (4,))


def test_checkpoint_json_reads_null_bounds_as_unbounded():
    text = (
        '{"observation":{"Box":{"low":[-4.8,null,-0.41887903,null],'
        '"high":[4.8,null,0.41887903,null],"shape":[4]}},"action":{"Discrete":{"n":2}}}'
    )
    spaces = json.loads(text)
    obs = from_json(spaces["observation"])
    assert obs.low.tolist()[1] == -np.inf and obs.high.tolist()[1] == np.inf
    assert obs.low[2] == np.float32(-0.41887903)
    assert from_json(spaces["action"]) == Discrete(2)
    # What a Gymnasium CartPole-v1 declares is exactly that.
    import gymnasium

    assert ObservationAdapter(gymnasium.make("CartPole-v1").observation_space).space == obs
    with pytest.raises(SpaceError):
        from_json({"Tuple": {}})
