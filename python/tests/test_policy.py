"""The numpy policy against independent references: hand-computed networks,
plain-Python forward passes and the closed forms of the log-probabilities."""

import math

import numpy as np
import pytest
from safetensors.numpy import save

from flotilla.policy import ModelSpec, Policy, PolicyError, gaussian_log_prob, zero_parameters
from flotilla.spaces import ActionAdapter, Box, Discrete

LOG_2PI = math.log(2 * math.pi)


def box(low, high, dim):
    return Box(np.full(dim, low, np.float32), np.full(dim, high, np.float32), (dim,))


def tiny(space, activation="relu"):
    """The Rust tests' tiny network (common/src/policy.rs): obs_dim 2, one
    shared hidden layer of 2 (identity weights), head [[1, 0], [0, 2]],
    critic [1, 1] + 0.5, log_std [0, ln 2] for Box actions."""
    spec = ModelSpec(hidden_sizes=(2,), activation=activation, shared_torso=True)
    p = {
        "torso.0.weight": np.array([[1, 0], [0, 1]], np.float32),
        "torso.0.bias": np.zeros(2, np.float32),
        "actor.head.weight": np.array([[1, 0], [0, 2]], np.float32),
        "actor.head.bias": np.zeros(2, np.float32),
        "critic.head.weight": np.array([[1, 1]], np.float32),
        "critic.head.bias": np.array([0.5], np.float32),
    }
    if isinstance(space, Box):
        p["log_std"] = np.array([0.0, math.log(2.0)], np.float32)
    return Policy(spec, 2, space, p)


def test_parameter_names_and_shapes_follow_the_model_table():
    names = [f"{n}{list(s)}" for n, s in ModelSpec().parameter_shapes(4, Discrete(2))]
    assert names == [
        "actor.0.weight[64, 4]",
        "actor.0.bias[64]",
        "actor.1.weight[64, 64]",
        "actor.1.bias[64]",
        "critic.0.weight[64, 4]",
        "critic.0.bias[64]",
        "critic.1.weight[64, 64]",
        "critic.1.bias[64]",
        "actor.head.weight[2, 64]",
        "actor.head.bias[2]",
        "critic.head.weight[1, 64]",
        "critic.head.bias[1]",
    ]
    shared = ModelSpec(hidden_sizes=(32,), shared_torso=True).parameter_shapes(3, box(-2, 2, 1))
    assert [n for n, _ in shared] == [
        "torso.0.weight",
        "torso.0.bias",
        "actor.head.weight",
        "actor.head.bias",
        "critic.head.weight",
        "critic.head.bias",
        "log_std",
    ]
    assert shared[-1][1] == (1,)


def test_hand_worked_forward_pass():
    p = tiny(Discrete(2))
    head, value = p.forward(np.array([[1.0, -3.0], [0.5, 0.25]], np.float32), with_value=True)
    # relu([1, -3]) = [1, 0] -> logits [1, 0], value 1.5;
    # relu([.5, .25]) -> logits [.5, .5], value 1.25
    np.testing.assert_array_equal(head, [[1.0, 0.0], [0.5, 0.5]])
    np.testing.assert_array_equal(value, [1.5, 1.25])
    _, none = p.forward(np.zeros((1, 2), np.float32))
    assert none is None


def _reference_forward(params, hidden, obs, act_name, torso, activation):
    """A plain-Python forward pass (lists and math, no numpy algebra)."""
    f = math.tanh if activation == "tanh" else (lambda v: max(v, 0.0))

    def linear(prefix, x):
        w = params[f"{prefix}.weight"].tolist()
        b = params[f"{prefix}.bias"].tolist()
        return [sum(wi * xi for wi, xi in zip(row, x)) + bi for row, bi in zip(w, b)]

    x = list(obs)
    for i in range(hidden):
        x = [f(v) for v in linear(f"{torso}.{i}", x)]
    return linear(act_name, x)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("shared", [False, True])
