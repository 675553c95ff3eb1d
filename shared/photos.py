"""A person's photo: from the media URL Twilio hands us to a JPEG we may store and send on.

Two steps, each refusing with :class:`~shared.errors.PhotoRefused` and a :class:`PhotoProblem`:

* :func:`fetch_media` takes only a URL on Twilio's media hosts (or the local stand-in), sends the
  account's credentials to ``api.twilio.com`` alone, follows at most MAX_REDIRECTS redirects
  itself, and stops at a byte limit and a deadline.
* :func:`prepare_photo` takes JPEG, PNG, WebP, GIF (its first frame) and HEIC/HEIF, as told by
  the bytes themselves; checks the picture's size before anything is decoded; turns it upright,
  flattens transparency onto white, scales it down and writes a JPEG with no metadata at all.

Where Twilio keeps inbound media:

* The webhook's ``MediaUrl{N}`` [DOC, reference/twilio.md §3.1] has the form
  ``https://api.twilio.com/2010-04-01/Accounts/AC…/Messages/MM…/Media/ME…`` [3P: peers' code;
  what the stand-in serves]. Twilio can require HTTP Basic auth with the account SID and auth
  token for it [DOC twilio.com/docs/messaging/api/media-resource].
* With that auth enforced, the URL redirects to a signed URL on ``mms.twiliocdn.com`` that is
  valid for 4 hours; without it, to ``s3-external-1.amazonaws.com`` [DOC help.twilio.com
  223183748 "Protect Media Access with HTTP Basic Authentication"].
* Other ``*.twiliocdn.com`` hosts (``media.twiliocdn.com`` serves Twilio's SDKs) as homes of
  message media: [UNCONFIRMED]; taken because the domain is Twilio's own.

What we chose:

* The credentials go to ``api.twilio.com`` (and the stand-in) only: that is the host Twilio
  documents Basic auth for, and what it redirects to is a signed URL that needs none (an S3
  presigned URL even refuses a second way of authenticating [UNCONFIRMED for Twilio's URLs]).
  A ``*.twiliocdn.com`` URL is fetched, but without them.
* A redirect may lead to Twilio's media hosts or to any other public ``https`` host on port 443
  named by DNS (a CDN or S3 bucket Twilio chose), fetched without credentials; never to plain
  ``http``, an IP address, another port or a URL with userinfo. Only Twilio (or the stand-in)
  answers the first request, so only it can send us anywhere.
* The deadline covers the whole fetch: every connect and read waits at most what is left of
  ``timeout_s``, and the body is read one socket read at a time so that a server that drips
  bytes is cut off too.
* ICC: the pixels are converted from the photo's own RGB profile to sRGB and no profile is
  written. iPhones shoot Display P3; dropping its profile without converting would dull every
  colour, and an untagged JPEG is read as sRGB by everyone, OpenAI included. A profile that
  does not parse is ignored (the pixels are kept as they are).

Pillow and pillow-heif are imported inside :func:`prepare_photo`, never at module import:
``generate`` imports this module, and must not load Pillow until a photo arrives.
"""

from __future__ import annotations

import contextlib
import io
import re
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import SplitResult, urljoin, urlsplit

import requests
import urllib3.exceptions

from .errors import PhotoRefused
from .jpeg_work import check_jpeg_work

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "JPEG_QUALITY",
    "MAX_PHOTO_EDGE",
    "MAX_PHOTO_PIXELS",
    "MAX_REDIRECTS",
    "FetchedMedia",
    "PhotoProblem",
    "PreparedPhoto",
    "fetch_media",
    "media_url_allowed",
    "prepare_photo",
]


class PhotoProblem(StrEnum):
    """Why a photo was refused."""

    FOREIGN_HOST = "foreign_host"  # not on a host we fetch media from
    UNREACHABLE = "unreachable"  # no answer, an error status, too many redirects, too slow
    NOT_AN_IMAGE = "not_an_image"  # neither declared nor made as an image format we take
    TOO_LARGE = "too_large"  # more bytes or pixels than the limits
    UNREADABLE = "unreadable"  # an image format we take, but the decoder could not read it


