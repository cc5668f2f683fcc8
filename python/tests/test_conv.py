"""Convolutional torsos (`model.conv`) in the numpy policy: the convolution
against its definition evaluated in float64 by a slow loop (and PyTorch's
`conv2d` when torch is installed), image layouts, the Nature network's
parameters, whole forward passes against an independent reference, and the
checks of the spec, each naming its key.

Tolerances are derived, not tuned. A dot product of `n - 1` terms plus a
bias summed in f32 (any order, FMA or not) is within `γ(n) · (|b| + Σ |w||x|)`
of the exact value, `γ(n) = n·u / (1 - n·u)`, `u = 2⁻²⁴` (Higham, Accuracy
and Stability of Numerical Algorithms, 2nd ed., §3.1). Through a network the
reference carries a running bound `e` on the error of every value: a layer
maps it to `|W| e + γ(n) (|b| + |W||x|)` with the exact inputs `x` (to first
order), a ReLU or tanh passes it on (both are 1-Lipschitz) and adds its own
rounding (none for ReLU; 4 ulp, `8u |y|`, for numpy's f32 tanh), the input
scaling adds `u |x|`. The tests allow twice the bound, for the second-order
terms.
"""

import json
import math

import gymnasium.spaces as gs
import numpy as np
import pytest
from safetensors.numpy import save, save_file

import flotilla
from flotilla.checkpoint import CheckpointError
from flotilla.policy import NATURE_CONV, ConvLayer, ModelSpec, Policy, PolicyError, _Conv, zero_parameters
from flotilla.spaces import Box, Discrete

U = 2.0**-24


def gamma(n: int) -> float:
    return n * U / (1 - n * U)


def box(low, high, dim):
    return Box(np.full(dim, low, np.float32), np.full(dim, high, np.float32), (dim,))


# --- the float64 reference ---------------------------------------------------


def reference_conv(x, w, b, stride, exact=True):
    """Cross-correlation by its definition, in float64, one output position
    at a time: `x` `[N, C, H, W]`, `w` `[O, C, k, k]`, `b` `[O]` ->
    `[N, O, H', W']` with `H' = (H - k) // stride + 1` (no padding).
    `exact`: each sum correctly rounded (math.fsum); else numpy's sum, for
    the error bounds."""
    x, w, b = (np.asarray(a, np.float64) for a in (x, w, b))
    n, _, h, wd = x.shape
    o, _, k, _ = w.shape
    ho, wo = (h - k) // stride + 1, (wd - k) // stride + 1
    out = np.empty((n, o, ho, wo))
    for i in range(n):
        for r in range(ho):
            for q in range(wo):
                patch = x[i, :, r * stride : r * stride + k, q * stride : q * stride + k]
                if exact:
                    for c_out in range(o):
                        out[i, c_out, r, q] = math.fsum((w[c_out] * patch).ravel()) + b[c_out]
                else:
                    out[i, :, r, q] = (w * patch).sum(axis=(1, 2, 3)) + b
    return out


def reference_image(spec: ModelSpec, obs_shape, obs):
    """Flat observation rows as `[N, C, H, W]` images, element by element
    from the layout's definition."""
    n = obs.shape[0]
    if len(obs_shape) == 2:
        h, w = obs_shape
        c = 1
        index = lambda ch, r, q: r * w + q  # noqa: E731
    elif spec.observation_layout == "chw":
        c, h, w = obs_shape
        index = lambda ch, r, q: (ch * h + r) * w + q  # noqa: E731
    else:
        h, w, c = obs_shape
        index = lambda ch, r, q: (r * w + q) * c + ch  # noqa: E731
    img = np.empty((n, c, h, w))
    for ch in range(c):
        for r in range(h):
            for q in range(w):
                img[:, ch, r, q] = obs[:, index(ch, r, q)]
    return img


