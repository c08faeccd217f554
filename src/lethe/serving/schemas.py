"""OpenAI-compatible request/response models and the admin API models (pydantic).

Only the parts of the OpenAI chat schema that a text chat proxy can honour are
validated; unknown fields are accepted and ignored, as OpenAI-compatible servers do.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Role = Literal["system", "developer", "user", "assistant", "tool"]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text"]
    text: Annotated[str, Field(max_length=1_000_000)]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Role
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content)


def detection_view(messages: list[ChatMessage], always: bool = False) -> list[dict] | None:
    """The messages as detection reads them: every role (``developer`` as ``system``), content as
    sent (text parts kept apart), and the ``name``, ``tool_calls`` and ``function_call`` fields
    that the proxy does not forward upstream. ``None`` when that adds nothing to the forwarded
    role-and-text messages (unless ``always``): no such field and no content given as parts."""
    extra = ("name", "tool_calls", "function_call", "refusal")
    if not always and not any(isinstance(m.content, list) or any(getattr(m, k, None) or (m.model_extra or {}).get(k)
                                                                  for k in extra) for m in messages):
        return None
    out = []
    for m in messages:
        d = m.model_dump(exclude_none=True)
        d["role"] = "system" if m.role == "developer" else m.role
        out.append(d)
    return out


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = Field(None, max_length=256)
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    n: int | None = Field(None, ge=1, le=1, description="only n=1 is supported")
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: Annotated[str, Field(max_length=256)] | list[Annotated[str, Field(max_length=256)]] | None = Field(
        None, max_length=4
    )
    seed: int | None = None
    user: str | None = Field(None, max_length=256)

    @model_validator(mode="after")
    def _has_user_turn(self) -> ChatCompletionRequest:
        if not any(m.role == "user" for m in self.messages):
            raise ValueError("messages must contain at least one message with role 'user'")
        return self


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: Literal["stop", "length", "content_filter"] = "stop"  # content_filter: the output check
    logprobs: None = None


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "lethe"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


# -- admin -------------------------------------------------------------------------------
Prompt = Annotated[str, Field(min_length=1, max_length=20_000)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class ForgetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["privacy", "copyright", "harmful", "knowledge"] | None = Field(
        None, description="default: privacy, or the pack's kind")
    subject: Name | None = None
    prompts: list[Prompt] = Field(default_factory=list, max_length=500)
    pack: Name | None = Field(None, description="a shipped scope pack whose questions are added "
                              "(lethe.packs; GET /admin/packs lists them)")
    entities: list[Name] | None = Field(None, max_length=100)
    policy: Name | None = None
    rewriter: Literal["llm", "rule"] | None = Field(None, description="default: the server's default_rewriter")
    describe: str | None = Field(None, max_length=4000, description="what a concept request covers (with expand)")
    expand: int = Field(0, ge=0, le=5000, description="concept kinds: more in-scope questions the chat model "
                        "writes, stored as rewrites (lethe.guard.expand)")


class ForgetOut(BaseModel):
    id: str
    kind: str
    subject: str | None = None
    policy: str | None = None
    n_prompts: int
    created_at: float
    revoked_at: float | None = None
    live: bool


class ForgetList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ForgetOut]


class PackOut(BaseModel):
    name: str
    kind: str
    describe: str
    areas: dict[str, int]


class PackList(BaseModel):
    object: Literal["list"] = "list"
    data: list[PackOut]


class RevokeOut(BaseModel):
    id: str
    revoked: bool


class CheckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: Annotated[str, Field(min_length=1, max_length=100_000)] | None = None
    messages: list[ChatMessage] | None = Field(None, min_length=1, max_length=256)

    @model_validator(mode="after")
    def _one_of(self) -> CheckIn:
        if (self.query is None) == (self.messages is None):
            raise ValueError("give exactly one of 'query' or 'messages'")
        if self.messages is not None and not any(m.role == "user" for m in self.messages):
            raise ValueError("messages must contain at least one message with role 'user'")
        return self


class CheckOut(BaseModel):
    triggered: bool
    score: float
    request_id: str | None = None
    kind: str | None = None
    components: dict[str, float] = Field(default_factory=dict)
    matched: list[dict[str, Any]] = Field(default_factory=list)
    explanation: str | None = None


class CalibrateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    benign: list[Prompt] | None = Field(None, min_length=1, max_length=20_000)
    target_fpr: float = Field(0.01, ge=1e-6, lt=1.0, description="allowed false-positive rate (at least 1e-6)")


class CalibrateOut(BaseModel):
    tau: float
    target_fpr: float
