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
from ..core.info import ModelInfo
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


def simple_request(settings: ServerSettings, what: str, pairs: bool | None = False) -> type[BaseModel]:
    """``pairs``: the served model reads text pairs (``text_pairs`` required), or not (absent),
    or is not known yet (optional)."""
    extra: dict[str, Any] = {}
    if pairs is not False:
        second = Annotated[texts_type(settings) | None, Field(description=(  # type: ignore[misc]
            "a pair model's second texts, as many as texts: the pairs are (texts[i], text_pairs[i])"))]
        extra["text_pairs"] = (second, ...) if pairs else (second, None)
    return create_model(  # type: ignore[call-overload, no-any-return]
        f"{what}Request", __base__=Open, __doc__=f"``POST /{what.lower()}``",
        texts=(texts_type(settings), ...), **extra, slo_ms=(SLO, None), truncate=(TRUNCATE, None),
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
    name: Literal["embedding", "logits", "probabilities", "label", "score", "logit"]
    parameters: dict[str, Any] | None = None


def v2_request(settings: ServerSettings, pairs: bool | None = False) -> type[BaseModel]:
    """``pairs``: a pair model takes two inputs, ``text`` and ``text_pair``, of the same shape."""
    names: Any = Literal["text"] if pairs is False else Literal["text", "text_pair"]
    least, most = {False: (1, 1), True: (2, 2), None: (1, 2)}[pairs]
    text_input = create_model(  # type: ignore[call-overload]
        "V2TextInput", __base__=Open,
        name=(names, Field(..., description="text; and text_pair, the second texts, for a pair model")),
        datatype=(Literal["BYTES"], ...),
        shape=(Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=2,
               description="[N] or [N, 1]: the number of elements of data")], ...),
        data=(texts_type(settings) | None, Field(None, description="the texts (or binary data: "
              "parameters.binary_data_size, after the JSON header)")),
        parameters=(dict[str, Any] | None, None))
    return create_model(  # type: ignore[call-overload, no-any-return]
        "V2InferRequest", __base__=Open, __doc__="KServe v2 ``POST .../infer``",
        id=(str | None, None),
        inputs=(Annotated[list[text_input], Field(min_length=least, max_length=most)], ...),  # type: ignore[valid-type]
        outputs=(list[V2Output] | None, None),
        parameters=(dict[str, Any] | None, None))


BOOL = Annotated[bool | None, Field(description="default false")]
RIGHT = Annotated[Literal["right", "Right"] | None, Field(description=(
    "only right: a text too long for the model loses its end"))]


def tei_rerank_request(settings: ServerSettings) -> type[BaseModel]:
    return create_model(  # type: ignore[call-overload, no-any-return]
        "RerankRequest", __base__=Open, __doc__="TEI ``POST /rerank``: score each text against the query",
        query=(text_type(settings), ...), texts=(texts_type(settings), ...),
        raw_scores=(BOOL, Field(None, description="the model's logits, not sigmoid(logit)")),
        return_text=(BOOL, Field(None, description="each result carries its text")),
        truncate=(TRUNCATE, None), truncation_direction=(RIGHT, None), slo_ms=(SLO, None))


def predict_inputs(settings: ServerSettings, pairs: bool | None) -> Any:
    """TEI's ``inputs``: one sequence or a batch of them; a sequence is one text (a string, or
    ``[text]``) for a single-text classifier, a pair ``[text, text_pair]`` for a pair model."""
    text = text_type(settings)
    pair = Annotated[list[text], Field(min_length=2, max_length=2, description="[text, text_pair]")]  # type: ignore[valid-type]
    one = Annotated[list[text], Field(min_length=1, max_length=1, description="[text]")]  # type: ignore[valid-type]
    n = settings.max_texts_per_request

    def batch(item: Any) -> Any:
        return Annotated[list[item], Field(min_length=1, max_length=n,  # type: ignore[valid-type]
                                           description=f"a batch: 1 to {n} sequences")]

    if pairs:
        return pair | batch(pair)
    if pairs is False:
        return text | one | batch(one)
    return text | one | pair | batch(one | pair)


