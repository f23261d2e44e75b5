"""The HTTP contract as pydantic models: what each route takes and answers, and its errors.

They make the OpenAPI document (``/openapi.json``, ``/docs``); the handlers check the same
rules by hand on the hot path (:mod:`.hotpath`: no validation layer per request). The limits
come from the server's settings, so the document states the limits this server enforces, and
``tests/serving/test_serving_fuzz.py`` runs schemathesis against the live document to keep the
two in agreement: schema-valid requests must be served, invalid ones refused with a documented
status and body.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from ...config import ServerSettings
from ..core.engine import VISIBLE_PATTERN
from .bodies import MAX_SLO_MS


def text_type(settings: ServerSettings) -> Any:
    """One input text: at least one visible character; over-long ones are cut (or refused)."""
    return Annotated[str, Field(pattern=VISIBLE_PATTERN, description=(
        f"a text; over {settings.max_chars_per_text} characters (or the model's token limit) it is "
        "truncated, unless truncation is off (then 413/422)"))]


def texts_type(settings: ServerSettings) -> Any:
    return Annotated[list[text_type(settings)], Field(  # type: ignore[misc]
        min_length=1, max_length=settings.max_texts_per_request,
        description=f"1 to {settings.max_texts_per_request} texts")]


SLO = Annotated[float | None, Field(gt=0, le=MAX_SLO_MS, description="latency target for this request, in ms "
                                    "(default: the server's --slo-ms)")]
TRUNCATE = Annotated[bool | None, Field(description="cut texts longer than the model allows "
                                        "(default: the server's --truncate)")]


class Open(BaseModel):
    """Request bodies accept fields they do not know (clients send extras)."""

    model_config = ConfigDict(extra="allow")


def simple_request(settings: ServerSettings, what: str) -> type[BaseModel]:
    return create_model(  # type: ignore[call-overload, no-any-return]
        f"{what}Request", __base__=Open, __doc__=f"``POST /{what.lower()}``",
        texts=(texts_type(settings), ...), slo_ms=(SLO, None), truncate=(TRUNCATE, None),
        model=(str | None, Field(None, description="if given, the served model's name")))


def openai_request(settings: ServerSettings, dim: int | None) -> type[BaseModel]:
    dims: Any = Literal[dim] if dim else int  # only the model's own width
    return create_model(  # type: ignore[call-overload, no-any-return]
        "EmbeddingsRequest", __base__=Open, __doc__="OpenAI ``POST /v1/embeddings``",
        input=(text_type(settings) | texts_type(settings), ...),
        model=(Annotated[str, Field(min_length=1, description="the served model's name (GET /v1/models)")],
               ...),
        encoding_format=(Literal["float", "base64"], "float"),
        dimensions=(dims | None, None), user=(str | None, None), slo_ms=(SLO, None),
        truncate=(TRUNCATE, None))


class V2Output(Open):
    name: Literal["embedding", "logits", "probabilities", "label"]
    parameters: dict[str, Any] | None = None


def v2_request(settings: ServerSettings) -> type[BaseModel]:
    text_input = create_model(  # type: ignore[call-overload]
        "V2TextInput", __base__=Open,
        name=(Literal["text"], ...), datatype=(Literal["BYTES"], ...),
        shape=(Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=2,
               description="[N] or [N, 1]: the number of elements of data")], ...),
        data=(texts_type(settings) | None, Field(None, description="the texts (or binary data: "
              "parameters.binary_data_size, after the JSON header)")),
        parameters=(dict[str, Any] | None, None))
    return create_model(  # type: ignore[call-overload, no-any-return]
        "V2InferRequest", __base__=Open, __doc__="KServe v2 ``POST .../infer``",
        id=(str | None, None),
        inputs=(Annotated[list[text_input], Field(min_length=1, max_length=1)], ...),  # type: ignore[valid-type]
        outputs=(list[V2Output] | None, None),
        parameters=(dict[str, Any] | None, None))


# -- answers ---------------------------------------------------------------------------------
class Usage(BaseModel):
    tokens: int
    truncated_texts: int


class Timing(BaseModel):
    queue_ms: float
    compute_ms: float


class EmbedResponse(BaseModel):
    model: str
    dim: int
    embeddings: list[list[float]]
    usage: Usage
    students: int
    timing: Timing


class Prediction(BaseModel):
    label: str
    score: float
    probabilities: dict[str, float]


class ClassifyResponse(BaseModel):
    model: str
    results: list[Prediction]
    usage: Usage
    students: int
    timing: Timing


class Embedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # str: base64 of little-endian float32


class OpenAIUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: OpenAIUsage
    students: int


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class V2Tensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[V2Tensor]
    parameters: dict[str, Any]


class V2TensorSpec(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorSpec]
    outputs: list[V2TensorSpec]


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class Health(BaseModel):
    """With API keys on, a caller without one sees ``ready`` alone."""

    ready: bool
    error: str | None = None
    model: str | None = None
    workers: list[int | None] | None = None


# -- errors, in each API's own shape (serving.http.status.error_reply) ------------------------
class SimpleErrorDetail(BaseModel):
    type: str
    message: str
    request_id: str | None = None


class SimpleError(BaseModel):
    error: SimpleErrorDetail


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str
    request_id: str | None = None


class OpenAIError(BaseModel):
    error: OpenAIErrorDetail


class V2Error(BaseModel):
    error: str
    request_id: str | None = None


ERROR_MODEL = {"simple": SimpleError, "openai": OpenAIError, "v2": V2Error}
WHY = {
    400: "the body is not UTF-8 JSON of the expected shape",
    401: "no valid API key",
    404: "no such model (or version)",
    413: "the body, a request or a text is larger than the server takes",
    422: "the input cannot be served (see the message)",
    429: "overloaded: this request could not meet its latency target now; retry after Retry-After",
    500: "the model failed on the batch",
    503: "not ready yet, or shutting down",
}
RETRY = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}


def errors(api: str, *statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` entries of the given error statuses, each with its body."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": ERROR_MODEL[api], "description": WHY[status]}
        if status in (429, 503):
            entry["headers"] = RETRY
        out[status] = entry
    return out


INFER_ERRORS = (400, 404, 413, 422, 429, 500, 503)


def json_body(name: str) -> dict[str, Any]:
    """An ``openapi_extra`` request body for a route that reads its body itself: the schema
    ``name`` of :func:`request_models`, which the app adds to the document's components."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{name}"}}}}}


def request_models(settings: ServerSettings, dim: int | None) -> list[type[BaseModel]]:
    return [simple_request(settings, "Embed"), simple_request(settings, "Classify"),
            openai_request(settings, dim), v2_request(settings)]
