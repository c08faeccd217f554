"""The configuration tree of ``guard.yaml`` (pydantic) and the Lethe home folder.

One file configures every entry point: the CLI, ``lethe serve``, the evaluation methods
and the Python API all read it through :func:`load_config`, and build their store from
its ``store`` section through :func:`lethe.store.open_store`. Every section forbids
unknown keys, so a mistyped key is a one-line :class:`~lethe.errors.ConfigError` naming
the key and the file instead of a silently ignored setting.

The home folder (``--home`` or ``LETHE_HOME``, default ``~/.lethe``) holds the SQLite
store, its key file, the trained scorer and ``guard.yaml``. Nothing else is written there.
"""

from __future__ import annotations

import difflib
import logging
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from lethe.errors import ConfigError
from lethe.expand_config import ExpandConfig
from lethe.intervention_config import InterventionConfig, Placement  # noqa: F401  (re-exported)
from lethe.registry import check_kind

DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct-q4"
DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
CONFIG_FILE = "guard.yaml"

log = logging.getLogger("lethe.config")


class Section(BaseModel):
    """A section of ``guard.yaml``: unknown keys are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class BackendConfig(Section):
    """Which chat model sits behind the guard."""

    kind: str = Field(
        "llamacpp", description="a backend kind of lethe.backends.BACKENDS: llamacpp (GGUF path or a built-in "
        "model name), openai (any OpenAI-compatible endpoint), hf (transformers hub id or folder), or one you register")
    model: str = Field(DEFAULT_MODEL, description="model name, GGUF path, hub id or folder")
    base_url: str | None = Field(None, description="openai: the endpoint, e.g. http://vllm:8000/v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai: environment variable holding the API key")
    gguf_file: str | None = Field(None, description="llamacpp: file inside a hub repository")
    adapter: str | None = Field(
        None,
        description="a LoRA trained by `lethe train`: its PEFT folder (hf; llamacpp exports it to GGUF once) "
        "or a GGUF LoRA file (llamacpp)",
    )
    n_ctx: int = Field(4096, gt=0, description="llamacpp: context window in tokens")
    n_threads: int | None = Field(
        None, ge=1, description="llamacpp: threads per call; unset: chosen per call from the cores other "
        "processes leave free (1 to the CPUs this process may use)")
    wait_policy: Literal["passive", "spin", "active"] | None = Field(
        None, description="llamacpp: how idle threads wait (libgomp's OMP_WAIT_POLICY); unset: "
        "OMP_WAIT_POLICY if set, else passive, which keeps processes on shared cores from starving each other")
    prefix_reuse_chunk: int = Field(
        0, ge=0, description="llamacpp: 0 reuses cached KV in whole n_batch blocks only; c > 0 (e.g. 32) decodes "
        "prompts in c-token aligned chunks and reuses whole chunks of earlier prompts (docs/serving.md). Answers "
        "never depend on earlier calls, but greedy answers can differ between 0 and c")
    prefix_cache_mb: float = Field(
        64.0, ge=0.0, description="llamacpp, prefix_reuse_chunk > 0: memory for saved prompt prefixes' KV, so a "
        "shared prefix outlives unrelated prompts in between; 0: the live context only")
    seed: int = Field(0, description="sampling seed")
    timeout_s: float = Field(60.0, gt=0, description="openai: per-request timeout")


    @field_validator("kind")
    @classmethod
    def _registered(cls, kind: str) -> str:
        return check_kind("backend", kind)

class DetectorConfig(Section):
    """The DRAGON detector: entity matching, similarity and the scorer fused into one confidence."""

    tau: float = Field(0.7, ge=0.0, le=1.0, description="trigger when confidence > tau")
    scorer: str = Field("logreg", description="scorer kind from lethe.guard.scorer.SCORERS")
    scorer_threshold: float = Field(0.9, ge=0.0, le=1.0, description="tau_1 of the paper")
    concept_scorer_threshold: float = Field(0.5, ge=0.0, le=1.0, description="tau_1 in concept mode (harmful/copyright)")
    sim_floor: float = Field(0.55, description="cosine similarity mapped to 0")
    sim_ceiling: float = Field(0.85, description="cosine similarity mapped to 1")
    history_turns: int = Field(3, ge=0, description="earlier user turns read with the last one")
    fuzzy: bool = Field(True, description="match forgotten names within one edit")
    other_name_damping: float = Field(
        0.5, ge=0.0, le=1.0,
        description="privacy mode: factor on similarity and scorer when the query names a person whose "
                    "name shares only a first name with a forgotten one, and on a quoted title's scope "
                    "evidence when the query names someone else")
    paraphrase_floor: float = Field(
        0.80, ge=0.0, le=1.0, description="privacy, no name/scope evidence: cosine to one request's samples "
        "mapped to 0 (a near paraphrase of a registered question is needed)")
    paraphrase_ceiling: float = Field(0.92, ge=0.0, le=1.0, description="privacy, no evidence: cosine mapped to 1")
    paraphrase_margin: float = Field(
        0.05, gt=0.0, le=1.0, description="privacy, no evidence: how much closer the query must be to the "
        "request's samples than to its hard negatives and the nearest benign query for full similarity")
    evidence_gate: float = Field(
        0.5, gt=0.0, le=1.0, description="privacy: name/scope evidence at which similarity to that request "
        "counts in full (below it, in proportion)")
    translate: bool = Field(
        False, description="also read a text written mostly in another language in an English translation "
        "by the backend (one chat call per such text, cached; see lethe.guard.translate)")
    background_refit: bool = Field(
        True, description="refit the concept scorer on a background thread; detection keeps the previous "
        "scorer until the new one is ready")


class GuiderConfig(Section):
    """How the guard reasons about an in-scope query before the model answers."""

    kind: str = Field("template", description="a guider kind of lethe.guard.guider.GUIDERS: none (policy "
                      "only), template, llm, trained, or one you register")
    adapter_path: str | None = Field(None, description="trained: the guider adapter from `lethe guider train`")
    max_tokens: int = Field(160, gt=0, description="llm/trained: length of the reasoning")
    temperature: float = Field(0.0, ge=0.0, description="llm/trained: sampling temperature")

    @field_validator("kind")
    @classmethod
    def _registered(cls, kind: str) -> str:
        return check_kind("guider", kind)


class OutputCheckConfig(Section):
    """A backstop on the way out (``lethe.guard.output_check``): the model's answer, streamed or not,
    scanned for forgotten names and for sentences close to the store; a leaking answer is replaced
    (streams: truncated) with the policy's decline. Off by default."""

    enabled: bool = Field(False, description="scan answers before they reach the client")
    names: bool = Field(True, description="block answers that name a forgotten person (keyed-hash matcher)")
    name_threshold: float = Field(
        0.3, gt=0.0, le=1.0, description="entity score at which an answer names a forgotten person (1.0 the "
        "whole name, 0.6 x rarity a surname alone, at most 0.25 a first name alone, and a surname beside "
        "another first name is damped below 0.15)")
    similarity: bool = Field(True, description="block answers with a sentence close to a stored sample")
    threshold: float = Field(0.7, ge=0.0, le=1.0, description="cosine of an answer sentence to a stored "
                             "rewrite or augmentation at which it blocks")
    min_words: int = Field(4, ge=1, description="shorter answer sentences are not embedded")
    holdback_chars: int = Field(
        32, ge=8, le=4096, description="streams: characters held back before release, so a name split "
        "across chunks is caught before any of it is sent; the added latency of a stream is bounded by it")
    views: bool = Field(True, description="non-streamed answers are also read through decoded views "
                        "(base64, ROT13, reversed, leetspeak) for names")