def test_forward_matches_a_plain_python_reference(activation, shared):
    rng = np.random.default_rng(3)
    spec = ModelSpec(hidden_sizes=(5, 3), activation=activation, shared_torso=shared)
    params = {n: rng.normal(0, 0.7, s).astype(np.float32) for n, s in spec.parameter_shapes(4, Discrete(3))}
    p = Policy(spec, 4, Discrete(3), params)
    obs = rng.normal(0, 1, (6, 4)).astype(np.float32)
    head, value = p.forward(obs, with_value=True)
    torso = "torso" if shared else "actor"
    for i, o in enumerate(obs.tolist()):
        want = _reference_forward(params, 2, o, "actor.head", torso, activation)
        np.testing.assert_allclose(head[i], want, rtol=1e-5, atol=1e-5)
        want_v = _reference_forward(params, 2, o, "critic.head", "torso" if shared else "critic", activation)
        np.testing.assert_allclose(value[i], want_v[0], rtol=1e-5, atol=1e-5)


def test_discrete_log_probabilities_are_the_log_softmax():
    p = tiny(Discrete(2))
    obs = np.array([[2.0, 0.0]] * 4000, np.float32)  # logits [2, 0]
    s = p.act(obs, np.random.default_rng(1))
    lse = math.log(math.exp(2) + 1)
    for a, lp in zip(s.actions, s.logp):
        want = (2.0 if a == 0 else 0.0) - lse
        assert abs(lp - want) < 1e-6
    assert s.actions.dtype == np.int64 and s.logp.dtype == np.float32
    # Sampling follows the softmax: P(0) = e^2 / (e^2 + 1) ~ 0.8808.
    frac = float(np.mean(s.actions == 0))
    assert abs(frac - math.exp(2) / (math.exp(2) + 1)) < 0.02, frac


def test_greedy_takes_the_mode():
    p = tiny(Discrete(2))
    g = p.act(np.array([[2.0, 0.0], [0.1, 3.0]], np.float32), greedy=True)
    assert g.actions.tolist() == [0, 1]
    assert abs(g.logp[0] - (2.0 - math.log(math.exp(2) + 1))) < 1e-6
    b = tiny(box(-1, 1, 2))
    g = b.act(np.array([[0.3, 0.2]], np.float32), greedy=True)
    np.testing.assert_allclose(g.actions, [[0.3, 0.4]], rtol=1e-6)
    # log N(mean; mean, sigma) = -log sigma - log(2 pi) / 2, summed over the dims.
    want = (0 - 0.5 * LOG_2PI) + (-math.log(2) - 0.5 * LOG_2PI)
    assert abs(g.logp[0] - want) < 1e-5


def test_gaussian_log_prob_matches_the_closed_form():
    # x = 1, mu = 0, sigma = 2: -ln 2 - ln(2 pi) / 2 - 1/8
    want = -math.log(2) - 0.5 * LOG_2PI - 0.125
    got = gaussian_log_prob(np.float32(1.0), np.float32(0.0), np.float32(math.log(2)))
    assert abs(float(got) - want) < 1e-6


def test_gaussian_samples_are_logged_unclipped_and_clipped_only_for_the_env():
    space = box(-0.1, 0.1, 2)
    p = tiny(space)
    obs = np.zeros((5000, 2), np.float32)  # mean [0, 0], sigma [1, 2]
    s = p.act(obs, np.random.default_rng(7))
    a = s.actions
    assert a.shape == (5000, 2) and a.dtype == np.float32
    # The chunk carries the samples themselves, far outside the box.
    assert np.abs(a).max() > 1.0
    np.testing.assert_allclose(a.std(axis=0), [1.0, 2.0], rtol=0.05)
    np.testing.assert_allclose(a.mean(axis=0), [0.0, 0.0], atol=0.08)
    # ... with the log-density of the unclipped sample, summed over dims.
    sig = np.array([1.0, 2.0])
    want = (-0.5 * (a / sig) ** 2 - np.log(sig) - 0.5 * LOG_2PI).sum(axis=1)
    np.testing.assert_allclose(s.logp, want, rtol=1e-5, atol=1e-5)
    # The environment receives them clipped to the box.
    import gymnasium.spaces as gs

    env_actions = ActionAdapter(gs.Box(-0.1, 0.1, (2,), np.float32)).to_env_batch(a)
    assert env_actions.min() >= -0.1 and env_actions.max() <= 0.1
    np.testing.assert_array_equal(env_actions, np.clip(a, -0.1, 0.1))


