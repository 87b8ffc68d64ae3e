"""A model's config.pbtxt as the JSON that Triton's load takes as a config override.

`TritonGateway.load(name, config=...)` makes Triton serve a config without
touching the repository (how batching is retuned). Triton then keeps serving
that override: a plain load of unchanged files changes nothing. To go back to
the file's config, load with the file's own text converted here. The
conversion goes through Triton's protobuf schema, so a config Triton could not
parse is refused here, with protobuf's reason, before anything is sent.
"""

from __future__ import annotations

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2


def config_override(pbtxt: str) -> str:
    """config.pbtxt text -> the same config as JSON text; ValueError if it is not a config."""
    try:
        config = text_format.Parse(pbtxt, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ValueError(f"not a Triton model config: {exc}") from None
    text: str = json_format.MessageToJson(config, preserving_proto_field_name=True, indent=None)
    return text
