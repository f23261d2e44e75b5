"""One exception tree for bertserve; callers may catch at any level.

    BertserveError
    ├── ArtifactError            a model directory is missing, broken or unsupported
    │   └── UnsafeWeightsError   pickle weights (*.bin, *.pt) that we refuse to load
    ├── ConfigError              an option has an impossible value
    ├── InputError               a request's input cannot be served (→ 422)
    │   ├── TextTooLongError     a text exceeds the model's limit and truncation is off (→ 413)
    │   ├── MalformedBodyError   the body is not UTF-8 JSON of the expected shape (→ 400)
    │   ├── BodyTooLargeError    the body exceeds the server's limit (→ 413)
    │   ├── RequestTooLargeError one request holds more than the server's whole queue (→ 413)
    │   └── UnknownModelError    the request names a model this server does not serve (→ 404)
    ├── OverloadedError          the SLO cannot be met now; try again later (→ 429)
    ├── UnavailableError         not ready, shutting down, or a worker failed (→ 503)
    ├── BackendError             a runtime failed while computing (→ 500)
    └── TargetError              a benchmarked server's answer cannot be read (bench only)

Lower-library errors are translated at the boundary (``raise ... from exc``) so users see a
message they can act on. The statuses above are the HTTP layer's (``serving.http.status``
maps each class to one, once); a class here only names its ``kind``.
"""

from __future__ import annotations


class BertserveError(Exception):
    """Base class of every error bertserve raises on purpose."""

    kind = "internal_error"


class ArtifactError(BertserveError):
    kind = "artifact_error"


class UnsafeWeightsError(ArtifactError):
    kind = "unsafe_weights"


class ConfigError(BertserveError):
    kind = "config_error"


class InputError(BertserveError):
    kind = "invalid_input"


class TextTooLongError(InputError):
    kind = "text_too_long"


class MalformedBodyError(InputError):
    kind = "malformed_request"


class BodyTooLargeError(InputError):
    kind = "body_too_large"


class RequestTooLargeError(InputError):
    """Never servable as sent, so not a 429: retrying the same request cannot help."""

    kind = "request_too_large"


class UnknownModelError(InputError):
    kind = "model_not_found"


class OverloadedError(BertserveError):
    kind = "overloaded"

    reason = "overloaded"  # the label of bertserve_rejected_requests_total

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueFullError(OverloadedError):
    """The queue is at its bound (texts or tokens): nothing more may wait."""

    reason = "queue_full"


class DeadlineError(OverloadedError):
    """The request would finish past its latency target: refused now rather than answered late."""

    reason = "slo"


class UnavailableError(BertserveError):
    kind = "unavailable"


class BackendError(BertserveError):
    kind = "backend_error"


class TargetError(BertserveError):
    """A benchmarked server answered in a shape the benchmark cannot read."""

    kind = "target_error"


def by_name(name: str) -> type[BertserveError] | None:
    """The bertserve error class called ``name`` (an error that crossed a process boundary as
    its class name), or None for any other exception."""
    found = [c for c in _subclasses(BertserveError) if c.__name__ == name]
    return found[0] if found else None


def _subclasses(cls: type[BertserveError]) -> list[type[BertserveError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out += _subclasses(sub)
    return out