def test_sampling_is_reproducible_from_its_seed():
    p = tiny(Discrete(2))
    obs = np.zeros((64, 2), np.float32)
    a = p.act(obs, np.random.default_rng(11)).actions
    b = p.act(obs, np.random.default_rng(11)).actions
    np.testing.assert_array_equal(a, b)


def test_zero_weights_are_a_uniform_policy():
    spec = ModelSpec(hidden_sizes=(4,))
    p = Policy(spec, 3, Discrete(4), zero_parameters(spec, 3, Discrete(4)))
    s = p.act(np.ones((10, 3), np.float32), np.random.default_rng(0), with_value=True)
    np.testing.assert_allclose(s.logp, math.log(0.25), rtol=1e-6)
    np.testing.assert_array_equal(s.value, np.zeros(10))


def test_loading_checks_names_shapes_dtypes_and_values():
    spec = ModelSpec(hidden_sizes=(2,), shared_torso=True)
    good = zero_parameters(spec, 2, Discrete(2))
    Policy.from_safetensors(spec, 2, Discrete(2), save(good))

    with pytest.raises(PolicyError, match="actor.head.weight.*shape"):
        Policy.from_safetensors(spec, 2, Discrete(3), save(good))
    with pytest.raises(PolicyError, match="log_std"):
        Policy.from_safetensors(spec, 2, box(-1, 1, 2), save(good))
    wrong_dtype = dict(good, **{"torso.0.bias": np.zeros(2, np.float64)})
    with pytest.raises(PolicyError, match="float32"):
        Policy.from_safetensors(spec, 2, Discrete(2), save(wrong_dtype))
    nan = dict(good, **{"torso.0.bias": np.array([0, np.nan], np.float32)})
    with pytest.raises(PolicyError, match="non-finite"):
        Policy.from_safetensors(spec, 2, Discrete(2), save(nan))
    with pytest.raises(PolicyError, match="safetensors"):
        Policy.from_safetensors(spec, 2, Discrete(2), b"xx")


def test_model_specs_are_checked():
    with pytest.raises(PolicyError, match="hidden_sizes"):
        ModelSpec(hidden_sizes=())
    with pytest.raises(PolicyError, match="activation"):
        ModelSpec(activation="gelu")
    with pytest.raises(PolicyError, match="init_log_std"):
        ModelSpec(init_log_std=float("nan"))
    with pytest.raises(PolicyError, match="unknown keys"):
        ModelSpec.from_config({"hidden": [3]})
    assert ModelSpec.from_config({"hidden_sizes": [8], "activation": "relu"}).hidden_sizes == (8,)


def statistics(mean, var) -> dict[str, np.ndarray]:
    return {"obs_norm.mean": np.array(mean, np.float32), "obs_norm.var": np.array(var, np.float32)}


def normalizing(obs_dim: int, mean, var, clip: float = 10.0, space=Discrete(2)) -> Policy:
    """Zero weights over normalized observations with these statistics."""
    spec = ModelSpec(hidden_sizes=(2,), normalize_observations=True, observation_clip=clip)
    return Policy(spec, obs_dim, space, {**zero_parameters(spec, obs_dim, space), **statistics(mean, var)})


def test_hand_worked_observation_normalization():
    # The Rust actor's case (common/src/normalize.rs): (3 - 1) / sqrt(4) = 1;
    # (-100 - 0) / sqrt(1) = -100, clipped to -10; a variance of 0 divides
    # by sqrt(1e-8) = 1e-4, so 2 + 1e-5 (in f32) is about 0.1 from its mean 2.
    p = normalizing(3, [1, 0, 2], [4, 1, 0])
    x = p.normalize(np.array([[3, -100, 2], [1, 0.5, 2 + 1e-5]], np.float32))
    assert x.dtype == np.float32
    assert x[0].tolist() == [1.0, -10.0, 0.0]
    assert x[1, :2].tolist() == [0.0, 0.5]
    assert abs(x[1, 2] - 0.1) < 5e-3, x[1, 2]
    # The clip is the run's: ±0.5 here.
    x = normalizing(2, [0, 0], [1, 1], clip=0.5).normalize(np.array([[0.25, 7]], np.float32))
    assert x.tolist() == [[0.25, 0.5]]