def reference_forward(spec: ModelSpec, obs_shape, params, obs):
    """The policy's head and value in float64 from the definitions above,
    with running bounds on the error of an f32 evaluation:
    `(head, value, head_error, value_error)`."""
    p = {k: np.float64(v) for k, v in params.items()}
    a = {k: np.abs(v) for k, v in p.items()}
    scale = float(np.float32(spec.observation_scale))
    x = np.float64(obs) * scale
    e0 = U * np.abs(x) if scale != 1.0 else np.zeros_like(x)

    def activate(v, e, kind):
        if kind == "relu":
            return np.maximum(v, 0.0), e
        y = np.tanh(v)
        return y, e + 8 * U * np.abs(y)

    def linear(name, v, e):
        w, b = p[f"{name}.weight"], p[f"{name}.bias"]
        n = w.shape[1] + 1
        y = v @ w.T + b
        return y, e @ a[f"{name}.weight"].T + gamma(n) * (np.abs(v) @ a[f"{name}.weight"].T + a[f"{name}.bias"])

    def torso(name):
        v, e = x, e0
        if spec.conv:
            v, e = reference_image(spec, obs_shape, v), reference_image(spec, obs_shape, e)
        for j, layer in enumerate(spec.conv):
            key = f"{name}.conv.{j}"
            w, wa, ba = p[f"{key}.weight"], a[f"{key}.weight"], a[f"{key}.bias"]
            n = w[0].size + 1
            y = reference_conv(v, w, p[f"{key}.bias"], layer.stride)
            e = reference_conv(e, wa, 0 * ba, layer.stride, exact=False) + gamma(n) * reference_conv(
                np.abs(v), wa, ba, layer.stride, exact=False
            )
            v, e = activate(y, e, "relu")
        v, e = v.reshape(v.shape[0], -1), e.reshape(e.shape[0], -1)
        for i in range(len(spec.hidden_sizes)):
            v, e = activate(*linear(f"{name}.{i}", v, e), spec.activation)
        return v, e

    actor = torso("torso" if spec.shared_torso else "actor")
    critic = actor if spec.shared_torso else torso("critic")
    head, head_e = linear("actor.head", *actor)
    value, value_e = linear("critic.head", *critic)
    return head, value[:, 0], head_e, value_e[:, 0]


def random_params(spec, obs_shape, space, rng):
    """Non-initial weights: Gaussian with fan-in scaling and random biases."""
    out = {}
    for name, shape in spec.parameter_shapes(obs_shape, space):
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        out[name] = rng.normal(0, 1.5 / math.sqrt(fan_in), shape).astype(np.float32)
    return out


def assert_within_bound(spec, obs_shape, params, obs, policy):
    head, value = policy.forward(obs, with_value=True)
    want_head, want_value, head_e, value_e = reference_forward(spec, obs_shape, params, obs)
    assert head.dtype == np.float32 and value.dtype == np.float32
    err_head, err_value = np.abs(head - want_head), np.abs(value - want_value)
    assert (err_head <= 2 * head_e).all(), (err_head / (2 * head_e)).max()
    assert (err_value <= 2 * value_e).all(), (err_value / (2 * value_e)).max()
    # The (worst-case) bound is tight enough to catch a wrong layer: the
    # outputs vary far more than it allows.
    assert 2 * head_e.max() < 0.05 * np.ptp(want_head), (head_e.max(), np.ptp(want_head))


# --- one convolution ---------------------------------------------------------

# (C, H, W, out channels, kernel, stride): strides that divide H - k and
# ones that drop rows and columns, 1x1 kernels, a kernel as large as the
# image, a stride above the kernel, non-square images.
CONV_CASES = [
    (1, 5, 5, 2, 3, 1),
    (3, 9, 7, 4, 3, 2),
    (2, 10, 11, 3, 4, 3),
    (4, 12, 12, 5, 1, 1),
    (2, 6, 6, 3, 6, 1),
    (3, 13, 9, 2, 2, 5),
    (5, 21, 20, 6, 8, 4),
]


