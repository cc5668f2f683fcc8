"""A scripted stand-in for the learner, in this process: a gRPC server that
answers `Hello` with a run spec matching the actor's declaration, publishes
one policy of zero weights, and reads chunks as a test tells it to (all of
them, or the first few and then none, as a learner whose ingest pushes back
does). For what the real `learner` binary cannot be made to do on cue."""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc
from harness import free_port
from safetensors.numpy import save

from flotilla.policy import ModelSpec, zero_parameters
from flotilla.spaces import from_proto
from flotilla.v1 import PROTOCOL_VERSION
from flotilla.v1 import flotilla_pb2 as pb
from flotilla.v1 import flotilla_pb2_grpc as pb_grpc

MODEL = ModelSpec(hidden_sizes=(4,))


class FakeLearner(pb_grpc.LearnerServicer):
    """`read_chunks`: how many chunks each trajectory stream reads before it
    stops reading (and never answers); None reads them all.
    `end_stream_after`: how many chunks each trajectory stream reads before
    the learner ends it (the actor then reconnects). `env_config_toml` is sent
    in the run spec, as a built-in run's `[env]` settings."""

    def __init__(
        self,
        chunk_len: int = 4,
        num_envs: int = 1,
        read_chunks: int | None = None,
        end_stream_after: int | None = None,
        env_config_toml: str = "",
    ):
        self.chunk_len, self.num_envs = chunk_len, num_envs
        self.read_chunks = read_chunks
        self.end_stream_after = end_stream_after
        self.env_config_toml = env_config_toml
        self.hellos = 0
        self.chunks = 0
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self.port = free_port()
        # No BDP probing: the HTTP/2 windows stay at 64 KiB, so a stream that
        # is not read pushes back at once on chunks larger than that.
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16),
            options=[("grpc.http2.bdp_probe", 0), ("grpc.max_receive_message_length", -1)],
        )
        pb_grpc.add_LearnerServicer_to_server(self, self.server)
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Goes away: open calls end with UNAVAILABLE, new ones fail."""
        self._closing.set()
        self.server.stop(0).wait()

    def _hold(self, context) -> None:
        while context.is_active() and not self._closing.is_set():
            time.sleep(0.05)

    def Hello(self, request, context):
        with self._lock:
            self.hellos += 1
            n = self.hellos
        self.snapshot = save(
            zero_parameters(
                MODEL,
                from_proto(request.observation_space).flat_dim,
                from_proto(request.action_space),
            )
        )
        return pb.RunSpec(
            run_id="fake-run",
            env_id=request.env_id,
            env_config_toml=self.env_config_toml,
            model=pb.ModelSpec(
                hidden_sizes=list(MODEL.hidden_sizes),
                activation=pb.ACTIVATION_TANH,
                observation_clip=MODEL.observation_clip,
                observation_scale=MODEL.observation_scale,
            ),
            chunk_len=self.chunk_len,
            observation_space=request.observation_space,
            action_space=request.action_space,
            policy_version=1,
            protocol_version=PROTOCOL_VERSION,
            actor_id=n,
            send_behavior_values=False,
            seed=1,
            max_chunk_bytes=1 << 26,
            default_num_envs=self.num_envs,
            sync=False,
            batch_samples=0,
            session=f"session-{n}",
        )

    def SubscribePolicy(self, request, context):
        yield pb.PolicySnapshot(version=1, safetensors=self.snapshot)
        self._hold(context)

    def StreamTrajectories(self, request_iterator, context):
        read = 0
        if self.read_chunks != 0:
            for _ in request_iterator:
                read += 1
                with self._lock:
                    self.chunks += 1
                if self.end_stream_after is not None and read >= self.end_stream_after:
                    return pb.IngestSummary(chunks_accepted=read)
                if self.read_chunks is not None and read >= self.read_chunks:
                    break
            else:
                return pb.IngestSummary(chunks_accepted=read)
        # Pushing back: read nothing more, answer nothing.
        self._hold(context)
        return pb.IngestSummary(chunks_accepted=read)
