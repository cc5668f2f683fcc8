"""The policy network on the CPU, in numpy: the same network the learner
trains (libtorch) and the Rust actors run (ndarray).

Parameter names and shapes follow `common/src/model.rs` (all linear layers are
`y = x Wᵀ + b` with `W` of shape `[out, in]`):

| torso | parameters |
| --- | --- |
| separate (default) | `actor.{i}.weight/bias`, `critic.{i}.weight/bias` per hidden layer `i` |
| shared | `torso.{i}.weight/bias` |

With a convolutional torso (`model.conv` not empty) each torso starts with
its convolutions, `{torso}.conv.{j}.weight` (`[out_channels, in_channels, k,
k]`) and `{torso}.conv.{j}.bias` (`[out_channels]`): PyTorch's `Conv2d` with
a square kernel, the layer's stride, no padding and no dilation, each
followed by a ReLU (whatever `model.activation` says, which is the hidden
layers'). Their output is flattened in channel, row, column order (PyTorch's
`flatten(1)`) into the hidden layers. The observation is then an image: its
declared shape is read as `[C, H, W]` (`observation_layout = "chw"`, the
default) or `[H, W, C]` (`"hwc"`), and a two-dimensional `[H, W]` one is one
channel. `parameter_shapes` lists each torso's convolutions before its
linear layers.

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
observations. The network then multiplies by `observation_scale` (in f32;
1/255 maps u8 pixels to [0, 1]), skipped when it is 1.

The convolutions are computed by im2col: the patches of a channels-last
image are gathered into a `[N*H'*W', k*k*C]` matrix (one copy) and
multiplied by the weight in one BLAS product per layer, in f32. Each output
is then `bias + Σ w·x` summed in f32 in some order, within
`γ(n)·(|bias| + Σ |w|·|x|)` of the exact value (`n = C*k*k + 1`,
`γ(n) = n·u / (1 - n·u)`, `u = 2⁻²⁴`), the bound libtorch's and the Rust
actor's results obey too; the three need not agree bit for bit. Channels
last, each window is `k` runs of `k*C` contiguous values, so gathering the
patches costs a fraction of the products: the Nature torso on 4x84x84
frames runs about 2,800 observations/s on one core at batch 8 or 32
(`python/benches/nature_cnn.py`, OpenBLAS; the products take about half
of the time, the patches and the CHW-to-HWC copy about a fifth).

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

#: Largest hidden layer, most hidden layers (and most convolutions), most
#: output channels of one convolution, largest kernel side and stride
#: (`common/src/model.rs`).
MAX_HIDDEN = 8192
MAX_LAYERS = 16
MAX_CHANNELS = 1024
MAX_KERNEL = 32

#: Axis orders of image observations (`model.observation_layout`).
LAYOUTS = ("chw", "hwc")

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
class ConvLayer:
    """One convolution of a convolutional torso: `channels` output channels,
    a square `kernel` x `kernel` window moved by `stride`, no padding
    (PyTorch's `Conv2d(in, channels, kernel, stride)`), then a ReLU."""

    channels: int
    kernel: int
    stride: int


#: The convolutions of the Nature DQN torso (Mnih et al. 2015), which
#: `ModelSpec.nature()` (`[model] preset = "nature"`) pairs with one hidden
#: layer of 512 ReLU units, a shared torso and inputs scaled by 1/255.
NATURE_CONV = (ConvLayer(32, 8, 4), ConvLayer(64, 4, 2), ConvLayer(64, 3, 1))


def _conv_layer(j: int, value: Any) -> ConvLayer:
    """A `model.conv` entry: a `ConvLayer`, a table `{channels, kernel,
    stride}` (a run config's `[[model.conv]]`) or a `(channels, kernel,
    stride)` triple."""
    if isinstance(value, ConvLayer):
        fields = (value.channels, value.kernel, value.stride)
    elif isinstance(value, Mapping):
        keys = ("channels", "kernel", "stride")
        if sorted(value) != sorted(keys):
            raise PolicyError(f"model.conv: convolution {j} must have the keys {list(keys)}, got {sorted(value)}")
        fields = tuple(value[k] for k in keys)
    elif isinstance(value, (tuple, list)) and len(value) == 3:
        fields = tuple(value)
    else:
        raise PolicyError(f"model.conv: convolution {j} must be a table of channels, kernel and stride, got {value!r}")
    if not all(isinstance(f, (int, np.integer)) and not isinstance(f, bool) for f in fields):
        raise PolicyError(f"model.conv: convolution {j} must have integer channels, kernel and stride, got {fields}")
    return ConvLayer(*(int(f) for f in fields))


def _as_shape(obs_shape: int | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """An observation shape: an int `n` is the flat shape `(n,)`."""
    if isinstance(obs_shape, (int, np.integer)):
        return (int(obs_shape),)
    return tuple(int(d) for d in obs_shape)


@dataclass(frozen=True)
class ModelSpec:
    """The network architecture: a run config's `[model]` table."""

    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    shared_torso: bool = False
    init_log_std: float = 0.0
    normalize_observations: bool = False
    observation_clip: float = 10.0
    #: Convolutions at the start of each torso (empty: an MLP).
    conv: tuple[ConvLayer, ...] = ()
    #: Axis order of image observations, "chw" or "hwc" (convolutional
    #: torsos only).
    observation_layout: str = "chw"
    #: Factor applied to observations first thing in the network (after
    #: normalization): 1/255 maps u8 pixels to [0, 1]. Rounded to f32.
    observation_scale: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        if not isinstance(self.conv, (list, tuple)):
            raise PolicyError(f"model.conv: must be a list of convolutions, got {self.conv!r}")
        object.__setattr__(self, "conv", tuple(_conv_layer(j, c) for j, c in enumerate(self.conv)))
        problems = self.problems()
        if problems:
            raise PolicyError("; ".join(f"{k}: {m}" for k, m in problems))
        # Held as the f32 the learner holds and applies (1/255 from a config
        # equals the 1/255 of the wire).
        object.__setattr__(self, "observation_scale", float(np.float32(self.observation_scale)))

    @classmethod
    def nature(cls) -> "ModelSpec":
        """The Nature DQN network (`[model] preset = "nature"`): `NATURE_CONV`,
        one hidden layer of 512 ReLU units, one torso for both heads, inputs
        scaled by 1/255."""
        return cls(
            conv=NATURE_CONV,
            hidden_sizes=(512,),
            activation="relu",
            shared_torso=True,
            observation_scale=1.0 / 255.0,
        )

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
        if len(self.conv) > MAX_LAYERS:
            p.append(("model.conv", f"must list at most {MAX_LAYERS} convolutions, got {len(self.conv)}"))
        for j, layer in enumerate(self.conv):
            channels_ok = 1 <= layer.channels <= MAX_CHANNELS
            if not (channels_ok and 1 <= layer.kernel <= MAX_KERNEL and 1 <= layer.stride <= MAX_KERNEL):
                p.append(
                    (
                        "model.conv",
                        f"convolution {j} has channels {layer.channels}, kernel {layer.kernel}, stride "
                        f"{layer.stride}: channels must be in 1..={MAX_CHANNELS}, "
                        f"kernel and stride in 1..={MAX_KERNEL}",
                    )
                )
                break
        if self.observation_layout not in LAYOUTS:
            p.append(("model.observation_layout", f'must be "chw" or "hwc", got {self.observation_layout!r}'))
        # In f32, as the learner checks and applies it.
        with np.errstate(over="ignore"):
            scale = np.float32(self.observation_scale)
        if not (np.isfinite(scale) and scale > 0.0):
            p.append(("model.observation_scale", f"must be finite and above 0, got {self.observation_scale}"))
        return p

    def is_convolutional(self) -> bool:
        """Whether the torso starts with convolutions."""
        return bool(self.conv)

    def image_shape(self, obs_shape: int | tuple[int, ...]) -> tuple[int, int, int]:
        """The image `(C, H, W)` a convolutional torso reads from observations
        of shape `obs_shape`, per `observation_layout`; `PolicyError` naming
        `model.conv` for observations that are not images."""
        shape = _as_shape(obs_shape)
        if len(shape) == 2:
            return (1, *shape)
        if len(shape) == 3:
            return shape if self.observation_layout == "chw" else (shape[2], shape[0], shape[1])
        raise PolicyError(
            "model.conv: a convolutional torso needs image observations of 2 or 3 dimensions, "
            f"the observation space has shape {list(shape)}"
        )

    def conv_shapes(self, obs_shape: int | tuple[int, ...]) -> list[tuple[int, int, int]]:
        """The `(C, H, W)` after each convolution for observations of shape
        `obs_shape`; `PolicyError` naming `model.conv` when they are not
        images or an image is smaller than a kernel."""
        shape = _as_shape(obs_shape)
        c, h, w = self.image_shape(shape)
        out = []
        for j, layer in enumerate(self.conv):
            k, s = layer.kernel, layer.stride
            if h < k or w < k:
                raise PolicyError(
                    f"model.conv: convolution {j} ({k}x{k} kernel) does not fit its {c}x{h}x{w} input "
                    f"(observations of shape {list(shape)})"
                )
            c, h, w = layer.channels, (h - k) // s + 1, (w - k) // s + 1
            out.append((c, h, w))
        return out

    def problems_with(self, obs_shape: int | tuple[int, ...]) -> list[tuple[str, str]]:
        """Problems of this spec with observations of shape `obs_shape` (a
        convolutional torso needs an image its kernels fit), as
        `(key, message)`; `problems()` first."""
        p = self.problems()
        if not p and self.conv:
            try:
                self.conv_shapes(obs_shape)
            except PolicyError as e:
                # Every error of conv_shapes is "model.conv: ...".
                p.append(("model.conv", str(e).removeprefix("model.conv: ")))
        return p

    def _torso_features(self, shape: tuple[int, ...]) -> int:
        """Inputs of the first hidden layer: the flattened output of the last
        convolution, or the observation's size (also when the convolutions
        do not fit, which `problems_with` reports)."""
        if self.conv:
            try:
                return math.prod(self.conv_shapes(shape)[-1])
            except PolicyError:
                pass
        return math.prod(shape)

    @classmethod
    def from_proto(cls, m: pb.ModelSpec) -> "ModelSpec":
        activation = {pb.ACTIVATION_TANH: "tanh", pb.ACTIVATION_RELU: "relu"}.get(m.activation)
        if activation is None:
            raise PolicyError(f"field `model.activation`: unknown value {m.activation}")
        layout = {pb.OBSERVATION_LAYOUT_CHW: "chw", pb.OBSERVATION_LAYOUT_HWC: "hwc"}.get(m.observation_layout)
        if layout is None:
            raise PolicyError(f"field `model.observation_layout`: unknown value {m.observation_layout}")
        return cls(
            hidden_sizes=tuple(m.hidden_sizes),
            activation=activation,
            shared_torso=bool(m.shared_torso),
            init_log_std=float(m.init_log_std),
            normalize_observations=bool(m.normalize_observations),
            observation_clip=float(m.observation_clip),
            conv=tuple(ConvLayer(int(c.channels), int(c.kernel), int(c.stride)) for c in m.conv),
            observation_layout=layout,
            observation_scale=float(m.observation_scale),
        )

    @classmethod
    def from_config(cls, table: Mapping[str, Any] | None) -> "ModelSpec":
        """From a run config's `[model]` table (missing keys take the
        defaults; with `preset = "nature"`, the Nature network's, which the
        table's own keys override)."""
        table = dict(table or {})
        preset = table.pop("preset", None)
        known = {
            "hidden_sizes",
            "activation",
            "shared_torso",
            "init_log_std",
            "normalize_observations",
            "observation_clip",
            "conv",
            "observation_layout",
            "observation_scale",
        }
        unknown = sorted(set(table) - known)
        if unknown:
            raise PolicyError(f"[model]: unknown keys {unknown}")
        if preset is None:
            return cls(**table)
        if not isinstance(preset, str):
            raise PolicyError(f'model.preset: expected one of "nature", got {preset!r}')
        if preset != "nature":
            raise PolicyError(f'model.preset: unknown preset "{preset}"; expected one of "nature"')
        base = cls.nature()
        return cls(**{**{k: getattr(base, k) for k in known}, **table})

    def parameter_shapes(
        self, obs_shape: int | tuple[int, ...], action_space: Space
    ) -> list[tuple[str, tuple[int, ...]]]:
        """Every parameter's name and shape, in the learner's order, for
        observations of shape `obs_shape` (an int: flat observations of that
        size). For a convolutional spec whose kernels do not fit the
        observations (`problems_with` says so) the convolutions are listed
        but the first hidden layer reads the flat observation, as in Rust."""
        shape = _as_shape(obs_shape)
        act = action_outputs(action_space)
        features = self._torso_features(shape)
        try:
            image_channels = self.image_shape(shape)[0]
        except PolicyError:
            image_channels = 1
        out: list[tuple[str, tuple[int, ...]]] = []
        for torso in ("torso",) if self.shared_torso else ("actor", "critic"):
            channels = image_channels
            for j, layer in enumerate(self.conv):
                out.append((f"{torso}.conv.{j}.weight", (layer.channels, channels, layer.kernel, layer.kernel)))
                out.append((f"{torso}.conv.{j}.bias", (layer.channels,)))
                channels = layer.channels
            inputs = features
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
class _Conv:
    """One convolution and its ReLU on channels-last images, by im2col."""

    wt: np.ndarray  # [k*k*in, out]: the weight [out, in, k, k] as (row, column, channel) patches, transposed
    b: np.ndarray
    kernel: int
    stride: int

    @classmethod
    def from_weight(cls, weight: np.ndarray, bias: np.ndarray, stride: int) -> "_Conv":
        out, _, k, _ = weight.shape
        wt = np.ascontiguousarray(weight.transpose(2, 3, 1, 0).reshape(-1, out))
        return cls(wt, bias.copy(), k, stride)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """`relu(conv(x))` for images `x` `[N, H, W, C]`: `[N, H', W', out]`."""
        n = x.shape[0]
        k, s = self.kernel, self.stride
        # [N, H-k+1, W-k+1, C, k, k] (a view), every `s`-th window, as
        # [N, H', W', k, k, C]: each window's rows are runs of k*C
        # consecutive values of `x`, which the reshape copies into the
        # [N*H'*W', k*k*C] patch matrix.
        windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s]
        _, ho, wo = windows.shape[:3]
        patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, -1)
        y = patches @ self.wt
        y += self.b
        return _relu(y).reshape(n, ho, wo, -1)