@pytest.mark.parametrize("c,h,w,o,k,s", CONV_CASES)
def test_a_convolution_matches_its_definition_in_float64(c, h, w, o, k, s):
    rng = np.random.default_rng(c * 1000 + h * 10 + k)
    x = rng.normal(0, 1, (3, c, h, w)).astype(np.float32)
    weight = rng.normal(0, 1, (o, c, k, k)).astype(np.float32)
    bias = rng.normal(0, 1, o).astype(np.float32)
    got = _Conv.from_weight(weight, bias, s)(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    assert got.dtype == np.float32
    got = got.transpose(0, 3, 1, 2)  # back to [N, O, H', W']
    want = np.maximum(reference_conv(x, weight, bias, s), 0.0)
    assert got.shape == want.shape == (3, o, (h - k) // s + 1, (w - k) // s + 1)
    # ReLU is 1-Lipschitz: the pre-activation bound holds after it.
    bound = gamma(c * k * k + 1) * reference_conv(np.abs(x), np.abs(weight), np.abs(bias), s)
    assert (np.abs(got - want) <= bound).all(), (np.abs(got - want) / bound).max()
    assert (want == 0).any() and (want > 0).any()  # both sides of the ReLU


@pytest.mark.parametrize("c,h,w,o,k,s", CONV_CASES)
def test_a_convolution_matches_torch(c, h, w, o, k, s):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7 + c + h + k)
    x = rng.normal(0, 1, (4, c, h, w)).astype(np.float32)
    weight = rng.normal(0, 1, (o, c, k, k)).astype(np.float32)
    bias = rng.normal(0, 1, o).astype(np.float32)
    got = _Conv.from_weight(weight, bias, s)(np.ascontiguousarray(x.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    with torch.no_grad():
        want = torch.relu(
            torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias), stride=s)
        ).numpy()
    assert got.shape == want.shape
    # Both are within the bound of the exact value, so within twice it of
    # each other.
    bound = 2 * gamma(c * k * k + 1) * reference_conv(np.abs(x), np.abs(weight), np.abs(bias), s)
    assert (np.abs(got - want) <= bound).all(), (np.abs(got - want) / bound).max()


# --- whole policies ----------------------------------------------------------


@pytest.mark.parametrize(
    "obs_shape,layout",
    [((3, 11, 9), "chw"), ((11, 9, 3), "hwc"), ((10, 12), "chw"), ((10, 12), "hwc"), ((1, 8, 8), "chw")],
    ids=["chw", "hwc", "2d", "2d-hwc", "one-channel"],
)
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "separate"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_a_convolutional_policy_matches_a_float64_reference(obs_shape, layout, shared, activation):
    rng = np.random.default_rng(11)
    spec = ModelSpec(
        conv=(ConvLayer(4, 3, 2), ConvLayer(5, 2, 1)),
        hidden_sizes=(7, 6),
        activation=activation,
        shared_torso=shared,
        observation_layout=layout,
        observation_scale=0.25,
    )
    space = Discrete(3)
    params = random_params(spec, obs_shape, space, rng)
    policy = Policy(spec, obs_shape, space, params)
    obs = rng.normal(0, 2, (5, math.prod(obs_shape))).astype(np.float32)
    assert_within_bound(spec, obs_shape, params, obs, policy)


def test_the_nature_network_on_frame_stacks_matches_a_float64_reference():
    """End to end on u8 frames with weights of mostly one sign: the running
    bound through four wide layers is only useful without much cancellation
    (the layer-by-layer test below takes weights of both signs)."""
    rng = np.random.default_rng(12)
    spec, shape, space = ModelSpec.nature(), (4, 84, 84), Discrete(6)
    params = {}
    for name, s in spec.parameter_shapes(shape, space):
        fan_in = math.prod(s[1:]) if len(s) > 1 else 1
        params[name] = (rng.uniform(-0.3, 1.0, s) / fan_in).astype(np.float32)
    params["torso.0.bias"] -= np.float32(0.05)  # some hidden units below 0
    policy = Policy(spec, shape, space, params)
    # u8 pixels, scaled by 1/255 in the network.
    obs = rng.integers(0, 256, (2, 4 * 84 * 84)).astype(np.float32)
    assert_within_bound(spec, shape, params, obs, policy)
    s = policy.act(obs, np.random.default_rng(0), with_value=True)
    assert s.actions.shape == (2,) and s.logp.shape == (2,) and s.value.shape == (2,)


def test_each_nature_layer_is_within_its_bound_of_float64():
    """Layer by layer, on weights of both signs: each of the policy's
    layers, fed the f32 output of the one before, is within
    `γ(n) (|b| + |W||x|)` of the float64 evaluation of the same input."""
    rng = np.random.default_rng(18)
    spec, shape, space = ModelSpec.nature(), (4, 84, 84), Discrete(6)
    params = random_params(spec, shape, space, rng)
    policy = Policy(spec, shape, space, params)
    obs = rng.integers(0, 256, (2, 4 * 84 * 84)).astype(np.float32)
    x = policy._input(obs)  # [N, H, W, C], scaled
    np.testing.assert_array_equal(x.transpose(0, 3, 1, 2), (obs * np.float32(1 / 255)).reshape(2, *shape))
    for j, (layer, conv) in enumerate(zip(spec.conv, policy._actor.convs)):
        w, b = params[f"torso.conv.{j}.weight"], params[f"torso.conv.{j}.bias"]
        chw = x.transpose(0, 3, 1, 2)
        got = conv(x)
        want = np.maximum(reference_conv(chw, w, b, layer.stride), 0.0)
        bound = gamma(w[0].size + 1) * reference_conv(np.abs(chw), np.abs(w), np.abs(b), layer.stride, exact=False)
        err = np.abs(got.transpose(0, 3, 1, 2) - want)
        assert (err <= bound).all(), (j, (err / bound).max())
        assert (want == 0).any() and (want > 0).any()
        x = got
    features = policy._torso(policy._actor, policy._input(obs))  # the hidden layer's output
    flat = x.transpose(0, 3, 1, 2).reshape(2, -1)  # C, H, W order
    assert flat.shape == (2, 3136)
    w, b = np.float64(params["torso.0.weight"]), np.float64(params["torso.0.bias"])
    want = np.maximum(flat @ w.T + b, 0.0)
    bound = gamma(3137) * (np.abs(flat) @ np.abs(w).T + np.abs(b))
    assert (np.abs(features - want) <= bound).all()


def test_the_nature_torso_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(13)
    spec, shape, space = ModelSpec.nature(), (4, 84, 84), Discrete(6)
    params = random_params(spec, shape, space, rng)
    obs = rng.integers(0, 256, (3, 4 * 84 * 84)).astype(np.float32)
    head, value = Policy(spec, shape, space, params).forward(obs, with_value=True)
    t = {k: torch.from_numpy(v) for k, v in params.items()}
    with torch.no_grad():
        x = torch.from_numpy(obs).reshape(-1, *shape) * float(np.float32(spec.observation_scale))
        for j, layer in enumerate(spec.conv):
            w, b = t[f"torso.conv.{j}.weight"], t[f"torso.conv.{j}.bias"]
            x = torch.relu(torch.nn.functional.conv2d(x, w, b, stride=layer.stride))
        x = torch.relu(torch.nn.functional.linear(x.flatten(1), t["torso.0.weight"], t["torso.0.bias"]))
        want_head = torch.nn.functional.linear(x, t["actor.head.weight"], t["actor.head.bias"]).numpy()
        want_value = torch.nn.functional.linear(x, t["critic.head.weight"], t["critic.head.bias"]).numpy()[:, 0]
    _, _, head_e, value_e = reference_forward(spec, shape, params, obs)
    # Both are within twice the bound of the exact value.
    assert (np.abs(head - want_head) <= 4 * head_e).all()
    assert (np.abs(value - want_value) <= 4 * value_e).all()


def test_hwc_observations_are_the_chw_ones_transposed():
    """The same weights give the same bits whether the environment lays its
    images out channels first or last."""
    rng = np.random.default_rng(14)
    chw = ModelSpec(conv=(ConvLayer(3, 3, 1),), hidden_sizes=(4,), observation_layout="chw")
    hwc = ModelSpec(conv=(ConvLayer(3, 3, 1),), hidden_sizes=(4,), observation_layout="hwc")
    params = random_params(chw, (2, 6, 5), box(-1, 1, 2), rng)
    shapes = [s for _, s in chw.parameter_shapes((2, 6, 5), box(-1, 1, 2))]
    assert [s for _, s in hwc.parameter_shapes((6, 5, 2), box(-1, 1, 2))] == shapes
    images = rng.normal(0, 1, (4, 2, 6, 5)).astype(np.float32)
    a = Policy(chw, (2, 6, 5), box(-1, 1, 2), params).forward(images.reshape(4, -1), with_value=True)
    channels_last = images.transpose(0, 2, 3, 1).reshape(4, -1)
    b = Policy(hwc, (6, 5, 2), box(-1, 1, 2), params).forward(channels_last, with_value=True)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()


def test_normalization_comes_before_the_scale():
    """A normalizing convolutional policy on raw observations is the plain
    one on observations normalized by hand (the scale applies to both)."""
    rng = np.random.default_rng(15)
    shape = (2, 5, 5)
    plain = ModelSpec(conv=(ConvLayer(2, 3, 1),), hidden_sizes=(3,), observation_scale=0.5)
    norm = ModelSpec(
        conv=(ConvLayer(2, 3, 1),),
        hidden_sizes=(3,),
        observation_scale=0.5,
        normalize_observations=True,
        observation_clip=1.5,
    )
    params = random_params(plain, shape, Discrete(2), rng)
    mean = rng.normal(0, 1, 50).astype(np.float32)
    var = rng.uniform(0.5, 2, 50).astype(np.float32)
    raw = rng.normal(0, 3, (6, 50)).astype(np.float32)
    by_hand = np.clip((raw - mean) / np.sqrt(var + np.float32(1e-8)), np.float32(-1.5), np.float32(1.5))
    stats = {"obs_norm.mean": mean, "obs_norm.var": var}
    a = Policy.from_safetensors(norm, shape, Discrete(2), save({**params, **stats})).forward(raw, with_value=True)
    b = Policy(plain, shape, Discrete(2), params).forward(by_hand, with_value=True)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()


def test_a_scale_of_one_is_no_scale_and_others_are_f32_products():
    rng = np.random.default_rng(16)
    base = ModelSpec(hidden_sizes=(3,))
    scaled = ModelSpec(hidden_sizes=(3,), observation_scale=1 / 255)
    params = random_params(base, 4, Discrete(2), rng)
    obs = rng.integers(0, 256, (5, 4)).astype(np.float32)
    by_hand = obs * np.float32(1 / 255)
    a = Policy(scaled, 4, Discrete(2), params).forward(obs, with_value=True)
    b = Policy(base, 4, Discrete(2), params).forward(by_hand, with_value=True)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()


# --- the spec ----------------------------------------------------------------


def test_the_nature_network_names_its_parameters_in_the_learners_order():
    spec = ModelSpec.nature()
    assert spec.conv == NATURE_CONV == (ConvLayer(32, 8, 4), ConvLayer(64, 4, 2), ConvLayer(64, 3, 1))
    assert (spec.hidden_sizes, spec.activation, spec.shared_torso) == ((512,), "relu", True)
    assert np.float32(spec.observation_scale) == np.float32(1) / np.float32(255)
    assert spec.conv_shapes((4, 84, 84)) == [(32, 20, 20), (64, 9, 9), (64, 7, 7)]
    names = [f"{n}{list(s)}" for n, s in spec.parameter_shapes((4, 84, 84), Discrete(6))]
    assert names == [
        "torso.conv.0.weight[32, 4, 8, 8]",
        "torso.conv.0.bias[32]",
        "torso.conv.1.weight[64, 32, 4, 4]",
        "torso.conv.1.bias[64]",
        "torso.conv.2.weight[64, 64, 3, 3]",
        "torso.conv.2.bias[64]",
        "torso.0.weight[512, 3136]",
        "torso.0.bias[512]",
        "actor.head.weight[6, 512]",
        "actor.head.bias[6]",
        "critic.head.weight[1, 512]",
        "critic.head.bias[1]",
    ]
    # RGB frames, channels last.
    hwc = ModelSpec.from_config({"preset": "nature", "observation_layout": "hwc"})
    assert hwc.parameter_shapes((84, 84, 3), Discrete(6))[0] == ("torso.conv.0.weight", (32, 3, 8, 8))


def test_separate_torsos_each_start_with_their_convolutions():
    spec = ModelSpec(conv=(ConvLayer(2, 3, 1),), hidden_sizes=(4,))
    names = [f"{n}{list(s)}" for n, s in spec.parameter_shapes((5, 6), box(-1, 1, 2))]
    assert names == [
        "actor.conv.0.weight[2, 1, 3, 3]",
        "actor.conv.0.bias[2]",
        "actor.0.weight[4, 24]",
        "actor.0.bias[4]",
        "critic.conv.0.weight[2, 1, 3, 3]",
        "critic.conv.0.bias[2]",
        "critic.0.weight[4, 24]",
        "critic.0.bias[4]",
        "actor.head.weight[2, 4]",
        "actor.head.bias[2]",
        "critic.head.weight[1, 4]",
        "critic.head.bias[1]",
        "log_std[2]",
    ]
    # Kernels that do not fit: listed, and the hidden layer reads the flat
    # observation (as common/src/model.rs does; problems_with says why).
    big = ModelSpec(conv=(ConvLayer(2, 7, 1),), hidden_sizes=(4,), shared_torso=True)
    assert big.parameter_shapes((5, 6), Discrete(2))[2] == ("torso.0.weight", (4, 30))


def test_conv_settings_are_read_from_configs_and_the_wire():
    from flotilla.v1 import flotilla_pb2 as pb

    # As the learner writes its effective config into checkpoints.
    table = {
        "hidden_sizes": [512],
        "activation": "relu",
        "shared_torso": True,
        "conv": [{"channels": 32, "kernel": 8, "stride": 4}, {"channels": 64, "kernel": 4, "stride": 2}],
        "observation_layout": "hwc",
        "observation_scale": 0.003921569,
    }
    spec = ModelSpec.from_config(table)
    assert spec.conv == NATURE_CONV[:2] and spec.observation_layout == "hwc"
    assert np.float32(spec.observation_scale) == np.float32(1) / np.float32(255)
    assert ModelSpec.from_config({"preset": "nature"}) == ModelSpec.nature()
    assert ModelSpec.from_config({"preset": "nature", "hidden_sizes": [256]}).hidden_sizes == (256,)
    default = ModelSpec.from_config({})
    assert (default.conv, default.observation_layout, default.observation_scale) == ((), "chw", 1.0)

    wire = pb.ModelSpec(
        hidden_sizes=[512],
        activation=pb.ACTIVATION_RELU,
        shared_torso=True,
        conv=[pb.ConvLayer(channels=c.channels, kernel=c.kernel, stride=c.stride) for c in NATURE_CONV],
        observation_clip=10.0,
        observation_layout=pb.OBSERVATION_LAYOUT_CHW,
        observation_scale=1 / 255,
    )
    assert ModelSpec.from_proto(wire) == ModelSpec.nature()
    wire.observation_layout = pb.OBSERVATION_LAYOUT_HWC
    assert ModelSpec.from_proto(wire).observation_layout == "hwc"
    wire.observation_layout = 7
    with pytest.raises(PolicyError, match="field `model.observation_layout`: unknown value 7"):
        ModelSpec.from_proto(wire)
    # A wire spec without a scale (0) is refused, as the Rust actor refuses it.
    with pytest.raises(PolicyError, match="model.observation_scale: must be finite and above 0, got 0.0"):
        ModelSpec.from_proto(pb.ModelSpec(hidden_sizes=[8], activation=pb.ACTIVATION_TANH))


def test_bad_conv_specs_are_refused_naming_the_key():
    cases = [
        ({"conv": [(1, 1, 1)] * 17}, "model.conv: must list at most 16 convolutions, got 17"),
        (
            {"conv": [(8, 3, 1), (0, 3, 1)]},
            r"model.conv: convolution 1 has channels 0, kernel 3, stride 1: channels must be in 1..=1024, "
            r"kernel and stride in 1..=32",
        ),
        ({"conv": [(1025, 3, 1)]}, "model.conv: convolution 0 has channels 1025"),
        ({"conv": [(8, 0, 1)]}, "model.conv: convolution 0 has channels 8, kernel 0"),
        ({"conv": [(8, 33, 1)]}, "model.conv: convolution 0 has channels 8, kernel 33"),
        ({"conv": [(8, 3, 0)]}, "model.conv: convolution 0 has channels 8, kernel 3, stride 0"),
        ({"conv": [(8, 3, 33)]}, "model.conv: convolution 0 has channels 8, kernel 3, stride 33"),
        ({"conv": [{"channels": 8, "kernel": 3}]}, r"model.conv: convolution 0 must have the keys"),
        (
            {"conv": [{"channels": 8, "kernel": 3, "stride": 1, "padding": 1}]},
            r"model.conv: convolution 0 must have the keys",
        ),
        ({"conv": [(8, 3.5, 1)]}, "model.conv: convolution 0 must have integer"),
        ({"conv": ["big"]}, "model.conv: convolution 0 must be a table"),
        ({"conv": {"channels": 8, "kernel": 3, "stride": 1}}, "model.conv: must be a list of convolutions"),
        ({"observation_layout": "nchw"}, 'model.observation_layout: must be "chw" or "hwc", got \'nchw\''),
    ]
    # 1e39 and 1e-46 are finite and positive in f64 but not in f32, the
    # precision the learner checks and applies the scale in.
    for scale in (0.0, -1.0, math.inf, math.nan, 1e39, 1e-46):
        cases.append(({"observation_scale": scale}, "model.observation_scale: must be finite and above 0"))
    for table, needle in cases:
        with pytest.raises(PolicyError, match=needle):
            ModelSpec.from_config(table)
    # The learner's words (learner/src/config.rs).
    with pytest.raises(PolicyError, match=r'model.preset: unknown preset "impala"; expected one of "nature"'):
        ModelSpec.from_config({"preset": "impala"})
    with pytest.raises(PolicyError, match=r'model.preset: expected one of "nature", got 3'):
        ModelSpec.from_config({"preset": 3})


def test_convolutions_need_images_their_kernels_fit():
    spec = ModelSpec(conv=(ConvLayer(4, 3, 2), ConvLayer(4, 3, 1)), hidden_sizes=(4,))
    assert spec.problems_with((2, 7, 7)) == []
    assert spec.problems_with((7, 7)) == []
    assert ModelSpec().problems_with((4,)) == [] and ModelSpec().problems_with((2, 3, 4, 5)) == []
    cases = [
        (
            (12,),
            "model.conv",
            "a convolutional torso needs image observations of 2 or 3 dimensions, the observation space has shape [12]",
        ),
        ((1, 2, 7, 7), "model.conv", "a convolutional torso needs image observations of 2 or 3 dimensions"),
        (
            (2, 2, 7),
            "model.conv",
            "convolution 0 (3x3 kernel) does not fit its 2x2x7 input (observations of shape [2, 2, 7])",
        ),
        # 6x6 -> 2x2 after the first: the second does not fit.
        ((2, 6, 6), "model.conv", "convolution 1 (3x3 kernel) does not fit its 4x2x2 input"),
    ]
    for shape, key, message in cases:
        [(k, m)] = spec.problems_with(shape)
        assert k == key and m.startswith(message), m
        with pytest.raises(PolicyError, match=r"^model\.conv: "):
            Policy(spec, shape, Discrete(2), zero_parameters(spec, shape, Discrete(2)))
    # "hwc" reads the last axis as the channels.
    hwc = ModelSpec(conv=(ConvLayer(4, 3, 1),), hidden_sizes=(4,), observation_layout="hwc")
    assert hwc.image_shape((7, 5, 3)) == (3, 7, 5) and hwc.problems_with((7, 2, 3)) != []


def test_the_flat_observations_must_have_the_images_size():
    spec = ModelSpec(conv=(ConvLayer(2, 3, 1),), hidden_sizes=(4,))
    p = Policy(spec, (2, 5, 5), Discrete(2), zero_parameters(spec, (2, 5, 5), Discrete(2)))
    assert p.obs_dim == 50 and p.obs_shape == (2, 5, 5)
    with pytest.raises(ValueError, match=r"observations must be \[N, 50\], got \[3, 25\]"):
        p.forward(np.zeros((3, 25), np.float32))


# --- loading -----------------------------------------------------------------

CONV_CONFIG = """
[env]
id = "Pixels-v0"

[model]
hidden_sizes = [8]
activation = "relu"
shared_torso = true
init_log_std = 0.0
normalize_observations = false
observation_clip = 10.0
observation_layout = "hwc"
observation_scale = 0.003921569

[[model.conv]]
channels = 3
kernel = 3
stride = 2
"""


def test_a_convolutional_checkpoint_plays_images(tmp_path):
    rng = np.random.default_rng(17)
    shape = (9, 7, 2)
    spec = ModelSpec(conv=(ConvLayer(3, 3, 2),), hidden_sizes=(8,), activation="relu", shared_torso=True,
                     observation_layout="hwc", observation_scale=float(np.float32(1 / 255)))  # fmt: skip
    params = random_params(spec, shape, Discrete(4), rng)
    n = math.prod(shape)
    spaces = {
        "observation": {"Box": {"low": [0.0] * n, "high": [255.0] * n, "shape": list(shape)}},
        "action": {"Discrete": {"n": 4}},
    }
    meta = {"format": "flotilla-checkpoint-v1", "run_id": "r", "version": "3", "config": CONV_CONFIG}
    path = tmp_path / "c.safetensors"
    save_file({f"model/{k}": v for k, v in params.items()}, str(path), metadata={**meta, "spaces": json.dumps(spaces)})
    p = flotilla.load_policy(path, observation_space=gs.Box(0, 255, shape, np.uint8))
    assert p.network.model == spec and p.network.obs_shape == shape
    frames = rng.integers(0, 256, (5, *shape), dtype=np.uint8)
    want_head, *_ = reference_forward(spec, shape, params, frames.reshape(5, -1).astype(np.float32))
    assert p(frames).tolist() == np.argmax(want_head, axis=1).tolist()
    assert p(frames[0]) == int(np.argmax(want_head[0]))
    # A convolutional checkpoint without its spaces cannot be read: the
    # image shape is not in the tensors.
    save_file({f"model/{k}": v for k, v in params.items()}, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match=r"records no spaces and its \[model\] is convolutional"):
        flotilla.load_policy(path)