def test_normalization_is_computed_in_f32_in_the_specified_order():
    """The learner and the Rust actors compute `sqrt(var + 1e-8)` in f32,
    then `(obs - mean) / std` in f32: the same bits here, which the same
    formula evaluated in f64 and rounded once would not give."""
    rng = np.random.default_rng(5)
    mean = rng.normal(0, 3, 6).astype(np.float32)
    var = np.concatenate([rng.uniform(0, 2, 5), [0.0]]).astype(np.float32)
    obs = rng.normal(0, 4, (500, 6)).astype(np.float32)
    got = normalizing(6, mean, var, clip=3.0).normalize(obs)
    std = np.sqrt(var + np.float32(1e-8))
    assert std.dtype == np.float32
    want = np.clip((obs - mean) / std, np.float32(-3.0), np.float32(3.0))
    assert got.dtype == np.float32 and got.tobytes() == want.tobytes()
    wide = np.clip((obs.astype(np.float64) - mean) / np.sqrt(var.astype(np.float64) + 1e-8), -3.0, 3.0)
    assert (wide.astype(np.float32) != got).any(), "the check cannot tell f32 from f64"
    # A variance of 1 divides by exactly 1 (1 + 1e-8 is 1 in f32).
    assert normalizing(6, [0] * 6, [1] * 6).normalize(obs).tobytes() == np.clip(obs, -10, 10).tobytes()


def test_observation_statistics_are_checked_when_normalizing():
    spec = ModelSpec(hidden_sizes=(2,), normalize_observations=True)
    params = zero_parameters(spec, 3, Discrete(2))
    good = statistics([0, 0, 0], [1, 1, 1])
    assert sorted(Policy(spec, 3, Discrete(2), {**params, **good}).statistics) == ["obs_norm.mean", "obs_norm.var"]
    cases = [
        ({"obs_norm.mean": good["obs_norm.mean"]}, r"observation statistic `obs_norm.var` is missing"),
        ({"obs_norm.var": good["obs_norm.var"]}, r"observation statistic `obs_norm.mean` is missing"),
        (statistics([0, 0], [1, 1]), r"`obs_norm.mean` has shape \[2\], expected \[3\]"),
        (statistics([0, 0, 0], [[1, 1, 1]]), r"`obs_norm.var` has shape \[1, 3\], expected \[3\]"),
        ({**good, "obs_norm.var": np.ones(3, np.float64)}, r"`obs_norm.var` is float64, expected float32"),
        (statistics([0, np.inf, 0], [1, 1, 1]), r"`obs_norm.mean` holds non-finite values"),
        (statistics([0, 0, 0], [1, np.nan, 1]), r"`obs_norm.var` holds non-finite values"),
        (statistics([0, 0, 0], [1, -1e-6, 1]), r"`obs_norm.var` holds negative variances"),
    ]
    for stats, needle in cases:
        with pytest.raises(PolicyError, match=needle):
            Policy.from_safetensors(spec, 3, Discrete(2), save({**params, **stats}))


def test_without_normalization_the_statistics_are_neither_needed_nor_used():
    spec = ModelSpec(hidden_sizes=(2,))
    params = zero_parameters(spec, 3, Discrete(2))
    assert Policy(spec, 3, Discrete(2), params).statistics == {}
    # Present (even unusable), they are ignored.
    p = Policy.from_safetensors(spec, 3, Discrete(2), save({**params, **statistics([5, 5], [-1, -1])}))
    assert p.statistics == {} and sorted(p.params) == sorted(params)
    obs = np.array([[100.0, -3.0, 0.5]], np.float32)
    assert p.normalize(obs) is obs


