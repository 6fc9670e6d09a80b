"""One error root for the server; `servers.app` maps each class to its HTTP response."""

from __future__ import annotations


class ConfigError(Exception):
    """Raised at start-up for an invalid setting, key or unreachable store; never per request."""


class AuthError(Exception):
    """Base of every error a request can end in; `status` and `code` shape the response."""

    status = 400
    code = "bad_request"
    detail = "the request is invalid"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.detail)
        self.detail = detail or self.detail


class MalformedRequest(AuthError):
    """Raised when a body is not valid JSON or misses or mistypes a field."""


class AmbiguousCredential(AuthError):
    """Raised when a request carries the credential twice (duplicate cookie or header)."""

    code = "ambiguous_credential"
    detail = "the credential was sent more than once"


class UnsupportedMediaType(AuthError):
    """Raised when a JSON endpoint receives another Content-Type."""

    status = 415
    code = "unsupported_media_type"
    detail = "send Content-Type: application/json"


class PayloadTooLarge(AuthError):
    """Raised when a body exceeds the server's limit."""

    status = 413
    code = "payload_too_large"
    detail = "the body exceeds 1 MiB"


class Unauthenticated(AuthError):
    """Raised when a request lacks a valid credential; answered 401 with WWW-Authenticate."""

    status = 401
    code = "unauthorized"
    detail = "a valid credential is required"


class InvalidCredentials(Unauthenticated):
    """Raised for an unknown user or a wrong password (one message for both)."""

    code = "invalid_credentials"
    detail = "invalid username or password"


class SessionNotFound(Unauthenticated):
    """Raised when a session id is malformed, unknown, expired or already rotated."""

    code = "invalid_session"
    detail = "the session is missing, expired or ended"


class TokenInvalid(Unauthenticated):
    """Raised for an access token that is malformed, forged, expired or of the wrong type."""

    code = "invalid_token"
    detail = "the access token is invalid or expired"


class TokenRevoked(TokenInvalid):
    """Raised for an access token whose `jti` is on the denylist."""

    detail = "the access token was revoked"


class InvalidGrant(Unauthenticated):
    """Raised for a refresh token that is spent, revoked, expired or forged."""

    code = "invalid_grant"
    detail = "the refresh token is invalid, expired or already used"


class CsrfFailed(AuthError):
    """Raised when a cookie-authenticated unsafe request lacks the matching X-CSRF-Token."""

    status = 403
    code = "csrf_failed"
    detail = "missing or wrong X-CSRF-Token"


class Throttled(AuthError):
    """Raised when a username has failed to log in too often; answered 429 with Retry-After."""

    status = 429
    code = "too_many_attempts"
    detail = "too many failed logins; try again later"

    def __init__(self, retry_after: int) -> None:
        super().__init__()
        self.retry_after = retry_after


class StoreUnavailable(AuthError):
    """Raised when the backing store cannot be reached in time; answered 503 with Retry-After."""

    status = 503
    code = "store_unavailable"
    detail = "the credential store is unreachable"
