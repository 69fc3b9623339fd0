"""Generate `approvals/_proto/` from `proto/egressguard/v1/approvals.proto`.

    python -m egressguard.approvals.gen_proto            # write the generated files
    python -m egressguard.approvals.gen_proto --check    # exit 1 if the checked-in files differ

Why a script and not a bare protoc line: protoc names the generated module after the proto
path (`egressguard/v1/approvals_pb2.py`) and the gRPC stub imports it as
`from egressguard.v1 import approvals_pb2`, which would resolve against *our* `egressguard`
package and fail. So we generate into a scratch directory, make that one import relative, and
flatten the files into `_proto/`. The generated code is checked in (the daemon needs no
grpcio-tools at run time); `tests/test_approvals_grpc.py` runs `generate()` and compares, so a
proto edit without regeneration fails CI.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

PROTO_REL = "egressguard/v1/approvals.proto"
OUT_DIR = Path(__file__).resolve().parent / "_proto"
# daemon/egressguard/approvals/gen_proto.py -> repository root
DEFAULT_PROTO_ROOT = Path(__file__).resolve().parents[3] / "proto"

_INIT = '"""Generated from proto/egressguard/v1/approvals.proto by gen_proto.py. Do not edit."""\n'


def generate(proto_root: Path = DEFAULT_PROTO_ROOT) -> dict[str, str]:
    """Run protoc (from grpcio-tools) and return {file name in _proto/: content}."""
    from grpc_tools import protoc  # dev-only dependency: imported here, not at module load
    import grpc_tools

    wkt = Path(grpc_tools.__file__).resolve().parent / "_proto"
    with tempfile.TemporaryDirectory() as scratch:
        args = [
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"-I{wkt}",
            f"--python_out={scratch}",
            f"--pyi_out={scratch}",
            f"--grpc_python_out={scratch}",
            str(proto_root / PROTO_REL),
        ]
        rc = protoc.main(args)
        if rc != 0:
            raise RuntimeError(f"protoc failed with exit code {rc} for {proto_root / PROTO_REL}")
        gen = Path(scratch) / "egressguard" / "v1"
        files = {
            name: (gen / name).read_text()
            for name in ("approvals_pb2.py", "approvals_pb2.pyi", "approvals_pb2_grpc.py")
        }
    absolute = "from egressguard.v1 import approvals_pb2 as"
    if absolute not in files["approvals_pb2_grpc.py"]:
        raise RuntimeError("unexpected protoc output: the stub's import of approvals_pb2 moved")
    files["approvals_pb2_grpc.py"] = files["approvals_pb2_grpc.py"].replace(
        absolute, "from . import approvals_pb2 as"
    )
    files["__init__.py"] = _INIT
    return files


def check(out_dir: Path = OUT_DIR, proto_root: Path = DEFAULT_PROTO_ROOT) -> list[str]:
    """Names of generated files that are missing or differ from a fresh generation."""
    stale = []
    for name, text in generate(proto_root).items():
        path = out_dir / name
        if not path.exists() or path.read_text() != text:
            stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gen_proto", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when stale")
    ap.add_argument("--proto-root", type=Path, default=DEFAULT_PROTO_ROOT)
    args = ap.parse_args(argv)
    if args.check:
        stale = check(OUT_DIR, args.proto_root)
        if stale:
            print(f"stale generated code in {OUT_DIR}: {', '.join(stale)}; "
                  "run python -m egressguard.approvals.gen_proto", file=sys.stderr)
            return 1
        print("generated code is current")
        return 0
    OUT_DIR.mkdir(exist_ok=True)
    for name, text in generate(args.proto_root).items():
        tmp = OUT_DIR / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, OUT_DIR / name)
    print(f"wrote {OUT_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
