"""The v2 bodies Conch itself writes, and the shapes of Triton's that it passes on.

Triton's own answers (model metadata, config, inference) travel as Triton wrote
them; their models here document them in OpenAPI and allow whatever else Triton
adds (`extra="allow"`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ServerMetadata(BaseModel):
    name: str = Field(description="`conch`")
    version: str = Field(description="Conch's version")
    extensions: list[str] = Field(description="the protocol extensions this door passes on")


class Liveness(BaseModel):
    live: bool


class Readiness(BaseModel):
    ready: bool


class _TritonBody(BaseModel):
    model_config = ConfigDict(extra="allow")


class MetadataTensor(_TritonBody):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(_TritonBody):
    name: str = Field(description="the model's Triton name")
    versions: list[str] = []
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class ModelConfig(_TritonBody):
    name: str = Field(description="the model's Triton name")


class OutputTensor(_TritonBody):
    name: str
    datatype: str
    shape: list[int]
    data: list[Any] | None = Field(None, description="absent when sent as binary data")


class InferenceResponse(_TritonBody):
    model_name: str = Field(description="the model's Triton name")
    model_version: str | None = None
    id: str | None = None
    outputs: list[OutputTensor]
