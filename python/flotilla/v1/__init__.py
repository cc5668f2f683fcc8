"""Generated gRPC stubs of the Flotilla wire contract, protocol version 6.

``flotilla_pb2`` (messages), ``flotilla_pb2_grpc`` (the ``Learner`` service)
and ``flotilla_pb2.pyi`` (type stubs) are generated from
``proto/flotilla/v1/flotilla.proto`` by ``python/scripts/generate_proto.py``;
do not edit them by hand. This module path mirrors the proto package
(``flotilla.v1``), so the generated imports work unchanged.
"""

#: The protocol version this package speaks (`HelloRequest.protocol_version`).
PROTOCOL_VERSION = 6

#: Metadata key of the session credential on `StreamTrajectories`.
SESSION_METADATA = "x-flotilla-session"
