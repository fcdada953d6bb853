"""Regenerate the checked-in stubs from inference.proto: ``python -m tabserve.grpc.generate`` (needs grpcio-tools).

The stubs register their messages in a descriptor pool of their own, not protobuf's default one: the names are
the spec's (``inference.ModelInferRequest``), which tritonclient.grpc and kserve also register, each under
another file name, and one process could not import two of them (``duplicate symbol``). With a private pool a
program that uses tabserve and either client keeps working.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1]
DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("
PRIVATE_POOL = "POOL.AddSerializedFile("


def main() -> int:
    from grpc_tools import protoc

    proto = HERE / "inference.proto"
    code = protoc.main(["protoc", f"-I{SRC}", f"--python_out={SRC}", f"--pyi_out={SRC}",
                        f"--grpc_python_out={SRC}", str(proto)])
    if code:
        return code
    stubs = HERE / "inference_pb2.py"
    text = stubs.read_text()
    if DEFAULT_POOL not in text:
        print(f"{stubs}: the generated code no longer adds its file to the default pool; update generate.py",
              file=sys.stderr)
        return 1
    text = text.replace(DEFAULT_POOL, PRIVATE_POOL).replace(
        "_sym_db = _symbol_database.Default()",
        "_sym_db = _symbol_database.Default()\nPOOL = _descriptor_pool.DescriptorPool()  # tabserve.grpc.generate")
    stubs.write_text(text)
    print(f"regenerated {stubs.name}, {stubs.stem}.pyi and inference_pb2_grpc.py in {HERE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
