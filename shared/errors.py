"""The project's exception tree.

Vendor exceptions (supabase, twilio, requests, Pillow) are translated into these at one boundary
per client, chained with ``raise ... from exc``, so the HTTP adapters only ever see our types::

    AppError
    ├── BadRequest          the caller sent something we cannot accept (HTTP 4xx)
    │   ├── EmptyPrompt     nothing to draw
    │   ├── PromptTooLong   more than MAX_PROMPT_CHARS
    │   ├── HiddenNumber    a withheld caller ID: nobody to send the picture to
    │   └── PhotoRefused    a person's photo we will not fetch or cannot use; ``problem`` says why
    ├── Unauthorized        missing or wrong operator key
    ├── Forbidden           a Twilio request whose signature did not verify
    ├── SignatureError      a webhook or callback signature did not verify
    ├── ConfigError         a setting or secret is missing or malformed
    └── UpstreamError       a vendor failed; ``retryable`` says whether trying later can help
        ├── StoreError      Supabase tables or Storage
        ├── PublishError    QStash publish
        ├── MessagingError  Twilio; ``code`` is Twilio's error code when there is one
        └── ProviderError   the image provider's answer (via the QStash callback)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .photos import PhotoProblem


class AppError(Exception):
    """Base class for every error this project raises on purpose."""

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class BadRequest(AppError):
    """Input we cannot accept; the message is safe to show to the caller."""


class EmptyPrompt(BadRequest):
    """The prompt has nothing to draw once spaces and invisible characters are gone."""


class PromptTooLong(BadRequest):
    """The prompt is longer than MAX_PROMPT_CHARS; `length` says by how much."""

    def __init__(self, message: str, *, length: int) -> None:
        super().__init__(message)
        self.length = length


class HiddenNumber(BadRequest):
    """The caller withheld their number: Twilio's stand-in for it (+266696687, "anonymous")
    reaches nobody, so there is no one to send the picture to."""


class PhotoRefused(BadRequest):
    """A photo a person sent that we will not fetch (not on Twilio's media hosts) or cannot
    use (unreachable, not an image, too large, unreadable); `problem` says which."""

    def __init__(self, message: str, *, problem: PhotoProblem, detail: str | None = None) -> None:
        super().__init__(message, detail=detail)
        self.problem = problem


class Unauthorized(AppError):
    """The caller did not prove who it is."""


class Forbidden(AppError):
    """The caller is known but may not do this (a Twilio request with a bad signature)."""


class SignatureError(AppError):
    """A QStash or Twilio signature is missing, forged, expired or for another URL."""


class ConfigError(AppError):
    """The deployment is misconfigured; retrying will not help until someone fixes it."""


class UpstreamError(AppError):
    """A vendor call failed."""

    def __init__(self, message: str, *, retryable: bool, detail: str | None = None) -> None:
        super().__init__(message, detail=detail)
        self.retryable = retryable


class StoreError(UpstreamError):
    """Supabase (PostgREST or Storage) failed or could not be reached."""


class PublishError(UpstreamError):
    """QStash refused or did not answer a publish."""


class MessagingError(UpstreamError):
    """Twilio refused or did not answer a send."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        code: int | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message, retryable=retryable, detail=detail)
        self.code = code


class ProviderError(UpstreamError):
    """The image provider's response was an error or unusable."""
