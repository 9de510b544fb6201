"""Build hook: generate the Sparkplug B protobuf module from the vendored Eclipse Tahu schema.

The generated module (`semookii_bridge/sparkplug/sparkplug_b_pb2.py` and its `.pyi`) is not committed: it is
made by grpcio-tools' protoc when the package is built or installed (also in editable mode, in place), so the
code always matches `sparkplug_b.proto` and the protobuf runtime pinned in pyproject.toml.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PROTO_DIR = Path("semookii_bridge") / "sparkplug"
PROTO = PROTO_DIR / "sparkplug_b.proto"


def generate(out: Path) -> None:
    """Run protoc (from grpcio-tools) on the Sparkplug B schema, writing the module and its stub to `out`."""
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{PROTO_DIR}", f"--python_out={out}", f"--pyi_out={out}", str(PROTO)]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {PROTO}")


class BuildWithSparkplug(build_py):
    """`build_py` that first generates the protobuf module: in the source tree for editable installs."""

    def run(self) -> None:
        generate(PROTO_DIR if self.editable_mode else Path(self.build_lib) / PROTO_DIR)
        super().run()


setup(cmdclass={"build_py": BuildWithSparkplug})