@pytest.mark.parametrize("space", [Discrete(3), box(-1, 1, 2)], ids=["discrete", "box"])
@pytest.mark.parametrize("shared", [False, True], ids=["separate", "shared"])
def test_act_and_value_see_the_normalized_observations(space, shared):
    """A normalizing policy acts on raw observations exactly as the same
    weights without normalization act on observations normalized by hand:
    the same actions, log-probabilities and values, bit for bit."""
    rng = np.random.default_rng(9)
    plain = ModelSpec(hidden_sizes=(8, 8), shared_torso=shared)
    norm = ModelSpec(hidden_sizes=(8, 8), shared_torso=shared, normalize_observations=True, observation_clip=2.5)
    params = {n: rng.normal(0, 0.5, s).astype(np.float32) for n, s in plain.parameter_shapes(4, space)}
    mean = np.array([100.0, -2.0, 0.0, 0.5], np.float32)
    var = np.array([400.0, 0.25, 1.0, 0.0], np.float32)
    raw = (mean + rng.normal(0, 1, (64, 4)) * np.sqrt(var + 1.0) * 2).astype(np.float32)
    by_hand = np.clip((raw - mean) / np.sqrt(var + np.float32(1e-8)), np.float32(-2.5), np.float32(2.5))
    assert by_hand.dtype == np.float32 and (np.abs(by_hand) == np.float32(2.5)).any()  # some are clipped

    normalizing_policy = Policy.from_safetensors(norm, 4, space, save({**params, **statistics(mean, var)}))
    plain_policy = Policy.from_safetensors(plain, 4, space, save(params))
    for greedy in (False, True):
        a = normalizing_policy.act(raw, np.random.default_rng(1), greedy=greedy, with_value=True)
        b = plain_policy.act(by_hand, np.random.default_rng(1), greedy=greedy, with_value=True)
        assert a.actions.tobytes() == b.actions.tobytes()
        assert a.logp.tobytes() == b.logp.tobytes()
        assert a.value.tobytes() == b.value.tobytes()
    # ... and not what the raw observations give.
    c = plain_policy.act(raw, np.random.default_rng(1), with_value=True)
    assert not np.array_equal(c.value, a.value)


def test_normalization_settings_are_read_from_configs_and_the_wire():
    from flotilla.v1 import flotilla_pb2 as pb

    default = ModelSpec.from_config({})
    assert (default.normalize_observations, default.observation_clip) == (False, 10.0)
    spec = ModelSpec.from_config({"normalize_observations": True, "observation_clip": 5})
    assert (spec.normalize_observations, spec.observation_clip) == (True, 5)
    assert spec.statistics_shapes(3) == [("obs_norm.mean", (3,)), ("obs_norm.var", (3,))]
    assert default.statistics_shapes(3) == []
    # 1e39 and 1e-46 are finite and positive in f64 but not in f32, the
    # precision the learner checks and applies the clip in.
    for clip in (0.0, -1.0, math.inf, math.nan, 1e39, 1e-46):
        with pytest.raises(PolicyError, match="model.observation_clip: must be finite and above 0"):
            ModelSpec.from_config({"normalize_observations": True, "observation_clip": clip})

    wire = pb.ModelSpec(hidden_sizes=[8], activation=pb.ACTIVATION_RELU, observation_clip=0.3, observation_scale=1.0)
    wire.normalize_observations = True
    spec = ModelSpec.from_proto(wire)
    # The f32 of the wire, which is the clip the learner applies.
    assert spec.normalize_observations and spec.observation_clip == float(np.float32(0.3))
    plain = pb.ModelSpec(hidden_sizes=[8], activation=pb.ACTIVATION_TANH, observation_clip=10.0, observation_scale=1.0)
    assert not ModelSpec.from_proto(plain).normalize_observations
    # The clip only matters, and is only checked, when normalizing (as in Rust).
    unset = pb.ModelSpec(hidden_sizes=[8], activation=pb.ACTIVATION_TANH, observation_scale=1.0)
    assert ModelSpec.from_proto(unset).observation_clip == 0.0
    for clip in (0.0, -2.0, math.inf, math.nan):
        wire.observation_clip = clip
        with pytest.raises(PolicyError, match="model.observation_clip"):
            ModelSpec.from_proto(wire)