class StoreConfig(Section):
    """The negative unlearn store: which kind, where, and where its name-hashing key lives."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    kind: str = Field("sqlite", description="a store kind of lethe.store.STORES: sqlite (embedded, one file "
                      "shared by the processes of one machine) or postgres (shared by replicas)")
    path: str | None = Field(None, description="sqlite: the database file (default <home>/store.db; a relative "
                             "path is taken from the home)")
    dsn: str | None = Field(None, description="postgres: libpq connection string or URL (prefer dsn_env, which "
                            "keeps the password out of this file)")
    dsn_env: str = Field("LETHE_STORE_DSN", description="postgres: environment variable with the DSN when dsn "
                         "is unset")
    db_schema: str = Field("lethe", alias="schema", description="postgres: the schema holding the tables (one "
                           "deployment per schema)")
    secret_env: str = Field("LETHE_SECRET", description="environment variable holding the name-hashing key "
                            "(64 hex digits or a passphrase); when set it is used instead of key_file. Replicas "
                            "on several machines take it from a secret manager")
    key_file: str | None = Field(None, description="file holding the name-hashing key (default <home>/store.key, "
                                 "created with mode 0600 on first use); never inside the database")
    options: dict[str, Any] = Field(default_factory=dict, description="constructor parameters of a "
                                    "third-party store kind")

    @field_validator("kind")
    @classmethod
    def _registered(cls, kind: str) -> str:
        return check_kind("store", kind)


class ServeConfig(Section):
    """The HTTP service (``lethe serve``); what the guard does is the rest of the file."""

    host: str = Field("127.0.0.1", description="bind address")
    port: int = Field(8000, ge=0, le=65535, description="port")
    home: str | None = Field(None, description="Lethe home (default LETHE_HOME or ~/.lethe)")
    model_name: str | None = Field(None, description="model id advertised by /v1/models (default: the backend's)")

    # auth
    admin_key_env: str = Field("LETHE_ADMIN_KEY", description="environment variable with the admin key")
    admin_key_file: str | None = Field(None, description="file with 'sha256:<hex>' lines (lethe.serving.auth.hash_key)")
    client_keys_env: str = Field("LETHE_CLIENT_KEYS", description="environment variable with client keys (k1,k2)")
    client_keys_file: str | None = Field(None, description="hashed client keys, one per line; unset = open")

    # failure behaviour
    fail_mode: Literal["closed", "open"] = Field(
        "closed", description="detector/guider error: 'closed' declines, 'open' forwards the request unguarded"
    )
    decline_message: str = Field("I'm sorry, but I can't help with that request right now.",
                                 description="the answer of a fail-closed decline")
    upstream_timeout_s: float = Field(120.0, gt=0, description="504 when the upstream takes longer")
    speculative_upstream: bool = Field(
        False, description="start the upstream call while detection runs (async backends only); an in-scope "
        "request's speculative call is cancelled before any of its output is read")

    # request limits
    max_body_bytes: int = Field(1_000_000, gt=0, description="413 above this")
    max_messages: int = Field(64, gt=0, description="400 above this")
    max_message_chars: int = Field(32_000, gt=0, description="400 above this")
    max_tokens_limit: int = Field(4096, gt=0, description="400 when max_tokens is larger")
    default_max_tokens: int = Field(256, gt=0, description="max_tokens when the client sends none")

    # operations
    drain_timeout_s: float = Field(30.0, ge=0, description="graceful shutdown: wait this long for in-flight streams")
    threads: int = Field(64, gt=0, description="worker threads for guard and upstream calls")
    default_rewriter: Literal["llm", "rule"] = Field("llm", description="rewriter of POST /admin/forget when the "
                                                     "request names none")
    audit_log: str | None = Field(None, description="JSONL audit log path (default <home>/audit.jsonl)")

    # rate limits (429 with Retry-After; per replica, in memory)
    rate_limit_per_key: float = Field(0.0, ge=0, description="requests per minute per accepted API key (0 = off)")
    rate_limit_per_client: float = Field(0.0, ge=0, description="requests per minute per client address (0 = off)")
    rate_limit_burst: int | None = Field(None, ge=1, description="requests a bucket holds (default: 10 s worth "
                                         "of the rate)")


# keys of the ``serve:`` section that moved to the ``store:`` section (read as aliases)
_MOVED = {"store": "kind", "store_dsn": "dsn", "store_schema": "schema"}


class GuardConfig(Section):
    """All of ``guard.yaml``: the guard, its store and the service in front of it."""

    backend: BackendConfig = Field(default_factory=BackendConfig, description="the chat model behind the guard")
    embedder: str = Field(DEFAULT_EMBEDDER, description="sentence embedder of the detector")
    embedder_quantize: Literal["auto", "none", "int8"] | None = Field(
        None, description="the embedder's ONNX weights: auto (int8 for the default encoder on the CPU onnx engine, else fp32), none "
        "(fp32) or int8 (dynamic quantisation, CPU); default LETHE_EMBED_QUANTIZE, else auto")
    detector: DetectorConfig = Field(default_factory=DetectorConfig, description="detection thresholds")
    guider: GuiderConfig = Field(default_factory=GuiderConfig, description="the reasoning step")
    intervention: InterventionConfig = Field(default_factory=InterventionConfig, description="where guidance goes")
    rewrites_per_prompt: int = Field(4, gt=0, description="rewrite candidates per forget prompt")
    expand: ExpandConfig = Field(default_factory=ExpandConfig, description="scope expansion (forget add --expand)")
    embedding_only: bool = Field(False, description="store rewrites as embeddings only, without their text")
    max_new_tokens: int = Field(200, gt=0, description="answer length of Guard.chat")
    store: StoreConfig = Field(default_factory=StoreConfig, description="the negative unlearn store")
    output_check: OutputCheckConfig = Field(default_factory=OutputCheckConfig,
                                            description="the answer scanned on the way out (off by default)")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="the HTTP service (lethe serve)")

    _source: Path | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _moved_serve_keys(cls, data: Any) -> Any:
        """Read ``serve.store/store_dsn/store_schema`` (older files) as ``store.kind/dsn/schema``."""
        if not isinstance(data, dict) or not isinstance(data.get("serve"), dict):
            return data
        serve = dict(data["serve"])
        moved = {new: serve.pop(old) for old, new in _MOVED.items() if old in serve}
        if not moved:
            return data
        store = data.get("store") or {}
        if not isinstance(store, dict):
            return data  # the store section's own error reports it
        store = dict(store)
        for new, value in moved.items():
            if new in store and store[new] != value:
                raise ValueError(f"serve.{_old(new)} (deprecated) and store.{new} disagree: keep store.{new}")
            store[new] = value
        log.warning("guard.yaml: %s moved to the store section (%s); read as an alias",
                    ", ".join(f"serve.{_old(k)}" for k in moved), ", ".join(f"store.{k}" for k in moved))
        return {**data, "serve": serve, "store": store}

    @property
    def source(self) -> Path | None:
        """The file this configuration was loaded from (None: built in code or defaults)."""
        return self._source

    @classmethod
    def load(cls, path: Path) -> GuardConfig:
        """The configuration in ``path`` (defaults when the file does not exist): :func:`load_config`."""
        return load_config(path=path, missing_ok=True)

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.model_dump(mode="json", by_alias=True), sort_keys=False),
                        encoding="utf-8")


def _old(new: str) -> str:
    return next(old for old, n in _MOVED.items() if n == new)


def _fields_at(loc: tuple) -> list[str]:
    """The keys the section at ``loc`` accepts (aliases as written in the file)."""
    model: Any = GuardConfig
    for part in loc:
        field = model.model_fields.get(str(part)) or next(
            (f for f in model.model_fields.values() if f.alias == part), None)
        model = getattr(field, "annotation", None) if field else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
    return [f.alias or name for name, f in model.model_fields.items()]


def describe_error(exc: ValidationError, source: str | os.PathLike[str], section: tuple[str, ...] = ()) -> str:
    """One line for the first validation error: the file, the dotted key and what is wrong.

    ``section``: where the validated model sits in the tree (``("serve",)`` for ServeConfig).
    """
    errors = exc.errors()
    err = errors[0]
    loc = (*section, *err["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _fields_at(loc[:-1]), n=1)
        hint = f"; did you mean '{'.'.join([*map(str, loc[:-1]), close[0]])}'?" if close else ""
        if not close and len(loc) == 1:  # a section's key written at the top level
            home = [s for s in GuardConfig.model_fields if str(loc[0]) in _fields_at((s,))]
            hint = f"; it belongs in a section: '{home[0]}.{loc[0]}'" if home else ""
        return f"{source}: unknown key '{key}'{hint}{more}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if not loc:
        return f"{source}: {msg}{more}"
    return f"{source}: bad value for '{key}': {msg}{more}"


def load_config(home: str | os.PathLike[str] | None = None, path: str | os.PathLike[str] | None = None,
                missing_ok: bool | None = None) -> GuardConfig:
    """The one loader of ``guard.yaml``, used by every entry point.

    ``path`` defaults to ``<home>/guard.yaml``; a missing default file means the defaults,
    a missing explicit ``path`` is an error (unless ``missing_ok``). A syntax error, an
    unknown key or a bad value raises one-line :class:`ConfigError` naming file and key.
    """
    if path is None:
        file = lethe_home(home) / CONFIG_FILE
        missing_ok = True if missing_ok is None else missing_ok
    else:
        file = Path(path).expanduser()
    if not file.exists():
        if not missing_ok:
            raise ConfigError(f"config file {file} not found")
        cfg = GuardConfig()
        cfg._source = file
        return cfg
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{file}: not valid YAML{where} ({getattr(exc, 'problem', None) or exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {file}: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: the top level must be a mapping of sections (backend:, store:, serve:, ...)")
    try:
        cfg = GuardConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_error(exc, file)) from None
    cfg._source = file
    return cfg


def lethe_home(home: str | os.PathLike[str] | None = None) -> Path:
    """Resolve and create the home folder: argument, then ``LETHE_HOME``, then ``~/.lethe``.

    A home that cannot be created (a file in its way, no permission) or is not writable (the
    store keeps its database and journal there) is a one-line ``ConfigError`` naming the folder.
    """
    raw = home or os.environ.get("LETHE_HOME") or Path.home() / ".lethe"
    path = Path(raw).expanduser()
    fix = "give another with --home DIR or LETHE_HOME"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"Lethe home {path} is a file, not a folder; {fix}") from None
    except OSError as exc:
        raise ConfigError(f"cannot create the Lethe home {path}: {exc.strerror or exc}; {fix}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"Lethe home {path} is not writable (the store writes there); {fix}")
    return path


def cache_dir() -> Path:
    """Where assembled model files live (outside the home: they are not user data)."""
    raw = os.environ.get("LETHE_CACHE") or os.environ.get("XDG_CACHE_HOME")
    base = Path(raw).expanduser() if raw else Path.home() / ".cache"
    path = base / "lethe" if not os.environ.get("LETHE_CACHE") else base
    path.mkdir(parents=True, exist_ok=True)
    return path
