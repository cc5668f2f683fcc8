"""The committed gRPC stubs are exactly what the generator writes from
proto/flotilla/v1/flotilla.proto, and import from the package."""

import importlib.util
from pathlib import Path

from harness import skip

PYTHON_DIR = Path(__file__).resolve().parent.parent


def _generator():
    path = PYTHON_DIR / "scripts" / "generate_proto.py"
    spec = importlib.util.spec_from_file_location("generate_proto", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_the_proto(tmp_path):
    try:
        import grpc_tools  # noqa: F401
    except ImportError:
        skip("grpcio-tools", 'grpcio-tools is not installed (pip install "./python[test]")')
    gen = _generator()
    written = gen.generate(tmp_path)
    from importlib.metadata import version

    installed = version("grpcio-tools")
    for fresh in written:
        rel = fresh.relative_to(tmp_path)
        committed = PYTHON_DIR / rel
        assert committed.exists(), f"{rel} is not committed: run python/scripts/generate_proto.py"
        assert fresh.read_bytes() == committed.read_bytes(), (
            f"{rel} differs from what {gen.PROTO_ROOT / gen.PROTO_FILE} generates: run "
            f"python/scripts/generate_proto.py and commit the result"
            + (
                f" (note: grpcio-tools {installed} is installed, the stubs are made with {gen.GRPCIO_TOOLS_VERSION})"
                if installed != gen.GRPCIO_TOOLS_VERSION
                else ""
            )
        )


def test_stubs_import_from_the_package():
    from flotilla.v1 import PROTOCOL_VERSION, SESSION_METADATA
    from flotilla.v1 import flotilla_pb2 as pb
    from flotilla.v1 import flotilla_pb2_grpc as pb_grpc

    assert PROTOCOL_VERSION == 6 and SESSION_METADATA == "x-flotilla-session"
    assert pb.DESCRIPTOR.name == "flotilla/v1/flotilla.proto"
    assert pb.DESCRIPTOR.package == "flotilla.v1"
    service = pb.DESCRIPTOR.services_by_name["Learner"]
    assert [m.name for m in service.methods] == ["Hello", "StreamTrajectories", "SubscribePolicy"]
    assert hasattr(pb_grpc, "LearnerStub")
    # The v3 declaration fields exist.
    req = pb.HelloRequest(env_id="X", observation_space=pb.Space(box=pb.BoxSpace(shape=[1])))
    assert req.HasField("observation_space") and not req.HasField("action_space")
    # The v4 normalization fields exist.
    m = pb.ModelSpec(normalize_observations=True, observation_clip=5.0)
    assert m.normalize_observations and m.observation_clip == 5.0
    # The v5 convolutional torso fields exist.
    m = pb.ModelSpec(
        conv=[pb.ConvLayer(channels=32, kernel=8, stride=4)],
        observation_layout=pb.OBSERVATION_LAYOUT_HWC,
        observation_scale=0.5,
    )
    assert [(c.channels, c.kernel, c.stride) for c in m.conv] == [(32, 8, 4)]
    assert m.observation_layout == pb.OBSERVATION_LAYOUT_HWC and m.observation_scale == 0.5
    assert pb.ModelSpec().observation_layout == pb.OBSERVATION_LAYOUT_CHW
