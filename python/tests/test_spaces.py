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
from flotilla.v1 import flotilla_pb2 as pb


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


# --- uint8 (pixel) observations ---------------------------------------------


def pixels(shape=(2, 3), high=255.0) -> Box:
    size = int(np.prod(shape))
    return Box(np.zeros(size, np.float32), np.full(size, high, np.float32), shape, "uint8")


def test_box_dtypes_are_float32_by_default_and_uint8_for_pixels():
    f = Box(np.zeros(6), np.full(6, 255.0), (2, 3))
    px = pixels()
    assert f.dtype == "float32" and px.dtype == "uint8"
    assert f.numpy_dtype == np.dtype("<f4") and px.numpy_dtype == np.uint8
    # numpy dtypes name the same two
    assert Box(np.zeros(6), np.full(6, 255.0), (2, 3), np.uint8) == px
    assert Box(np.zeros(6), np.full(6, 255.0), (2, 3), np.dtype("float32")) == f
    assert f != px and hash(f) != hash(px)
    assert px == pixels() and hash(px) == hash(pixels())
    assert repr(f) == "Box(shape=[2, 3])" and repr(px) == "Box(shape=[2, 3], uint8)"
    for bad in ("float64", "int8", np.float16, "u8", None):
        with pytest.raises(SpaceError, match='"float32" or "uint8"'):
            Box(np.zeros(1), np.ones(1), (1,), bad)


def test_dtypes_cross_the_wire():
    px = pixels((4, 84, 84))
    p = to_proto(px)
    assert p.box.dtype == pb.DTYPE_UINT8 and list(p.box.shape) == [4, 84, 84]
    assert from_proto(p) == px and from_proto(p).dtype == "uint8"
    f = Box(np.zeros(2), np.ones(2), (2,))
    assert to_proto(f).box.dtype == pb.DTYPE_FLOAT32
    # float32 is proto3's default: the field is not even written, so an
    # older learner reads the same bytes
    old = pb.Space(box=pb.BoxSpace(low=[0.0, 0.0], high=[1.0, 1.0], shape=[2]))
    assert to_proto(f).SerializeToString() == old.SerializeToString()
    assert from_proto(to_proto(f)).dtype == "float32"
    # A dtype of a newer contract is refused, naming the field.
    p.box.dtype = 7
    with pytest.raises(SpaceError, match=r"^observation_space: field `box.dtype`: unknown value 7"):
        from_proto(p, "observation_space")


def test_checkpoint_json_reads_the_dtype_as_the_learner_writes_it():
    # `common/src/space.rs`: "dtype" after "shape", only for uint8.
    text = '{"Box":{"low":[0.0],"high":[255.0],"shape":[1],"dtype":"uint8"}}'
    assert from_json(json.loads(text)) == pixels((1,))
    # Without the key (every checkpoint before dtypes existed): float32.
    old = from_json(json.loads('{"Box":{"low":[0.0],"high":[255.0],"shape":[1]}}'))
    assert old.dtype == "float32" and old != pixels((1,))
    f32 = from_json({"Box": {"low": [0.0], "high": [255.0], "shape": [1], "dtype": "float32"}})
    assert f32 == old
    for bad in ("UINT8", "float64", "", None, 1, ["uint8"]):
        with pytest.raises(SpaceError, match=r'^observation: Box dtype must be "float32" or "uint8", got '):
            from_json({"Box": {"low": [0.0], "high": [255.0], "shape": [1], "dtype": bad}}, "observation")


def test_a_dtype_difference_is_named_after_the_shape_and_before_the_bounds():
    f = Box(np.zeros(6), np.full(6, 255.0), (2, 3))
    assert space_difference(pixels(), f) == "a Box of uint8, the actor declared float32"
    assert space_difference(f, pixels()) == "a Box of float32, the actor declared uint8"
    # shape first ...
    assert space_difference(pixels((6,)), f) == "a Box of shape [6], the actor declared shape [2, 3]"
    # ... the bounds last
    assert space_difference(pixels(high=15.0), f) == "a Box of uint8, the actor declared float32"
    assert space_difference(pixels(high=15.0), pixels()) == "high[0] = 15, the actor declared 255"
    assert space_difference(pixels(), pixels()) is None


def test_uint8_gymnasium_boxes_are_declared_uint8_and_kept_as_bytes():
    a = ObservationAdapter(gs.Box(0, 255, (4, 6, 6), np.uint8))
    assert a.space == pixels((4, 6, 6)) and a.space.dtype == "uint8" and a.dtype == np.uint8
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (3, 4, 6, 6), dtype=np.uint8)
    out = a.encode_batch(batch)
    assert out.dtype == np.uint8 and out.shape == (3, 144)
    np.testing.assert_array_equal(out, batch.reshape(3, -1))  # the bytes, row-major
    one = a.encode_one(batch[1])
    assert one.dtype == np.uint8 and one.tobytes() == batch[1].tobytes()
    # Tighter integral bounds stay uint8.
    assert ObservationAdapter(gs.Box(0, 15, (2,), np.uint8)).space == pixels((2,), 15.0)
    # An environment that declares uint8 but hands out other values.
    assert a.encode_batch(batch.astype(np.float64)).dtype == np.uint8
    with pytest.raises(ValueError, match=r"observation value 2.5 \(at flat index 0\) is not a uint8 value"):
        a.encode_one(np.full((4, 6, 6), 2.5))
    with pytest.raises(ValueError, match="is not a uint8 value"):
        a.encode_one(np.full((4, 6, 6), 256, np.int64))


@pytest.mark.parametrize(
    "space",
    [
        gs.Box(0, 255, (2,), np.int64),
        gs.Box(0.0, 255.0, (2,), np.float32),
        gs.Box(0, 255, (2,), np.uint16),
        gs.Box(0, 1, (2,), bool),
    ],
)
def test_other_boxes_stay_float32(space):
    a = ObservationAdapter(space)
    assert a.space.dtype == "float32" and a.dtype == np.float32
    assert a.encode_batch(np.ones((1, 2), space.dtype)).dtype == np.float32


def test_discrete_observations_stay_float32_one_hot():
    a = ObservationAdapter(gs.Discrete(3))
    assert a.space.dtype == "float32" and a.encode_batch(np.array([1])).dtype == np.float32


def test_a_uint8_space_with_bounds_beyond_a_byte_is_refused():
    space = gs.Box(0, 255, (3,), np.uint8)
    # Gymnasium keeps a uint8 Box's bounds in 0..=255; a space changed by
    # hand need not.
    space.high = np.array([255, 300.0, 255])
    with pytest.raises(SpaceError, match=r"is uint8, sent as bytes, but its bound 1 has low 0 and high 300; "):
        ObservationAdapter(space)
    space.high = np.array([255, 255, 127.5])
    with pytest.raises(SpaceError, match="bound 2 has low 0 and high 127.5; a uint8 Box has integer bounds"):
        ObservationAdapter(space)


def test_a_uint8_box_is_no_action_space():
    # Actions are float32 samples whatever the environment's dtype: a uint8
    # action Box is declared float32 (rounded and clipped for the env).
    a = ActionAdapter(gs.Box(0, 255, (2,), np.uint8))
    assert a.space.dtype == "float32"
