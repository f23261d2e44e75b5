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
    │   ├── UnknownModelError    the request names a model this server does not serve (→ 404)
    │   └── NotFoundError        no such route (→ 404)
    ├── OverloadedError          the SLO cannot be met now; try again later (→ 429)
    ├── UnavailableError         not ready, shutting down, or a worker failed (→ 503)
    └── BackendError             a runtime failed while computing (→ 500)

Lower-library errors are translated at the boundary (``raise ... from exc``) so users see a
message they can act on; the HTTP layer maps each class to one status code, once.
"""

from __future__ import annotations


class BertserveError(Exception):
    """Base class of every error bertserve raises on purpose."""

    status_code = 500
    kind = "internal_error"


class ArtifactError(BertserveError):
    kind = "artifact_error"


class UnsafeWeightsError(ArtifactError):
    kind = "unsafe_weights"


class ConfigError(BertserveError):
    status_code = 400
    kind = "config_error"


class InputError(BertserveError):
    status_code = 422
    kind = "invalid_input"


class TextTooLongError(InputError):
    status_code = 413
    kind = "text_too_long"


class MalformedBodyError(InputError):
    status_code = 400
    kind = "malformed_request"


class BodyTooLargeError(InputError):
    status_code = 413
    kind = "body_too_large"


class RequestTooLargeError(InputError):
    """Never servable as sent, so not a 429: retrying the same request cannot help."""

    status_code = 413
    kind = "request_too_large"


class UnknownModelError(InputError):
    status_code = 404
    kind = "model_not_found"


class NotFoundError(InputError):
    status_code = 404
    kind = "not_found"


class OverloadedError(BertserveError):
    status_code = 429
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
    status_code = 503
    kind = "unavailable"


class BackendError(BertserveError):
    kind = "backend_error"
