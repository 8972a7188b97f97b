"""Service settings: every field is also an environment variable VQVAE_<FIELD>.

Read through the cached `get_settings()`, never at import time, so tests and the CLI can set the
environment first.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# models/ beside the packages: the repository checkout, and /app/models in the container.
from runtime.model_runtime import SHIPPED_MODELS


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VQVAE_", extra="ignore")

    # -- server
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    grpc_port: int = Field(8001, ge=0, le=65535, description="the Open Inference Protocol over gRPC, in every "
                           "worker process (SO_REUSEPORT when there are several); 0: off")
    workers: int = Field(1, ge=1, le=64)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Longer than the idle timeout of the clients and load balancers in front (httpx 5 s, AWS ALB 60 s):
    # otherwise the server may close an idle connection just as a client sends on it.
    keep_alive_s: int = Field(75, ge=1, description="seconds an idle keep-alive connection stays open")

    # -- models
    models_dir: Path = SHIPPED_MODELS
    default_model: str = "mnist"
    providers: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1, description="intra-op threads per session (default: from usable CPUs)")
    warmup_runs: int = Field(3, ge=1, description="warm-up inferences per graph before a model is ready")
    on_model_error: Literal["not-ready", "exit"] = Field(
        "not-ready", description="a model that fails to load: serve the rest and report not ready, or exit non-zero"
    )
    model_control: Literal["none", "explicit"] = Field(
        "none", description="explicit: the v2 repository extension may load and unload models while serving "
                            "(as Triton's --model-control-mode=explicit); none: the index only")

    # -- request limits
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(4_000_000, ge=16, description="per image, after decoding")
    max_images: int = Field(256, ge=1, description="images (or code grids) per request")

    # -- throughput (see BENCHMARKS.md for how these were chosen)
    batching: Literal["on", "off"] = Field("on", description="coalesce concurrent requests into one run")
    batch_max: int = Field(64, ge=1, le=1024, description="items per onnxruntime run")
    batch_wait_ms: float = Field(1.0, ge=0, le=2.0, description="wait for company while a batch is not full "
                                 "and other requests in progress may still join it (a lone request never waits)")
    batch_inline_max: int = Field(2, ge=0, le=1024,
                                  description="runs of at most this many items execute on the event loop, not a thread")
    fast_path: Literal["on", "off"] = Field("on", description="serve the codec routes straight from ASGI "
                                            "(api/fast_path.py); off: through FastAPI's router (same answers)")
    queue_max_items: int = Field(4096, ge=1, description="items queued per model and graph before 429")
    request_timeout_s: float = Field(10.0, gt=0, description="deadline for a request's processing (504 after)")
    timeout_s_per_mpx: float = Field(2.0, ge=0, description="added to the deadline per megapixel of the request's "
                                                           "images (large images legitimately take seconds)")
    max_in_flight: int = Field(64, ge=1, description="codec requests in progress per worker before 429")
    body_timeout_s: float = Field(30.0, gt=0, description="time to send a codec request's body (408 after)")

    # -- memory (docs/reliability.md)
    memory_budget_mb: int | None = Field(
        None, ge=16, description="working memory per worker (default: its share of the container's memory limit, "
                                 "or of physical memory, less what the loaded worker holds)")
    memory_wait_s: float = Field(2.0, ge=0, description="how long a request waits for memory before 429")
    max_header_bytes: int = Field(16384, ge=1024, description="total size of a request's headers (431 beyond)")

    # -- demo page
    demo: Literal["on", "off"] = Field("on", description="serve the demo page at /")

    # -- security
    api_key: SecretStr | None = Field(None, description="when set, every request needs Authorization: Bearer <key>")
    auth_exempt: str = Field(
        "", description="comma list of route groups served without the key: probes, metrics, docs, demo")
    cors_origins: str = Field("", description="comma list of origins allowed by CORS; empty: CORS off")

    # -- shutdown
    drain_seconds: float = Field(0.0, ge=0, description="after SIGTERM: keep serving (not ready) this long")

    @field_validator("api_key")
    @classmethod
    def _presentable_key(cls, key: SecretStr | None) -> SecretStr | None:
        """A key no client could send would lock every route, probes included, without a word: an empty
        VQVAE_API_KEY= (a template whose secret was missing, say) stops start-up instead of serving with
        no key, or with a key nobody has. Leave the variable unset to serve without a key."""
        if key is None:
            return None
        value = key.get_secret_value()
        if not value.strip():
            raise ValueError("set but empty; unset it to serve without a key, or set a key")
        if value != value.strip() or not all(" " <= c <= "~" for c in value):
            raise ValueError("must be printable ASCII without leading or trailing spaces "
                             "(an HTTP header cannot carry anything else)")
        return key
    @model_validator(mode="after")
    def _ports_differ(self) -> Settings:
        if self.grpc_port and self.grpc_port == self.port:
            raise ValueError(f"VQVAE_GRPC_PORT and VQVAE_PORT are both {self.port}: give gRPC its own port, or 0")
        return self

    @model_validator(mode="after")
    def _one_worker_for_model_control(self) -> Settings:
        # Each worker process holds its own sessions, and a load or unload request reaches one of them:
        # with several, the workers would serve different models. One worker per pod (scale pods instead).
        if self.model_control == "explicit" and self.workers > 1:
            raise ValueError("VQVAE_MODEL_CONTROL=explicit needs VQVAE_WORKERS=1: a load or unload request "
                             "reaches one worker process, and each holds its own models")
        return self

    @property
    def exempt_groups(self) -> set[str]:
        return {g.strip() for g in self.auth_exempt.split(",") if g.strip()}

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