def predict_request(settings: ServerSettings, pairs: bool | None) -> type[BaseModel]:
    return create_model(  # type: ignore[call-overload, no-any-return]
        "PredictRequest", __base__=Open, __doc__="TEI ``POST /predict``: classify sequences (or pairs)",
        inputs=(predict_inputs(settings, pairs), ...),
        raw_scores=(BOOL, Field(None, description="the model's logits, not softmax (or a single "
                                "logit's sigmoid)")),
        truncate=(TRUNCATE, None), truncation_direction=(RIGHT, None), slo_ms=(SLO, None))


def cohere_rerank_request(settings: ServerSettings, name: str | None = None) -> type[BaseModel]:
    """``name``: the served model's, once loaded (another name is answered 404)."""
    model: Any = Literal[name] if name else Annotated[str, Field(min_length=1)]
    return create_model(  # type: ignore[call-overload, no-any-return]
        "CohereRerankRequest", __base__=Open, __doc__="Cohere ``POST /v2/rerank``",
        model=(model, Field(..., description="the served model's name")),
        query=(text_type(settings), ...), documents=(texts_type(settings), ...),
        top_n=(Annotated[int | None, Field(ge=1, description="the best N (default: all)")], None),
        max_tokens_per_doc=(Annotated[int | None, Field(ge=1, description=(
            "accepted, not applied: each pair is cut to the model's own token limit "
            "(meta.warnings)"))], None),
        relevant_spans=(dict[str, Any] | None, Field(None, description="not supported (meta.warnings)")),
        priority=(int | None, Field(None, description="accepted, not used: the latency target orders "
                                    "requests (slo_ms)")),
        slo_ms=(SLO, None), truncate=(TRUNCATE, None))


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


class TEIRank(BaseModel):
    index: int
    score: float
    text: str | None = None  # with return_text only


class TEIPrediction(BaseModel):
    score: float
    label: str


TEIRerankResponse = list[TEIRank]
TEIPredictResponse = list[TEIPrediction] | list[list[TEIPrediction]]  # one sequence | a batch


class CohereResult(BaseModel):
    index: int
    relevance_score: float


class CohereVersion(BaseModel):
    version: str


class CohereBilled(BaseModel):
    search_units: int


class CohereTokens(BaseModel):
    input_tokens: int
    output_tokens: int


class CohereMeta(BaseModel):
    api_version: CohereVersion
    billed_units: CohereBilled
    tokens: CohereTokens
    warnings: list[str] | None = None


class CohereRerankResponse(BaseModel):
    id: str | None
    results: list[CohereResult]
    meta: CohereMeta


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


class AutoCandidate(BaseModel):
    backend: str
    precision: str
    ms: float = Field(description="summed median milliseconds over the measured shapes")
    fidelity: float = Field(description="cosine of its outputs to onnxruntime fp32's")
    error: str | None = None


class AutoChoice(BaseModel):
    """What backend auto measured at start-up (bertserve.export.choose)."""

    backend: str
    precision: str
    candidates: list[AutoCandidate]
    threads: int | None = None


class Runtime(BaseModel):
    backend: str = Field(description="the runtime the workers run: torch | onnxruntime | openvino")
    precision: str
    auto: AutoChoice | None = Field(None, description="the measurement behind backend auto's choice")


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorSpec]
    outputs: list[V2TensorSpec]
    parameters: dict[str, Runtime] | None = Field(None, description="bertserve: {\"runtime\": ...}")


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
    runtime: Runtime | None = None


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


class TEIError(BaseModel):
    error: str
    error_type: Literal["validation", "tokenizer", "overloaded", "backend", "unhealthy", "unauthorized"]
    request_id: str | None = None


class CohereError(BaseModel):
    id: str | None
    message: str


ERROR_MODEL = {"simple": SimpleError, "openai": OpenAIError, "v2": V2Error, "tei": TEIError,
               "cohere": CohereError}
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


def request_models(settings: ServerSettings, info: ModelInfo) -> list[type[BaseModel]]:
    """The request bodies for the served model (``info``; before it is loaded, what any model takes)."""
    pairs = info.pairs if info.task is not None else None
    return [simple_request(settings, "Embed"), simple_request(settings, "Classify", pairs),
            openai_request(settings, info.dim or None), v2_request(settings, pairs),
            tei_rerank_request(settings), predict_request(settings, pairs),
            cohere_rerank_request(settings, info.name if info.task is not None else None)]
