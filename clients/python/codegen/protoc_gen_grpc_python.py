"""A protoc plugin that runs grpcio-tools' gRPC Python generator.

grpcio-tools compiles the gRPC generator into its own protoc (``--grpc_python_out``) and ships
no ``protoc-gen-grpc_python`` program, and ``buf`` proxies only protoc's own languages to a
protoc binary. This plugin bridges the two: it takes buf's CodeGeneratorRequest, hands the
files to ``grpc_tools.protoc`` as a descriptor set and answers with what that wrote.
"""

from __future__ import annotations

import pathlib
import sys
import tempfile

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc


def main() -> int:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse()
    # The generator supports proto3 optional fields.
    response.supported_features = plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    with tempfile.TemporaryDirectory() as scratch:
        root = pathlib.Path(scratch)
        descriptors = root / "descriptors.pb"
        out = root / "out"
        out.mkdir()
        descriptors.write_bytes(
            descriptor_pb2.FileDescriptorSet(file=request.proto_file).SerializeToString()
        )
        arguments = [
            "grpc_tools.protoc",
            f"--descriptor_set_in={descriptors}",
            f"--grpc_python_out={request.parameter + ':' if request.parameter else ''}{out}",
            *request.file_to_generate,
        ]
        if protoc.main(arguments) != 0:
            response.error = "grpc_tools.protoc failed; see its messages above"
        else:
            for path in sorted(out.rglob("*")):
                if path.is_file():
                    generated = response.file.add()
                    generated.name = path.relative_to(out).as_posix()
                    generated.content = path.read_text()
    sys.stdout.buffer.write(response.SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main())
