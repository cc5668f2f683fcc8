#!/usr/bin/env python3
"""Regenerates the gRPC stubs of the Flotilla wire contract.

The contract lives in ``proto/flotilla/v1/flotilla.proto`` at the root of the
repository. Its Python stubs are committed under ``python/flotilla/v1/`` so
that ``pip install ./python`` needs no code generator; run this script after
every change of the ``.proto`` file and commit the result::

    pip install "grpcio-tools==1.85.1"
    python python/scripts/generate_proto.py

The proto package is ``flotilla.v1`` and the stubs are generated under the
same module path, ``flotilla.v1``, inside the ``flotilla`` Python package: the
import the gRPC plugin writes (``from flotilla.v1 import flotilla_pb2``) then
works as generated, and the descriptor keeps its canonical file name
(``flotilla/v1/flotilla.proto``). Nothing is edited after generation.

``python/tests/test_proto.py`` regenerates the stubs into a temporary folder
and checks that the committed files are byte for byte what this script
writes, so a stale stub fails the tests. The output depends on the version of
grpcio-tools (it embeds the versions of protobuf and gRPC it was made with):
use the one pinned in ``GRPCIO_TOOLS_VERSION``, which is also the lowest
grpcio the stubs accept at import time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: The grpcio-tools release the committed stubs were generated with.
GRPCIO_TOOLS_VERSION = "1.85.1"

#: `python/`, the folder that holds the `flotilla` package.
PYTHON_ROOT = Path(__file__).resolve().parent.parent
#: The folder `flotilla/v1/flotilla.proto` is found in.
PROTO_ROOT = PYTHON_ROOT.parent / "proto"
#: The contract, relative to `PROTO_ROOT`.
PROTO_FILE = "flotilla/v1/flotilla.proto"
#: The files generated from it, relative to the output folder.
GENERATED = (
    "flotilla/v1/flotilla_pb2.py",
    "flotilla/v1/flotilla_pb2.pyi",
    "flotilla/v1/flotilla_pb2_grpc.py",
)


def generate(out_dir: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Generates the stubs of `proto_root/PROTO_FILE` into `out_dir` (as
    `out_dir/flotilla/v1/...`) and returns the paths written.

    Raises ImportError when grpcio-tools is not installed and RuntimeError
    when protoc fails.
    """
    from importlib import resources

    from grpc_tools import protoc

    out_dir = Path(out_dir)
    (out_dir / "flotilla" / "v1").mkdir(parents=True, exist_ok=True)
    # The well-known types shipped with grpcio-tools (the contract imports
    # none today; this keeps a future `import "google/protobuf/..."` working).
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        PROTO_FILE,
    ]
    # protoc resolves PROTO_FILE against the include paths; run it with
    # paths that do not depend on the current directory.
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code} on {proto_root / PROTO_FILE}")
    return [out_dir / name for name in GENERATED]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=PYTHON_ROOT,
        help="folder to write flotilla/v1/*_pb2*.py* into [default: %(default)s]",
    )
    args = parser.parse_args(argv)
    try:
        import grpc_tools  # noqa: F401
    except ImportError:
        print(
            f'error: grpcio-tools is not installed: pip install "grpcio-tools=={GRPCIO_TOOLS_VERSION}"',
            file=sys.stderr,
        )
        return 1
    try:
        from importlib.metadata import version

        installed = version("grpcio-tools")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        installed = "unknown"
    if installed != GRPCIO_TOOLS_VERSION:
        print(
            f"warning: grpcio-tools {installed} is installed; the committed stubs are made "
            f"with {GRPCIO_TOOLS_VERSION} (update GRPCIO_TOOLS_VERSION and the pins in "
            "pyproject.toml if you mean to move to it)",
            file=sys.stderr,
        )
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
