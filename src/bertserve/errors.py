"""One exception tree for bertserve; callers may catch at any level.

    BertserveError
    ├── ArtifactError            a model directory is missing, broken or unsupported
    │   └── UnsafeWeightsError   pickle weights (*.bin, *.pt) that we refuse to load
    ├── ConfigError              an option has an impossible value
    ├── InputError               a request's input cannot be served (→ 4xx)
    │   └── TextTooLongError     a text exceeds the model's limit and truncation is off
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


class OverloadedError(BertserveError):
    status_code = 429
    kind = "overloaded"

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UnavailableError(BertserveError):
    status_code = 503
    kind = "unavailable"


class BackendError(BertserveError):
    kind = "backend_error"
