"""Typed settings. Every option is also a ``BERTSERVE_*`` environment variable."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServerSettings(BaseSettings):
    """Options of ``bertserve serve``; CLI flags override the environment."""

    model_config = SettingsConfigDict(env_prefix="BERTSERVE_", extra="ignore", protected_namespaces=())

    model: str | None = Field(None, description="artifact or HF checkpoint folder; None → bundled MiniLM")
    model_name: str | None = Field(None, description="name the APIs use; default: the manifest's")
    host: str = Field("127.0.0.1", description="bind address; loopback unless asked otherwise")
    port: int = Field(8000, ge=0, le=65535)
    backend: str = Field("auto", description="auto | torch | onnxruntime")
    precision: str | None = Field(None, description="fp32 | bf16 | fp16 | int8; None keeps the artifact's")
    device: str = Field("cpu", description="cpu | cuda | auto")
    threads: int | None = Field(None, ge=1, description="intra-op threads per worker")
    max_batch_size: int = Field(32, ge=1, description="texts per batch")
    max_batch_tokens: int = Field(8192, ge=1, description="padded tokens per batch")
    max_texts_per_request: int = Field(256, ge=1)
    max_chars_per_text: int = Field(20_000, ge=1)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    truncate: bool = Field(True, description="cut texts longer than the model allows (else reject)")
    log_level: str = "warning"
