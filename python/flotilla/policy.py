"""The policy network on the CPU, in numpy: the same MLP the learner trains
(libtorch) and the Rust actors run (ndarray).

Parameter names and shapes follow `common/src/model.rs` (all linear layers are
`y = x Wᵀ + b` with `W` of shape `[out, in]`):

| torso | parameters |
| --- | --- |
| separate (default) | `actor.{i}.weight/bias`, `critic.{i}.weight/bias` per hidden layer `i` |
| shared | `torso.{i}.weight/bias` |

Heads: `actor.head.weight/bias` (`[A, h]`: logits for `Discrete(A)`, the
Gaussian mean for a `Box` of `A` values), `critic.head.weight/bias`
(`[1, h]`), and `log_std` (`[A]`, state-independent) for `Box` actions only.

With `normalize_observations` a snapshot also carries the learner's
observation statistics `obs_norm.mean` and `obs_norm.var` (`[obs_dim]`, f32;
not trained, so not parameters), and the network sees

    std = sqrt(var + 1e-8)                          (once per snapshot)
    x   = clip((obs - mean) / std, -observation_clip, observation_clip)

in f32, as `common/src/normalize.rs` computes it: these are correctly rounded
IEEE operations, so numpy, the Rust actors and the learner (libtorch) get
the same bits, and the log-probabilities an actor sends are the ones the
learner recomputes with the same statistics. Actors send the raw
observations.

Acting: a discrete action is sampled from the softmax of the logits (its
log-probability is the log-softmax); a continuous one is
`mean + exp(log_std) * z` with `z ~ N(0, 1)`, and its log-probability is that
of the unclipped sample, summed over dimensions. Greedy acting takes the
argmax or the mean. Clipping a continuous action to its box is the
environment side's business (`flotilla.spaces.ActionAdapter`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .spaces import Box, Space, action_outputs
from .v1 import flotilla_pb2 as pb

#: Largest hidden layer and most layers accepted (`common/src/model.rs`).
MAX_HIDDEN = 8192
MAX_LAYERS = 16

_HALF_LOG_2PI = np.float32(0.5 * math.log(2.0 * math.pi))

#: Names of the observation statistics in snapshots and checkpoints.
OBS_MEAN = "obs_norm.mean"
OBS_VAR = "obs_norm.var"
#: Added to the variance before its square root (fixed: the learner's
#: `normalize::EPSILON`, rounded to f32 as it rounds it).
OBS_NORM_EPSILON = np.float32(1e-8)


class PolicyError(ValueError):
    """Parameters that do not fit the model spec (a missing name, a wrong
    shape or dtype, non-finite values), or a malformed spec."""


@dataclass(frozen=True)
class ModelSpec:
    """The network architecture: a run config's `[model]` table."""

    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    shared_torso: bool = False
    init_log_std: float = 0.0
    normalize_observations: bool = False
    observation_clip: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        problems = self.problems()
        if problems:
            raise PolicyError("; ".join(f"{k}: {m}" for k, m in problems))

    def problems(self) -> list[tuple[str, str]]:
        """What is wrong with the spec, as `(key, message)` pairs."""
        p = []
        if not 1 <= len(self.hidden_sizes) <= MAX_LAYERS:
            p.append(
                (
                    "model.hidden_sizes",
                    f"must list 1 to {MAX_LAYERS} layer sizes, got {len(self.hidden_sizes)}",
                )
            )
        bad = [h for h in self.hidden_sizes if not 1 <= h <= MAX_HIDDEN]
        if bad:
            p.append(("model.hidden_sizes", f"every size must be in 1..={MAX_HIDDEN}, got {bad[0]}"))
        if self.activation not in ("tanh", "relu"):
            p.append(("model.activation", f'must be "tanh" or "relu", got {self.activation!r}'))
        if not math.isfinite(self.init_log_std) or abs(self.init_log_std) > 20.0:
            p.append(("model.init_log_std", f"must be finite and within ±20, got {self.init_log_std}"))
        # Checked when normalizing, as the learner checks it: in f32, the
        # precision the clip travels and is applied in.
        with np.errstate(over="ignore"):
            clip = np.float32(self.observation_clip)
        if self.normalize_observations and not (np.isfinite(clip) and clip > 0.0):
            p.append(("model.observation_clip", f"must be finite and above 0, got {self.observation_clip}"))
        return p

    @classmethod
    def from_proto(cls, m: pb.ModelSpec) -> "ModelSpec":
        activation = {pb.ACTIVATION_TANH: "tanh", pb.ACTIVATION_RELU: "relu"}.get(m.activation)
        if activation is None:
            raise PolicyError(f"field `model.activation`: unknown value {m.activation}")
        return cls(
            hidden_sizes=tuple(m.hidden_sizes),
            activation=activation,
            shared_torso=bool(m.shared_torso),
            init_log_std=float(m.init_log_std),
            normalize_observations=bool(m.normalize_observations),
            observation_clip=float(m.observation_clip),
        )

    @classmethod
    def from_config(cls, table: Mapping[str, Any] | None) -> "ModelSpec":
        """From a run config's `[model]` table (missing keys take the defaults)."""
        table = dict(table or {})
        known = {
            "hidden_sizes",
            "activation",
            "shared_torso",
            "init_log_std",
            "normalize_observations",
            "observation_clip",
        }
        unknown = sorted(set(table) - known)
        if unknown:
            raise PolicyError(f"[model]: unknown keys {unknown}")
        return cls(**table)

    def parameter_shapes(self, obs_dim: int, action_space: Space) -> list[tuple[str, tuple[int, ...]]]:
        """Every parameter's name and shape, in the learner's order."""
        act = action_outputs(action_space)
        out: list[tuple[str, tuple[int, ...]]] = []
        for torso in ("torso",) if self.shared_torso else ("actor", "critic"):
            inputs = obs_dim
            for i, h in enumerate(self.hidden_sizes):
                out.append((f"{torso}.{i}.weight", (h, inputs)))
                out.append((f"{torso}.{i}.bias", (h,)))
                inputs = h
        last = self.hidden_sizes[-1]
        out += [
            ("actor.head.weight", (act, last)),
            ("actor.head.bias", (act,)),
            ("critic.head.weight", (1, last)),
            ("critic.head.bias", (1,)),
        ]
        if isinstance(action_space, Box):
            out.append(("log_std", (act,)))
        return out

    def statistics_shapes(self, obs_dim: int) -> list[tuple[str, tuple[int, ...]]]:
        """The observation statistics a snapshot carries besides the
        parameters: none without `normalize_observations`."""
        if not self.normalize_observations:
            return []
        return [(OBS_MEAN, (obs_dim,)), (OBS_VAR, (obs_dim,))]


