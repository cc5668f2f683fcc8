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
    space_difference,
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


def test_checkpoint_json_reads_bounds_as_the_learner_writes_them():
    # What the learner writes for CartPole-v1 (`common/src/space.rs`).
    text = (
        '{"observation":{"Box":{"low":[-4.8,"-inf",-0.41887903,"-inf"],'
        '"high":[4.8,"inf",0.41887903,"inf"],"shape":[4]}},"action":{"Discrete":{"n":2}}}'
    )
    spaces = json.loads(text)
    obs = from_json(spaces["observation"])
    assert obs.low.tolist()[1] == -np.inf and obs.high.tolist()[1] == np.inf
    assert obs.low[2] == np.float32(-0.41887903)
    assert from_json(spaces["action"]) == Discrete(2)
    # What a Gymnasium CartPole-v1 declares is exactly that.
    import gymnasium

    assert ObservationAdapter(gymnasium.make("CartPole-v1").observation_space).space == obs


@pytest.mark.parametrize(
    "bound,value",
    [
        (1, 1.0),
        (-2.5, -2.5),
        (1e39, np.inf),  # beyond f32, as Rust's `as f32`
        ("inf", np.inf),
        ("-inf", -np.inf),
        ("+inf", np.inf),
        ("INF", np.inf),
        ("Infinity", np.inf),
        ("-Infinity", -np.inf),
        ("+INFINITY", np.inf),
        ("nan", np.nan),
        ("NaN", np.nan),
    ],
)
def test_checkpoint_json_bounds_accept_what_the_learner_reads(bound, value):
    box = from_json({"Box": {"low": [bound], "high": [bound], "shape": [1]}})
    np.testing.assert_array_equal(box.low, np.array([value], np.float32))
    np.testing.assert_array_equal(box.high, np.array([value], np.float32))


@pytest.mark.parametrize("bound", [None, "big", "1.5", "- inf", "-+inf", "", True, [1.0], {"x": 1}])
def test_checkpoint_json_refuses_other_bounds_naming_them(bound):
    with pytest.raises(SpaceError, match=r"action: Box high\[1\]: .*expected a number"):
        from_json({"Box": {"low": [0, 0], "high": [1, bound], "shape": [2]}}, "action")


@pytest.mark.parametrize(
    "value,needle",
    [
        ({"Tuple": {}}, "unknown space kind"),
        ({"Discrete": {"n": 0}}, "at least 1"),
        ({"Discrete": {"n": -3}}, "at least 1"),
        ({"Discrete": {"n": 2.0}}, "integer"),
        ({"Discrete": {"n": True}}, "integer"),
        ({"Discrete": {}}, "integer"),
        ({"Box": {"low": [0], "high": [1]}}, "shape"),
        ({"Box": {"low": [0], "high": [1], "shape": [2]}}, "does not match"),
        ({"Box": {"low": [0], "high": [1], "shape": ["1"]}}, "shape"),
        ({"Box": [1]}, "expected an object"),
        ([1], "expected"),
    ],
)
def test_checkpoint_json_refuses_malformed_spaces(value, needle):
    with pytest.raises(SpaceError, match=needle):
        from_json(value)


def test_box_equality_and_differences_are_the_learners():
    def box(low, high):
        return Box(np.array(low, np.float32), np.array(high, np.float32), (len(low),))

    run = box([-1.0, 0.0, -1.0], [1.0, 1.0, 1.0])
    assert run == box([-1.0, 0.0, -1.0], [1.0, 1.0, 1.0])
    assert space_difference(run, run) is None
    # f32 bit patterns: -0.0 is not 0.0 (the learner refuses it too) ...
    assert run != box([-1.0, -0.0, -1.0], [1.0, 1.0, 1.0])
    assert space_difference(run, box([-1.0, -0.0, -1.0], [1.0, 1.0, 1.0])) == "low[1] = 0, the actor declared -0"
    # ... and a NaN equals the same NaN.
    nan = box([np.nan], [1.0])
    assert nan == box([np.nan], [1.0]) and space_difference(nan, nan) is None
    # The first differing bound, in the learner's words.
    assert (
        space_difference(run, box([-1.0, -2.0, -1.0], [1.0, 1.0, 1.0]))
        == "low[1] = 0, the actor declared -2"
    )
    assert (
        space_difference(run, box([-1.0, 0.0, -1.0], [1.0, 1.0, 0.41887903]))
        == "high[2] = 1, the actor declared 0.41887903"
    )
    assert space_difference(run, box([-1.0] * 4, [1.0] * 4)) == "a Box of shape [3], the actor declared shape [4]"
    assert (
        space_difference(box([-np.inf], [np.inf]), box([-np.inf], [3.5]))
        == "high[0] = inf, the actor declared 3.5"
    )
    assert space_difference(Discrete(2), Discrete(3)) == "Discrete(2), the actor declared Discrete(3)"
    assert space_difference(Discrete(2), run) == "Discrete(2), the actor declared a Box of shape [3]"
    assert space_difference(run, Discrete(2)) == "a Box of shape [3], the actor declared Discrete(2)"


def test_float64_box_actions_stay_inside_the_environments_own_bounds():
    # -0.1 and 0.1 are not f32 values: the declared bounds round to
    # ±0.100000001, outside the float64 box.
    space = gs.Box(-0.1, 0.1, (3,), np.float64)
    a = ActionAdapter(space)
    assert a.space.high[0] == np.float32(0.1) and float(np.float32(0.1)) > 0.1
    rng = np.random.default_rng(0)
    raw = (rng.normal(size=(2000, 3)) * 0.2).astype(np.float32)
    env = a.to_env_batch(raw)
    assert env.dtype == np.float64 and env.shape == (2000, 3)
    assert all(space.contains(x) for x in env)
    assert (env == 0.1).any() and (env == -0.1).any()
    inside = np.abs(raw) < 0.05
    np.testing.assert_array_equal(env[inside], raw[inside].astype(np.float64))  # exact where not clipped
    assert space.contains(a.to_env_one(raw[0]))


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8])
def test_integer_box_actions_are_rounded_and_clipped(dtype):
    space = gs.Box(0, 5, (2,), dtype)
    a = ActionAdapter(space)
    raw = np.array([[0.6, 4.4], [-0.7, 2.5], [1e30, -1e30], [5.49, 3.51]], np.float32)
    env = a.to_env_batch(raw)
    assert env.dtype == dtype
    # Rounded to the nearest (ties to even), not truncated toward zero.
    assert env.tolist() == [[1, 4], [0, 2], [5, 0], [5, 4]]
    assert all(space.contains(x) for x in env)
    wide = gs.Box(np.iinfo(np.int64).min, np.iinfo(np.int64).max, (1,), np.int64)
    out = ActionAdapter(wide).to_env_batch(np.array([[3e38], [-3e38], [-2.4]], np.float32))
    assert out.dtype == np.int64 and out[0, 0] > 0 and out[1, 0] == np.iinfo(np.int64).min and out[2, 0] == -2