@dataclass(frozen=True)
class FetchedMedia:
    """The bytes of a media file, and the type its server declared for them: the media type
    alone, lower-cased, without parameters ("" when there was none)."""

    data: bytes
    content_type: str


@dataclass(frozen=True)
class PreparedPhoto:
    """A baseline JPEG with no metadata, upright, at most `max_edge` on its long side."""

    jpeg: bytes
    width: int
    height: int


TWILIO_API_HOST = "api.twilio.com"
TWILIO_CDN_DOMAIN = "twiliocdn.com"
MAX_REDIRECTS = 3

# A phone's photo: iPhones shoot 12 or 24 MP (5712x4284) by default; carriers shrink MMS photos
# and WhatsApp sends at most 4096 px on the long edge [UNCONFIRMED]. Decoded as RGB, 25 MP is
# 75 MB, what the 512 MiB generate can spare; the 48 and 200 MP modes some phones have are not.
MAX_PHOTO_PIXELS = 25_000_000
# A panorama may be long; this bounds the shapes that are all edge and no area.
MAX_PHOTO_EDGE = 16_384
JPEG_QUALITY = 90

# What the bytes must be: Pillow's format name for each. An MPO (a JPEG with more pictures
# after its end, as some cameras write) is opened by Pillow's JPEG plugin; its first picture is
# a plain JPEG.
_JPEG_FORMATS = frozenset({"JPEG", "MPO"})
# The ftyp major brands pillow-heif opens [pillow_heif/as_plugin.py _is_supported_heif]; AVIF
# (brand "avif") is not among the formats we take.
_HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}
)
# A declared type that says "some bytes" rather than "not an image"; the bytes then decide.
_UNTYPED = frozenset({"", "application/octet-stream", "binary/octet-stream"})

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_READ_BYTES = 64 * 1024
# A DNS name of at least two labels whose last is alphabetic: never an IP address or localhost.
_DNS_NAME = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
# Printable ASCII but the space and the backslash: what a URL from Twilio is made of. Parsers
# disagree about everything else (urlsplit drops tabs and newlines, WHATWG reads \ as /).
_URL_CHARACTERS = re.compile(r"[!-\[\]-~]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}


# --- which URLs ------------------------------------------------------------------------------


class _Origin(NamedTuple):
    scheme: str
    host: str
    port: int


def _parsed(url: str) -> tuple[SplitResult, _Origin] | None:
    """`url` split, with its origin, when it is an http(s) URL without userinfo; else None."""
    if not _URL_CHARACTERS.fullmatch(url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is not a number in range, a broken IPv6 literal
        return None
    if parts.scheme not in _DEFAULT_PORTS or "@" in parts.netloc or not parts.hostname:
        return None
    return parts, _Origin(parts.scheme, parts.hostname, port or _DEFAULT_PORTS[parts.scheme])


def _stand_in_origin(stand_in_base_url: str | None) -> _Origin | None:
    parsed = _parsed(stand_in_base_url) if stand_in_base_url else None
    return parsed[1] if parsed else None


def _is_twilio_media_host(host: str) -> bool:
    return host == TWILIO_API_HOST or (
        host.endswith("." + TWILIO_CDN_DOMAIN) and _DNS_NAME.fullmatch(host) is not None
    )


def _on_default_https(origin: _Origin) -> bool:
    return origin.scheme == "https" and origin.port == 443


def media_url_allowed(url: str, stand_in_base_url: str | None) -> bool:
    """Whether `url` is a media URL we fetch: https on port 443 on ``api.twilio.com`` or a
    ``*.twiliocdn.com`` host, or, with `stand_in_base_url` (the local Twilio stand-in), on
    exactly its scheme, host and port. Never with userinfo (``user:pass@``)."""
    parsed = _parsed(url)
    if parsed is None:
        return False
    origin = parsed[1]
    if origin == _stand_in_origin(stand_in_base_url):
        return True
    return _on_default_https(origin) and _is_twilio_media_host(origin.host)


def _credentials_allowed(url: str, stand_in_base_url: str | None) -> bool:
    """Whether the account's credentials may go to `url`: ``api.twilio.com`` or the stand-in."""
    parsed = _parsed(url)
    if parsed is None:
        return False
    origin = parsed[1]
    if origin == _stand_in_origin(stand_in_base_url):
        return True
    return _on_default_https(origin) and origin.host == TWILIO_API_HOST


def _redirect_allowed(url: str, stand_in_base_url: str | None) -> bool:
    """Whether a redirect may take us to `url`: a media URL, or a public https URL on port 443
    named by DNS (fetched without credentials)."""
    if media_url_allowed(url, stand_in_base_url):
        return True
    parsed = _parsed(url)
    return (
        parsed is not None
        and _on_default_https(parsed[1])
        and _DNS_NAME.fullmatch(parsed[1].host) is not None
    )


def _where(url: str) -> str:
    """The scheme, host and port of `url`, for an error's detail: a signed CDN URL's query is
    a credential of its own, and the path names the account."""
    parsed = _parsed(url)
    if parsed is None:
        return "a URL that is not http(s) or has userinfo"
    origin = parsed[1]
    return f"{origin.scheme}://{origin.host}:{origin.port}"


# --- fetching --------------------------------------------------------------------------------


def _refused(problem: PhotoProblem, message: str, detail: str | None = None) -> PhotoRefused:
    return PhotoRefused(message, problem=problem, detail=detail)


def _without_authorization(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """An auth hook that sends no credentials, whatever the session carries (``session.auth``,
    an ``Authorization`` default header, or a ``.netrc`` entry)."""
    request.headers.pop("Authorization", None)
    return request


def fetch_media(
    url: str,
    *,
    session: requests.Session,
    account_sid: str,
    auth_token: str,
    stand_in_base_url: str | None,
    max_bytes: int,
    timeout_s: float,
) -> FetchedMedia:
    """The media file at `url` (a ``MediaUrl{N}`` of an inbound message).

    Refuses a URL :func:`media_url_allowed` refuses before any request (FOREIGN_HOST). Sends
    HTTP Basic auth (`account_sid`, `auth_token`) only to ``api.twilio.com`` or the stand-in,
    hop by hop; follows at most MAX_REDIRECTS redirects, each checked by `_redirect_allowed`
    (FOREIGN_HOST). Anything but a 200 at the end, a failed connection or `timeout_s` passing
    is UNREACHABLE; more than `max_bytes`, declared or counted, is TOO_LARGE, read no further.
    """
    if not media_url_allowed(url, stand_in_base_url):
        raise _refused(
            PhotoProblem.FOREIGN_HOST,
            "the photo is not on Twilio's media hosts",
            detail=_where(url),
        )
    deadline = time.monotonic() + timeout_s
    for _ in range(MAX_REDIRECTS + 1):
        response = _get(session, url, (account_sid, auth_token), stand_in_base_url, deadline)
        try:
            if response.status_code in _REDIRECTS:
                url = _next_hop(url, response, stand_in_base_url)
                continue
            if response.status_code != 200:
                raise _refused(
                    PhotoProblem.UNREACHABLE,
                    "the photo could not be fetched",
                    detail=f"HTTP {response.status_code} from {_where(url)}",
                )
            data = _body_within(response, max_bytes, deadline)
            content_type = _media_type(response.headers.get("Content-Type", ""))
        finally:
            response.close()
        return FetchedMedia(data, content_type)
    raise _refused(
        PhotoProblem.UNREACHABLE,
        "the photo could not be fetched",
        detail=f"more than {MAX_REDIRECTS} redirects",
    )


def _get(
    session: requests.Session,
    url: str,
    credentials: tuple[str, str],
    stand_in_base_url: str | None,
    deadline: float,
) -> requests.Response:
    remaining = _remaining(deadline)
    auth = credentials if _credentials_allowed(url, stand_in_base_url) else _without_authorization
    try:
        return session.get(
            url,
            auth=auth,
            # Photos are compressed already; an uncompressed body is what the byte cap counts.
            headers={"Accept-Encoding": "identity"},
            allow_redirects=False,
            stream=True,
            timeout=(remaining, remaining),
        )
    except requests.Timeout as exc:
        raise _timed_out(url) from exc
    except requests.RequestException as exc:
        raise _refused(
            PhotoProblem.UNREACHABLE,
            "the photo could not be fetched",
            detail=f"{type(exc).__name__} from {_where(url)}",
        ) from exc


def _next_hop(url: str, response: requests.Response, stand_in_base_url: str | None) -> str:
    location = response.headers.get("Location")
    if not location:
        raise _refused(
            PhotoProblem.UNREACHABLE,
            "the photo could not be fetched",
            detail=f"HTTP {response.status_code} without a Location from {_where(url)}",
        )
    target = urljoin(url, location)
    if not _redirect_allowed(target, stand_in_base_url):
        raise _refused(
            PhotoProblem.FOREIGN_HOST,
            "the photo is not on Twilio's media hosts",
            detail=f"redirected from {_where(url)} to {_where(target)}",
        )
    return target


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _timed_out(None)
    return remaining


def _timed_out(url: str | None) -> PhotoRefused:
    return _refused(
        PhotoProblem.UNREACHABLE,
        "the photo took too long to fetch",
        detail="timed out" + (f" at {_where(url)}" if url else ""),
    )


def _too_large(detail: str) -> PhotoRefused:
    return _refused(PhotoProblem.TOO_LARGE, "the photo is too large", detail=detail)


def _body_within(response: requests.Response, max_bytes: int, deadline: float) -> bytes:
    """The body, refused as soon as it is known to exceed `max_bytes`. Read with one socket
    read at a time (``read1``), so the deadline is checked between reads however slowly the
    server sends."""
    declared = response.headers.get("Content-Length", "")
    if re.fullmatch(r"[0-9]+", declared.strip()) and int(declared) > max_bytes:
        raise _too_large(f"Content-Length {int(declared)} is over {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        _remaining(deadline)
        try:
            chunk = response.raw.read1(_READ_BYTES, decode_content=True)
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise _timed_out(None) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _refused(
                PhotoProblem.UNREACHABLE,
                "the photo could not be fetched",
                detail=f"{type(exc).__name__} while reading the body",
            ) from exc
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(f"body is over {max_bytes} bytes")
        chunks.append(chunk)


def _media_type(content_type: str) -> str:
    """``image/jpeg`` of ``Image/JPEG; charset=binary``."""
    return content_type.split(";", 1)[0].strip().lower()


# --- preparing -------------------------------------------------------------------------------

_heif_lock = threading.Lock()
_heif_registered = False


def _register_heif_opener() -> None:
    """Teach Pillow HEIC/HEIF, once per process, only when the first one arrives."""
    global _heif_registered
    with _heif_lock:
        if _heif_registered:
            return
        from pillow_heif import register_heif_opener

        # Only the primary picture: no thumbnails, depth maps or auxiliary images to parse.
        register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
        _heif_registered = True


def _format_of(data: bytes) -> str | None:
    """Pillow's name for the format the bytes are in, among those we take; else None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return "HEIF"
    return None


def _fitted(size: tuple[int, int], max_edge: int) -> tuple[int, int]:
    """`size` scaled down (never up) so that its long edge is at most `max_edge`."""
    width, height = size
    long_edge = max(width, height)
    if long_edge <= max_edge:
        return size
    scale = max_edge / long_edge
    return max(1, round(width * scale)), max(1, round(height * scale))


def prepare_photo(
    data: bytes,
    declared_type: str,
    *,
    max_edge: int = 1536,
    max_pixels: int = MAX_PHOTO_PIXELS,
) -> PreparedPhoto:
    """The photo in `data` as an upright RGB JPEG, at most `max_edge` on its long side, with no
    EXIF, GPS, XMP, ICC profile or comment.

    `declared_type` (a Content-Type or Twilio's ``MediaContentType{N}``) must be an image type,
    or say nothing (empty, ``application/octet-stream``); the bytes must then be JPEG, PNG,
    WebP, GIF or HEIC/HEIF whatever the declared type says (else NOT_AN_IMAGE). More than
    `max_pixels` or MAX_PHOTO_EDGE is TOO_LARGE and a JPEG whose scans would cost the decoder
    out of all proportion to its bytes is UNREADABLE, both before anything is decoded; so is
    whatever the decoder cannot read.
    """
    media_type = _media_type(declared_type)
    kind = _format_of(data)
    if kind is None or not (media_type.startswith("image/") or media_type in _UNTYPED):
        raise _refused(
            PhotoProblem.NOT_AN_IMAGE,
            "that is not a photo we can use: send a JPEG, PNG, WebP, GIF or HEIC picture",
            detail=f"declared {media_type or 'nothing'}, bytes {kind or 'of no format we take'}",
        )
    if kind == "HEIF":
        _register_heif_opener()
    from PIL import Image

    try:
        # Not closed: it reads from memory, and closing it would free the pixels we return.
        image = Image.open(io.BytesIO(data), formats=[kind])
        _check_size(image.size, max_pixels)
        size = _fitted(image.size, max_edge)
        if image.format in _JPEG_FORMATS:
            check_jpeg_work(data, image.size)
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale while that is still at least twice
            # the size we keep: far less memory and time for a large photo.
            image.draft(None, (size[0] * 2, size[1] * 2))
        image.load()
        icc_profile = image.info.get("icc_profile")
        picture = _rgb_or_rgba(image)
    except PhotoRefused:
        raise
    except Image.DecompressionBombError as exc:
        raise _too_large(f"{type(exc).__name__}: {str(exc)[:200]}") from exc
    except Exception as exc:
        # Decoders fed hostile bytes raise more than OSError/ValueError (a broken PNG chunk
        # stream raises SyntaxError, for one); whatever it is, the photo is unusable.
        raise _refused(
            PhotoProblem.UNREADABLE,
            "the photo could not be read",
            detail=f"{type(exc).__name__}: {str(exc)[:200]}",
        ) from exc
    return _encoded(_finished(picture, size, icc_profile))


def _check_size(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels or max(size) > MAX_PHOTO_EDGE:
        raise _too_large(
            f"{width}x{height} is over {max_pixels} pixels or {MAX_PHOTO_EDGE} on an edge"
        )


def _rgb_or_rgba(image: Image.Image) -> Image.Image:
    """`image` (its first frame) as RGBA when it has any transparency, else as RGB; palette and
    grey pictures too, so that scaling works on colours rather than on palette indexes."""
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    mode = "RGBA" if has_alpha else "RGB"
    return image if image.mode == mode else image.convert(mode)


def _finished(
    picture: Image.Image, size: tuple[int, int], icc_profile: bytes | None
) -> Image.Image:
    """`picture` scaled to `size`, upright, on white, in sRGB."""
    from PIL import Image, ImageOps

    if picture.size != size:
        # reducing_gap: a fast box pre-shrink, then Lanczos; visually the same as Lanczos alone.
        picture = picture.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    # Scaling kept `info` (and its EXIF), so the orientation is read after it, on fewer pixels.
    # An EXIF block that does not parse leaves the photo as it is.
    with contextlib.suppress(Exception):
        picture = ImageOps.exif_transpose(picture)
    if picture.mode == "RGBA":
        white = Image.new("RGBA", picture.size, (255, 255, 255, 255))
        white.alpha_composite(picture)
        picture = white.convert("RGB")
    return _in_srgb(picture, icc_profile)


def _in_srgb(picture: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """`picture` converted from its ICC profile to sRGB; as it is without a profile, or with
    one that does not parse or is not for RGB."""
    if not icc_profile:
        return picture
    from PIL import ImageCms

    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        converted = ImageCms.profileToProfile(
            picture, source, ImageCms.createProfile("sRGB"), outputMode="RGB"
        )
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return picture
    return converted if converted is not None else picture


def _encoded(picture: Image.Image) -> PreparedPhoto:
    """A JPEG of `picture`'s pixels and nothing else: copied onto a new image, whose `info` is
    empty, so no EXIF, XMP, ICC profile or comment can ride along."""
    from PIL import Image

    clean = Image.new("RGB", picture.size)
    clean.paste(picture)
    out = io.BytesIO()
    clean.save(out, "JPEG", quality=JPEG_QUALITY)
    return PreparedPhoto(out.getvalue(), clean.width, clean.height)
