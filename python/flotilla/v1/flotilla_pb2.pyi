from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Dtype(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_FLOAT32: _ClassVar[Dtype]
    DTYPE_UINT8: _ClassVar[Dtype]

class Activation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTIVATION_UNSPECIFIED: _ClassVar[Activation]
    ACTIVATION_TANH: _ClassVar[Activation]
    ACTIVATION_RELU: _ClassVar[Activation]

class ObservationLayout(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OBSERVATION_LAYOUT_CHW: _ClassVar[ObservationLayout]
    OBSERVATION_LAYOUT_HWC: _ClassVar[ObservationLayout]
DTYPE_FLOAT32: Dtype
DTYPE_UINT8: Dtype
ACTIVATION_UNSPECIFIED: Activation
ACTIVATION_TANH: Activation
ACTIVATION_RELU: Activation
OBSERVATION_LAYOUT_CHW: ObservationLayout
OBSERVATION_LAYOUT_HWC: ObservationLayout

class HelloRequest(_message.Message):
    __slots__ = ("actor_name", "num_envs", "protocol_version", "env_id", "observation_space", "action_space")
    ACTOR_NAME_FIELD_NUMBER: _ClassVar[int]
    NUM_ENVS_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENV_ID_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_SPACE_FIELD_NUMBER: _ClassVar[int]
    ACTION_SPACE_FIELD_NUMBER: _ClassVar[int]
    actor_name: str
    num_envs: int
    protocol_version: int
    env_id: str
    observation_space: Space
    action_space: Space
    def __init__(self, actor_name: _Optional[str] = ..., num_envs: _Optional[int] = ..., protocol_version: _Optional[int] = ..., env_id: _Optional[str] = ..., observation_space: _Optional[_Union[Space, _Mapping]] = ..., action_space: _Optional[_Union[Space, _Mapping]] = ...) -> None: ...

class DiscreteSpace(_message.Message):
    __slots__ = ("n",)
    N_FIELD_NUMBER: _ClassVar[int]
    n: int
    def __init__(self, n: _Optional[int] = ...) -> None: ...

class BoxSpace(_message.Message):
    __slots__ = ("low", "high", "shape", "dtype")
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    low: _containers.RepeatedScalarFieldContainer[float]
    high: _containers.RepeatedScalarFieldContainer[float]
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: Dtype
    def __init__(self, low: _Optional[_Iterable[float]] = ..., high: _Optional[_Iterable[float]] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[_Union[Dtype, str]] = ...) -> None: ...

class Space(_message.Message):
    __slots__ = ("discrete", "box")
    DISCRETE_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    discrete: DiscreteSpace
    box: BoxSpace
    def __init__(self, discrete: _Optional[_Union[DiscreteSpace, _Mapping]] = ..., box: _Optional[_Union[BoxSpace, _Mapping]] = ...) -> None: ...

class ModelSpec(_message.Message):
    __slots__ = ("hidden_sizes", "activation", "shared_torso", "init_log_std", "normalize_observations", "observation_clip", "conv", "observation_layout", "observation_scale")
    HIDDEN_SIZES_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    SHARED_TORSO_FIELD_NUMBER: _ClassVar[int]
    INIT_LOG_STD_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_CLIP_FIELD_NUMBER: _ClassVar[int]
    CONV_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_LAYOUT_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_SCALE_FIELD_NUMBER: _ClassVar[int]
    hidden_sizes: _containers.RepeatedScalarFieldContainer[int]
    activation: Activation
    shared_torso: bool
    init_log_std: float
    normalize_observations: bool
    observation_clip: float
    conv: _containers.RepeatedCompositeFieldContainer[ConvLayer]
    observation_layout: ObservationLayout
    observation_scale: float
    def __init__(self, hidden_sizes: _Optional[_Iterable[int]] = ..., activation: _Optional[_Union[Activation, str]] = ..., shared_torso: _Optional[bool] = ..., init_log_std: _Optional[float] = ..., normalize_observations: _Optional[bool] = ..., observation_clip: _Optional[float] = ..., conv: _Optional[_Iterable[_Union[ConvLayer, _Mapping]]] = ..., observation_layout: _Optional[_Union[ObservationLayout, str]] = ..., observation_scale: _Optional[float] = ...) -> None: ...

class ConvLayer(_message.Message):
    __slots__ = ("channels", "kernel", "stride")
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    channels: int
    kernel: int
    stride: int
    def __init__(self, channels: _Optional[int] = ..., kernel: _Optional[int] = ..., stride: _Optional[int] = ...) -> None: ...

class RunSpec(_message.Message):
    __slots__ = ("run_id", "env_id", "env_config_toml", "model", "chunk_len", "observation_space", "action_space", "policy_version", "protocol_version", "actor_id", "send_behavior_values", "seed", "max_chunk_bytes", "default_num_envs", "sync", "batch_samples", "session")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ENV_ID_FIELD_NUMBER: _ClassVar[int]
    ENV_CONFIG_TOML_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CHUNK_LEN_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_SPACE_FIELD_NUMBER: _ClassVar[int]
    ACTION_SPACE_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    SEND_BEHAVIOR_VALUES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_NUM_ENVS_FIELD_NUMBER: _ClassVar[int]
    SYNC_FIELD_NUMBER: _ClassVar[int]
    BATCH_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    env_id: str
    env_config_toml: str
    model: ModelSpec
    chunk_len: int
    observation_space: Space
    action_space: Space
    policy_version: int
    protocol_version: int
    actor_id: int
    send_behavior_values: bool
    seed: int
    max_chunk_bytes: int
    default_num_envs: int
    sync: bool
    batch_samples: int
    session: str
    def __init__(self, run_id: _Optional[str] = ..., env_id: _Optional[str] = ..., env_config_toml: _Optional[str] = ..., model: _Optional[_Union[ModelSpec, _Mapping]] = ..., chunk_len: _Optional[int] = ..., observation_space: _Optional[_Union[Space, _Mapping]] = ..., action_space: _Optional[_Union[Space, _Mapping]] = ..., policy_version: _Optional[int] = ..., protocol_version: _Optional[int] = ..., actor_id: _Optional[int] = ..., send_behavior_values: _Optional[bool] = ..., seed: _Optional[int] = ..., max_chunk_bytes: _Optional[int] = ..., default_num_envs: _Optional[int] = ..., sync: _Optional[bool] = ..., batch_samples: _Optional[int] = ..., session: _Optional[str] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("run_id", "actor_id", "sequence", "policy_version", "t", "n", "obs", "actions", "rewards", "terminated", "truncated", "behavior_logp", "behavior_value", "final_obs_index", "final_obs", "episode_returns", "episode_lengths", "env_id", "obs_dtype")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    T_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    OBS_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    TERMINATED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    BEHAVIOR_LOGP_FIELD_NUMBER: _ClassVar[int]
    BEHAVIOR_VALUE_FIELD_NUMBER: _ClassVar[int]
    FINAL_OBS_INDEX_FIELD_NUMBER: _ClassVar[int]
    FINAL_OBS_FIELD_NUMBER: _ClassVar[int]
    EPISODE_RETURNS_FIELD_NUMBER: _ClassVar[int]
    EPISODE_LENGTHS_FIELD_NUMBER: _ClassVar[int]
    ENV_ID_FIELD_NUMBER: _ClassVar[int]
    OBS_DTYPE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    actor_id: int
    sequence: int
    policy_version: int
    t: int
    n: int
    obs: bytes
    actions: bytes
    rewards: bytes
    terminated: bytes
    truncated: bytes
    behavior_logp: bytes
    behavior_value: bytes
    final_obs_index: _containers.RepeatedScalarFieldContainer[int]
    final_obs: bytes
    episode_returns: _containers.RepeatedScalarFieldContainer[float]
    episode_lengths: _containers.RepeatedScalarFieldContainer[int]
    env_id: str
    obs_dtype: Dtype
    def __init__(self, run_id: _Optional[str] = ..., actor_id: _Optional[int] = ..., sequence: _Optional[int] = ..., policy_version: _Optional[int] = ..., t: _Optional[int] = ..., n: _Optional[int] = ..., obs: _Optional[bytes] = ..., actions: _Optional[bytes] = ..., rewards: _Optional[bytes] = ..., terminated: _Optional[bytes] = ..., truncated: _Optional[bytes] = ..., behavior_logp: _Optional[bytes] = ..., behavior_value: _Optional[bytes] = ..., final_obs_index: _Optional[_Iterable[int]] = ..., final_obs: _Optional[bytes] = ..., episode_returns: _Optional[_Iterable[float]] = ..., episode_lengths: _Optional[_Iterable[int]] = ..., env_id: _Optional[str] = ..., obs_dtype: _Optional[_Union[Dtype, str]] = ...) -> None: ...

class IngestSummary(_message.Message):
    __slots__ = ("chunks_accepted", "samples_accepted")
    CHUNKS_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    chunks_accepted: int
    samples_accepted: int
    def __init__(self, chunks_accepted: _Optional[int] = ..., samples_accepted: _Optional[int] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("actor_name", "have_version")
    ACTOR_NAME_FIELD_NUMBER: _ClassVar[int]
    HAVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    actor_name: str
    have_version: int
    def __init__(self, actor_name: _Optional[str] = ..., have_version: _Optional[int] = ...) -> None: ...

class PolicySnapshot(_message.Message):
    __slots__ = ("version", "safetensors", "samples_per_version")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SAFETENSORS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    safetensors: bytes
    samples_per_version: int
    def __init__(self, version: _Optional[int] = ..., safetensors: _Optional[bytes] = ..., samples_per_version: _Optional[int] = ...) -> None: ...