@dataclass
class Sampled:
    """Actions for `N` observations with their log-probabilities.

    `actions` is `[N]` int64 for `Discrete`, `[N, A]` float32 (unclipped) for
    `Box`; `logp` is `[N]` float32; `value` is `[N]` float32 when asked for.
    """

    actions: np.ndarray
    logp: np.ndarray
    value: np.ndarray | None = None


@dataclass
class _Linear:
    wt: np.ndarray  # [in, out]: W transposed once, for x @ wt
    b: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self.wt
        y += self.b
        return y


@dataclass
class Policy:
    """The policy network over `obs_dim` flat observations and `action_space`.

    `params` holds the tensors of a snapshot: the parameters and, with
    `model.normalize_observations`, the observation statistics, which move
    to `statistics`; other names are ignored."""

    model: ModelSpec
    obs_dim: int
    action_space: Space
    params: dict[str, np.ndarray] = field(repr=False)
    statistics: dict[str, np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        checked = _checked("parameter", self.params, self.model.parameter_shapes(self.obs_dim, self.action_space))
        self.statistics = _checked("observation statistic", self.params, self.model.statistics_shapes(self.obs_dim))
        if self.statistics and np.any(self.statistics[OBS_VAR] < 0):
            raise PolicyError(f"observation statistic `{OBS_VAR}` holds negative variances")
        self.params = checked
        self._norm: tuple[np.ndarray, np.ndarray, np.float32] | None = None
        if self.statistics:
            std = np.sqrt(self.statistics[OBS_VAR] + OBS_NORM_EPSILON)
            self._norm = (self.statistics[OBS_MEAN].copy(), std, np.float32(self.model.observation_clip))

        def linear(prefix: str) -> _Linear:
            w = checked[f"{prefix}.weight"]
            return _Linear(np.ascontiguousarray(w.T), checked[f"{prefix}.bias"].copy())

        layers = range(len(self.model.hidden_sizes))
        if self.model.shared_torso:
            self._actor = [linear(f"torso.{i}") for i in layers]
            self._critic: list[_Linear] = []
        else:
            self._actor = [linear(f"actor.{i}") for i in layers]
            self._critic = [linear(f"critic.{i}") for i in layers]
        self._actor_head = linear("actor.head")
        self._critic_head = linear("critic.head")
        self._log_std = checked["log_std"].copy() if isinstance(self.action_space, Box) else None
        self._std = None if self._log_std is None else np.exp(self._log_std)
        self._activate = np.tanh if self.model.activation == "tanh" else _relu

    @classmethod
    def from_safetensors(cls, model: ModelSpec, obs_dim: int, action_space: Space, data: bytes) -> "Policy":
        """Loads the parameters of a policy snapshot (safetensors bytes)."""
        from safetensors.numpy import load

        try:
            params = load(bytes(data))
        except Exception as e:  # safetensors raises its own error types
            raise PolicyError(f"snapshot is not a valid safetensors file: {e}") from None
        return cls(model, obs_dim, action_space, params)

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        """What the network sees of observation rows `[N, obs_dim]` (float32):
        `clip((obs - mean) / std, -clip, clip)` with the snapshot's
        statistics, or the rows themselves without normalization."""
        if self._norm is None:
            return obs
        mean, std, clip = self._norm
        return np.clip((obs - mean) / std, -clip, clip)

    def _torso(self, layers: list[_Linear], x: np.ndarray) -> np.ndarray:
        for layer in layers:
            x = self._activate(layer(x))
        return x

    def forward(self, obs: np.ndarray, with_value: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Batched forward pass over `obs` `[N, obs_dim]`: the head's output
        (`[N, A]` logits or means) and, when asked, the values `[N]`."""
        x = np.asarray(obs, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.obs_dim:
            raise ValueError(f"observations must be [N, {self.obs_dim}], got {list(x.shape)}")
        x = self.normalize(x)
        h = self._torso(self._actor, x)
        head = self._actor_head(h)
        value = None
        if with_value:
            c = h if self.model.shared_torso else self._torso(self._critic, x)
            value = self._critic_head(c)[:, 0]
        return head, value

    def act(
        self,
        obs: np.ndarray,
        rng: np.random.Generator | None = None,
        greedy: bool = False,
        with_value: bool = False,
    ) -> Sampled:
        """One action per observation row, sampled (or, `greedy`, the most
        likely one), with its log-probability under the policy."""
        head, value = self.forward(obs, with_value)
        n = head.shape[0]
        if self._log_std is None:
            logp_all = log_softmax(head)
            if greedy:
                actions = np.argmax(head, axis=1)
            else:
                if rng is None:
                    raise ValueError("sampling needs a random generator")
                # Inverse-CDF sampling from the softmax: the first action whose
                # cumulative probability exceeds u (the last one if rounding
                # leaves the total below u).
                cdf = np.cumsum(np.exp(logp_all), axis=1)
                u = rng.random(n, dtype=np.float32)
                actions = np.minimum((cdf <= u[:, None]).sum(axis=1), head.shape[1] - 1)
            actions = actions.astype(np.int64)
            logp = logp_all[np.arange(n), actions]
        else:
            if greedy:
                actions = head
            else:
                if rng is None:
                    raise ValueError("sampling needs a random generator")
                z = rng.standard_normal(head.shape, dtype=np.float32)
                actions = head + self._std * z
            logp = gaussian_log_prob(actions, head, self._log_std).sum(axis=1, dtype=np.float32)
        return Sampled(actions, logp.astype(np.float32, copy=False), value)


def _checked(
    kind: str, tensors: Mapping[str, np.ndarray], shapes: list[tuple[str, tuple[int, ...]]]
) -> dict[str, np.ndarray]:
    """The tensors named in `shapes`, each checked to be there, float32, of
    its shape and finite; `kind` names them in errors."""
    out: dict[str, np.ndarray] = {}
    for name, shape in shapes:
        if name not in tensors:
            raise PolicyError(f"{kind} `{name}` is missing")
        t = np.asarray(tensors[name])
        if t.dtype != np.float32:
            raise PolicyError(f"{kind} `{name}` is {t.dtype}, expected float32")
        if t.shape != shape:
            raise PolicyError(f"{kind} `{name}` has shape {list(t.shape)}, expected {list(shape)}")
        if not np.all(np.isfinite(t)):
            raise PolicyError(f"{kind} `{name}` holds non-finite values")
        out[name] = t
    return out


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0, out=x)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax, numerically stable."""
    m = logits.max(axis=1, keepdims=True)
    shifted = logits - m
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def gaussian_log_prob(x: np.ndarray, mean: np.ndarray, log_std: np.ndarray) -> np.ndarray:
    """Element-wise log N(x; mean, exp(log_std))."""
    z = (x - mean) / np.exp(log_std)
    return -0.5 * z * z - log_std - _HALF_LOG_2PI


def zero_parameters(model: ModelSpec, obs_dim: int, action_space: Space) -> dict[str, np.ndarray]:
    """Zero weights for every parameter: a uniform (or standard Gaussian)
    policy. For tests and tools."""
    return {name: np.zeros(shape, dtype=np.float32) for name, shape in model.parameter_shapes(obs_dim, action_space)}