@dataclass
class _Torso:
    convs: list[_Conv]
    layers: list[_Linear]


@dataclass
class Policy:
    """The policy network over observations of shape `obs_shape` (an int
    `n`: flat observations of `n` values) and `action_space`; it takes them
    as flat `[N, obs_dim]` rows.

    `params` holds the tensors of a snapshot: the parameters and, with
    `model.normalize_observations`, the observation statistics, which move
    to `statistics`; other names are ignored."""

    model: ModelSpec
    obs_shape: tuple[int, ...]
    action_space: Space
    params: dict[str, np.ndarray] = field(repr=False)
    statistics: dict[str, np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.obs_shape = _as_shape(self.obs_shape)
        problems = self.model.problems_with(self.obs_shape)
        if problems:
            raise PolicyError("; ".join(f"{k}: {m}" for k, m in problems))
        checked = _checked("parameter", self.params, self.model.parameter_shapes(self.obs_shape, self.action_space))
        self.statistics = _checked("observation statistic", self.params, self.model.statistics_shapes(self.obs_dim))
        if self.statistics and np.any(self.statistics[OBS_VAR] < 0):
            raise PolicyError(f"observation statistic `{OBS_VAR}` holds negative variances")
        self.params = checked
        self._norm: tuple[np.ndarray, np.ndarray, np.float32] | None = None
        if self.statistics:
            std = np.sqrt(self.statistics[OBS_VAR] + OBS_NORM_EPSILON)
            self._norm = (self.statistics[OBS_MEAN].copy(), std, np.float32(self.model.observation_clip))
        scale = np.float32(self.model.observation_scale)
        self._scale = None if scale == 1.0 else scale
        self._image = self.model.image_shape(self.obs_shape) if self.model.conv else None

        def linear(prefix: str) -> _Linear:
            w = checked[f"{prefix}.weight"]
            return _Linear(np.ascontiguousarray(w.T), checked[f"{prefix}.bias"].copy())

        def torso(name: str) -> _Torso:
            convs = [
                _Conv.from_weight(checked[f"{name}.conv.{j}.weight"], checked[f"{name}.conv.{j}.bias"], layer.stride)
                for j, layer in enumerate(self.model.conv)
            ]
            return _Torso(convs, [linear(f"{name}.{i}") for i in range(len(self.model.hidden_sizes))])

        if self.model.shared_torso:
            self._actor = torso("torso")
            self._critic: _Torso | None = None
        else:
            self._actor = torso("actor")
            self._critic = torso("critic")
        self._actor_head = linear("actor.head")
        self._critic_head = linear("critic.head")
        self._log_std = checked["log_std"].copy() if isinstance(self.action_space, Box) else None
        self._std = None if self._log_std is None else np.exp(self._log_std)
        self._activate = np.tanh if self.model.activation == "tanh" else _relu

    @property
    def obs_dim(self) -> int:
        """Values in one observation: the product of `obs_shape`."""
        return math.prod(self.obs_shape)

    @classmethod
    def from_safetensors(
        cls, model: ModelSpec, obs_shape: int | tuple[int, ...], action_space: Space, data: bytes
    ) -> "Policy":
        """Loads the parameters of a policy snapshot (safetensors bytes)."""
        from safetensors.numpy import load

        try:
            params = load(bytes(data))
        except Exception as e:  # safetensors raises its own error types
            raise PolicyError(f"snapshot is not a valid safetensors file: {e}") from None
        return cls(model, obs_shape, action_space, params)

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        """Observation rows `[N, obs_dim]` (float32) normalized:
        `clip((obs - mean) / std, -clip, clip)` with the snapshot's
        statistics, or the rows themselves without normalization."""
        if self._norm is None:
            return obs
        mean, std, clip = self._norm
        return np.clip((obs - mean) / std, -clip, clip)

    def _input(self, obs: np.ndarray) -> np.ndarray:
        """What the torsos read of observation rows `[N, obs_dim]`:
        normalized, scaled and, for a convolutional torso, as channels-last
        images `[N, H, W, C]`."""
        x = self.normalize(obs)
        if self._scale is not None:
            x = x * self._scale
        if self._image is None:
            return x
        c, h, w = self._image
        if self.model.observation_layout == "hwc" or len(self.obs_shape) == 2:
            return x.reshape(-1, h, w, c)
        return np.ascontiguousarray(x.reshape(-1, c, h, w).transpose(0, 2, 3, 1))

    def _torso(self, torso: _Torso, x: np.ndarray) -> np.ndarray:
        if torso.convs:
            for conv in torso.convs:
                x = conv(x)
            # Channel, row, column order, as PyTorch's flatten(1).
            x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)
        for layer in torso.layers:
            x = self._activate(layer(x))
        return x

    def forward(self, obs: np.ndarray, with_value: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Batched forward pass over `obs` `[N, obs_dim]`: the head's output
        (`[N, A]` logits or means) and, when asked, the values `[N]`."""
        x = np.asarray(obs, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.obs_dim:
            raise ValueError(f"observations must be [N, {self.obs_dim}], got {list(x.shape)}")
        x = self._input(x)
        h = self._torso(self._actor, x)
        head = self._actor_head(h)
        value = None
        if with_value:
            c = h if self._critic is None else self._torso(self._critic, x)
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


def zero_parameters(
    model: ModelSpec, obs_shape: int | tuple[int, ...], action_space: Space
) -> dict[str, np.ndarray]:
    """Zero weights for every parameter: a uniform (or standard Gaussian)
    policy. For tests and tools."""
    return {name: np.zeros(shape, dtype=np.float32) for name, shape in model.parameter_shapes(obs_shape, action_space)}
