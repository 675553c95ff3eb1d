"""shared.photos: which media URLs we fetch, how, and what a person's photo becomes.

The fetch tests run against one real HTTP server on a loopback port. Requests to https hosts
(api.twilio.com, the CDN, anything a redirect names) reach it through `_Loopback`, a transport
mounted on the session that sends each request there and says in X-Meant-For which host it
was meant for: the credentials and redirects are those of the real code, only the socket's
far end is ours.
"""

from __future__ import annotations

import base64
import io
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import pillow_heif
import pytest
import requests
from PIL import ExifTags, GifImagePlugin, Image, ImageCms
from requests.adapters import HTTPAdapter
from werkzeug.wrappers import Request, Response

from devstack.serving import RunningServer, serve_in_thread
from shared.errors import BadRequest, PhotoRefused
from shared.photos import (
    MAX_PHOTO_PIXELS,
    MAX_REDIRECTS,
    FetchedMedia,
    PhotoProblem,
    fetch_media,
    media_url_allowed,
    prepare_photo,
)

ROOT = Path(__file__).resolve().parents[1]
SID, TOKEN = "AC0123456789abcdef0123456789abcdef", "the-auth-token"
BASIC = "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
MEDIA = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/photo"
CDN = "https://mms.twiliocdn.com/AC1/0685c8ad?Expires=1&Signature=sig"
STAND_IN = "http://127.0.0.1:8765"


# --- which URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        (MEDIA, True),
        ("https://API.Twilio.COM/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1", True),
        ("https://api.twilio.com:443/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1", True),
        (CDN, True),
        ("https://media.twiliocdn.com/AC1/abc", True),
        # Not https, or not on port 443.
        ("http://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1", False),
        ("https://api.twilio.com:8443/x", False),
        ("https://mms.twiliocdn.com:444/x", False),
        ("https://api.twilio.com:abc/x", False),
        ("https://api.twilio.com:99999/x", False),
        # Userinfo, whichever side of the @ Twilio is on.
        ("https://user:pw@api.twilio.com/x", False),
        ("https://user@api.twilio.com/x", False),
        ("https://api.twilio.com@evil.example/x", False),
        ("https://api.twilio.com:443@evil.example/x", False),
        # Hosts that only look like Twilio's.
        ("https://evil.example/?u=https://api.twilio.com/", False),
        ("https://api.twilio.com.evil.example/x", False),
        ("https://mms.twiliocdn.com.evil.example/x", False),
        ("https://eviltwilio.com/x", False),
        ("https://eviltwiliocdn.com/x", False),
        ("https://twiliocdn.com/x", False),
        ("https://twilio.com/x", False),
        ("https://pricing.twilio.com/x", False),
        ("https://api.twilio.com./x", False),
        ("https://\u0430pi.twilio.com/x", False),  # a Cyrillic a
        # Characters parsers disagree about.
        ("https://evil.example\\@api.twilio.com/x", False),
        ("https://api.twil\nio.com/x", False),
        ("https://api.twilio.com/x y", False),
        ("https://api.twilio.com\t/x", False),
        # IP addresses, other schemes, no scheme at all.
        ("https://127.0.0.1/x", False),
        ("https://[::1]/x", False),
        ("https://169.254.169.254/computeMetadata/v1/", False),
        ("ftp://api.twilio.com/x", False),
        ("file:///etc/passwd", False),
        ("javascript:alert(1)", False),
        ("//api.twilio.com/x", False),
        ("api.twilio.com/x", False),
        ("", False),
    ],
)
def test_media_url_allowed_takes_only_twilios_media_hosts(url: str, allowed: bool) -> None:
    assert media_url_allowed(url, None) is allowed


@pytest.mark.parametrize(
    ("url", "stand_in", "allowed"),
    [
        (f"{STAND_IN}/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1", STAND_IN, True),
        (f"{STAND_IN}/anything", f"{STAND_IN}/twilio/", True),  # the origin, not the path
        (MEDIA, STAND_IN, True),  # Twilio's own hosts still
        ("http://127.0.0.1:8766/x", STAND_IN, False),  # another port
        ("http://localhost:8765/x", STAND_IN, False),  # another host, even the same machine
        ("https://127.0.0.1:8765/x", STAND_IN, False),  # another scheme
        ("http://user@127.0.0.1:8765/x", STAND_IN, False),
        ("http://localhost/x", "http://localhost", True),
        ("http://localhost:80/x", "http://localhost", True),
        (f"{STAND_IN}/x", None, False),
        (f"{STAND_IN}/x", "", False),
        (f"{STAND_IN}/x", "not a url", False),
    ],
)
def test_media_url_allowed_takes_the_stand_ins_exact_origin(
    url: str, stand_in: str | None, allowed: bool
) -> None:
    assert media_url_allowed(url, stand_in) is allowed


# --- a server that plays every host ------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    host: str  # the host the request was meant for
    path: str
    authorization: str | None


class MediaServer:
    """Answers by the last segment of the path, whatever comes before it."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.photo = _jpeg(Image.new("RGB", (64, 48), (200, 30, 30)))
        self.running: RunningServer | None = None

    @property
    def url(self) -> str:
        assert self.running is not None
        return self.running.url

    def __call__(self, environ: dict[str, object], start_response: object) -> object:
        request = Request(environ)
        self.seen.append(
            Seen(
                request.headers.get("X-Meant-For") or request.host,
                request.path,
                request.headers.get("Authorization"),
            )
        )
        response = self._answer(request.path.rsplit("/", 1)[-1], request.args)
        return response(environ, start_response)  # type: ignore[arg-type]

    def _answer(self, action: str, args: dict[str, str]) -> Response:
        if action == "photo":
            return Response(self.photo, content_type=args.get("type", "image/jpeg"))
        if action == "redirect":
            return Response(status=int(args.get("status", 302)), headers={"Location": args["to"]})
        if action == "hops":  # n more redirects on the same host, by relative Location
            left = int(args["n"])
            location = f"hops?n={left - 1}" if left else "photo"
            return Response(status=302, headers={"Location": location})
        if action == "status":
            return Response(b"no", status=int(args["code"]))
        if action == "sized":
            body = b"x" * int(args["n"])
            if args.get("chunked"):  # no Content-Length: only counting can tell
                return Response(iter([body[:1000], body[1000:]]), content_type="image/jpeg")
            return Response(body, content_type="image/jpeg")
        if action == "endless":

            def endless() -> Iterator[bytes]:
                while True:
                    yield b"x" * 65536

            headers = {"Content-Length": args["length"]} if "length" in args else {}
            return Response(endless(), content_type="image/jpeg", headers=headers)
        if action == "slow":
            time.sleep(float(args["s"]))
            return Response(self.photo, content_type="image/jpeg")
        if action == "drip":

            def drip() -> Iterator[bytes]:
                for _ in range(200):
                    time.sleep(0.05)
                    yield b"x"

            return Response(drip(), content_type="image/jpeg")
        if action == "text":
            return Response(b"<html>a page, not a photo</html>", content_type="image/jpeg")
        return Response(b"unknown", status=404)


class _Loopback(HTTPAdapter):
    """Sends every request to `server_url`, naming the host it was meant for in X-Meant-For."""

    def __init__(self, server_url: str) -> None:
        super().__init__()
        self.server_url = server_url

    def send(self, request, *args, **kwargs):
        parts = urlsplit(request.url)
        request.headers["X-Meant-For"] = parts.netloc
        request.url = self.server_url + parts.path + (f"?{parts.query}" if parts.query else "")
        return super().send(request, *args, **kwargs)


@pytest.fixture(scope="module")
def media_server() -> Iterator[MediaServer]:
    server = MediaServer()
    server.running = serve_in_thread(server)
    yield server
    server.running.stop()


@pytest.fixture
def server(media_server: MediaServer) -> MediaServer:
    media_server.seen.clear()
    return media_server


@pytest.fixture
def session(server: MediaServer) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # no proxy or .netrc from this machine
        session.mount("https://", _Loopback(server.url))
        yield session


def _fetch(
    url: str,
    session: requests.Session,
    *,
    stand_in: str | None = None,
    max_bytes: int = 1_000_000,
    timeout_s: float = 5.0,
) -> FetchedMedia:
    return fetch_media(
        url,
        session=session,
        account_sid=SID,
        auth_token=TOKEN,
        stand_in_base_url=stand_in,
        max_bytes=max_bytes,
        timeout_s=timeout_s,
    )


def _refused(problem: PhotoProblem, call: object, *args: object, **kwargs: object) -> PhotoRefused:
    with pytest.raises(PhotoRefused) as refused:
        call(*args, **kwargs)  # type: ignore[operator]
    assert refused.value.problem is problem, refused.value.detail
    return refused.value


def _redirect(url: str, to: str, status: int = 302) -> str:
    return f"{url.rsplit('/', 1)[0]}/redirect?status={status}&to={quote(to, safe='')}"


# --- fetching --------------------------------------------------------------------------------


def test_photo_refused_is_a_bad_request() -> None:
    assert issubclass(PhotoRefused, BadRequest)


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/2010-04-01/Accounts/AC1/Messages/MM1/Media/photo",
        "http://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/photo",
        "https://user:pw@api.twilio.com/photo",
    ],
)
def test_fetch_media_refuses_a_foreign_url_before_any_request(
    url: str, server: MediaServer, session: requests.Session
) -> None:
    refused = _refused(PhotoProblem.FOREIGN_HOST, _fetch, url, session)
    assert server.seen == []
    assert "pw" not in (refused.detail or "")


def test_fetch_media_sends_the_credentials_to_api_twilio_com(
    server: MediaServer, session: requests.Session
) -> None:
    media = _fetch(MEDIA + "?type=Image/JPEG;%20charset=binary", session)
    assert media == FetchedMedia(server.photo, "image/jpeg")
    assert server.seen == [Seen("api.twilio.com", urlsplit(MEDIA).path, BASIC)]


@pytest.mark.parametrize(
    "target",
    [
        CDN.replace("AC1/0685c8ad", "photo"),
        "https://s3-external-1.amazonaws.com/media.twiliocdn.com/AC1/photo?X-Amz-Signature=s",
        "https://photos.example/photo",
    ],
)
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_fetch_media_drops_the_credentials_on_a_redirect_to_another_host(
    target: str, status: int, server: MediaServer, session: requests.Session
) -> None:
    media = _fetch(_redirect(MEDIA, target, status), session)
    assert media.data == server.photo
    first, second = server.seen
    assert (first.host, first.authorization) == ("api.twilio.com", BASIC)
    assert (second.host, second.authorization) == (urlsplit(target).hostname, None)


def test_fetch_media_sends_no_credentials_to_the_cdn_itself(
    server: MediaServer, session: requests.Session
) -> None:
    media = _fetch("https://mms.twiliocdn.com/AC1/photo?Expires=1&Signature=sig", session)
    assert media.data == server.photo
    assert server.seen == [Seen("mms.twiliocdn.com", "/AC1/photo", None)]


def test_fetch_media_sends_none_of_the_sessions_own_credentials_to_another_host(
    server: MediaServer, session: requests.Session
) -> None:
    session.auth = ("someone", "else")
    session.headers["Authorization"] = "Bearer session-wide"
    _fetch(_redirect(MEDIA, "https://mms.twiliocdn.com/photo"), session)
    assert [seen.authorization for seen in server.seen] == [BASIC, None]


def test_fetch_media_keeps_the_credentials_on_a_redirect_within_api_twilio_com(
    server: MediaServer, session: requests.Session
) -> None:
    _fetch(MEDIA.replace("/photo", "/hops?n=1"), session)
    assert [(seen.host, seen.authorization) for seen in server.seen] == [
        ("api.twilio.com", BASIC)
    ] * 3


@pytest.mark.parametrize(
    "target",
    [
        "http://mms.twiliocdn.com/photo",  # plain http, even to Twilio's CDN
        "http://photos.example/photo",
        "https://photos.example:8443/photo",
        "https://user:pw@photos.example/photo",
        "https://10.0.0.7/photo",
        "https://[fd00::1]/photo",
        "https://localhost/photo",
        "http://169.254.169.254/computeMetadata/v1/",
        "ftp://photos.example/photo",
        "file:///etc/passwd",
    ],
)
def test_fetch_media_refuses_a_redirect_to_a_host_it_would_not_fetch_from(
    target: str, server: MediaServer, session: requests.Session
) -> None:
    refused = _refused(PhotoProblem.FOREIGN_HOST, _fetch, _redirect(MEDIA, target), session)
    assert len(server.seen) == 1
    assert "pw" not in (refused.detail or "")


def test_fetch_media_follows_up_to_the_redirect_limit(
    server: MediaServer, session: requests.Session
) -> None:
    media = _fetch(MEDIA.replace("/photo", f"/hops?n={MAX_REDIRECTS - 1}"), session)
    assert media.data == server.photo
    assert len(server.seen) == MAX_REDIRECTS + 1


def test_fetch_media_refuses_a_redirect_past_the_limit(
    server: MediaServer, session: requests.Session
) -> None:
    url = MEDIA.replace("/photo", f"/hops?n={MAX_REDIRECTS}")
    refused = _refused(PhotoProblem.UNREACHABLE, _fetch, url, session)
    assert refused.detail == f"more than {MAX_REDIRECTS} redirects"
    assert len(server.seen) == MAX_REDIRECTS + 1


def test_fetch_media_refuses_a_redirect_without_a_location(session: requests.Session) -> None:
    refused = _refused(
        PhotoProblem.UNREACHABLE, _fetch, MEDIA.replace("photo", "status?code=302"), session
    )
    assert "without a Location" in (refused.detail or "")


@pytest.mark.parametrize("code", [204, 304, 401, 403, 404, 429, 500, 503])
def test_fetch_media_refuses_anything_but_200(code: int, session: requests.Session) -> None:
    refused = _refused(
        PhotoProblem.UNREACHABLE, _fetch, MEDIA.replace("photo", f"status?code={code}"), session
    )
    assert (refused.detail or "").startswith(f"HTTP {code} ")


def test_fetch_media_refuses_a_declared_length_over_the_cap_without_reading_it(
    session: requests.Session,
) -> None:
    started = time.monotonic()
    url = MEDIA.replace("photo", f"endless?length={10**12}")
    refused = _refused(PhotoProblem.TOO_LARGE, _fetch, url, session, max_bytes=1_000_000)
    assert refused.detail == f"Content-Length {10**12} is over 1000000 bytes"
    assert time.monotonic() - started < 2


def test_fetch_media_stops_reading_an_endless_body_at_the_cap(session: requests.Session) -> None:
    started = time.monotonic()
    url = MEDIA.replace("photo", "endless")
    refused = _refused(PhotoProblem.TOO_LARGE, _fetch, url, session, max_bytes=1_000_000)
    assert refused.detail == "body is over 1000000 bytes"
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize(("size", "taken"), [(5000, True), (5001, False)])
def test_fetch_media_takes_exactly_the_cap(
    chunked: bool, size: int, taken: bool, session: requests.Session
) -> None:
    url = MEDIA.replace("photo", f"sized?n={size}" + ("&chunked=1" if chunked else ""))
    if taken:
        assert len(_fetch(url, session, max_bytes=5000).data) == size
    else:
        _refused(PhotoProblem.TOO_LARGE, _fetch, url, session, max_bytes=5000)


def test_fetch_media_times_out_waiting_for_an_answer(session: requests.Session) -> None:
    started = time.monotonic()
    url = MEDIA.replace("photo", "slow?s=2")
    refused = _refused(PhotoProblem.UNREACHABLE, _fetch, url, session, timeout_s=0.3)
    assert refused.message == "the photo took too long to fetch"
    assert time.monotonic() - started < 1.5


def test_fetch_media_times_out_a_server_that_drips_its_body(session: requests.Session) -> None:
    # Every read gets a byte well within the timeout; the whole body would take 10 s.
    started = time.monotonic()
    url = MEDIA.replace("photo", "drip")
    refused = _refused(PhotoProblem.UNREACHABLE, _fetch, url, session, timeout_s=0.5)
    assert refused.message == "the photo took too long to fetch"
    assert time.monotonic() - started < 1.5


def test_fetch_media_refuses_a_host_that_does_not_answer(session: requests.Session) -> None:
    closed = serve_in_thread(MediaServer())
    closed.stop()
    refused = _refused(
        PhotoProblem.UNREACHABLE, _fetch, f"{closed.url}/photo", session, stand_in=closed.url
    )
    assert refused.detail == f"ConnectionError from {closed.url}"


def test_fetch_media_sends_the_credentials_to_the_stand_in(
    server: MediaServer, session: requests.Session
) -> None:
    url = f"{server.url}/2010-04-01/Accounts/AC1/Messages/MM1/Media/hops?n=1"
    assert _fetch(url, session, stand_in=server.url).data == server.photo
    host = urlsplit(server.url).netloc
    assert [(seen.host, seen.authorization) for seen in server.seen] == [(host, BASIC)] * 3


def test_fetch_media_refuses_another_port_than_the_stand_ins(
    server: MediaServer, session: requests.Session
) -> None:
    other = server.url.replace("127.0.0.1", "localhost")
    _refused(PhotoProblem.FOREIGN_HOST, _fetch, f"{other}/photo", session, stand_in=server.url)
    assert server.seen == []


def test_fetched_bytes_that_are_no_image_are_refused_whatever_their_type(
    session: requests.Session,
) -> None:
    media = _fetch(MEDIA.replace("photo", "text"), session)
    assert media.content_type == "image/jpeg"
    _refused(PhotoProblem.NOT_AN_IMAGE, prepare_photo, media.data, media.content_type)


# --- pictures to feed prepare_photo ------------------------------------------------------------


def _jpeg(image: Image.Image, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", **options)
    return out.getvalue()


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    if fmt == "HEIF":
        out = io.BytesIO()
        pillow_heif.from_pillow(image).save(out, quality=90, **options)
        return out.getvalue()
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _halves(size: tuple[int, int] = (200, 100)) -> Image.Image:
    """Left half red, right half blue: where each ends up shows how the picture was turned."""
    image = Image.new("RGB", size, (220, 20, 20))
    image.paste((20, 20, 220), (size[0] // 2, 0, size[0], size[1]))
    return image


def _close(pixel: object, colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))


def _opened(photo_jpeg: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(photo_jpeg))
    assert image.format == "JPEG"
    image.load()
    return image


def _markers_before_the_first_scan(data: bytes) -> list[int]:
    markers, at = [], 2
    while data[at + 1] != 0xDA:
        markers.append(data[at + 1])
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return markers


_APP0, _DQT, _SOF0, _DHT = 0xE0, 0xDB, 0xC0, 0xC4


def _assert_no_metadata(data: bytes) -> None:
    image = _opened(data)
    assert dict(image.getexif()) == {}
    assert set(image.info) <= {"jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi"}
    assert set(_markers_before_the_first_scan(data)) <= {_APP0, _DQT, _SOF0, _DHT}
    for needle in (b"Exif", b"GPS", b"ICC_PROFILE", b"http://ns.adobe.com/xap", b"xmpmeta"):
        assert needle not in data, needle


def _gps_exif(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "Phone"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 22.0, 1.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (4.0, 53.0, 2.0)
    gps[ExifTags.GPS.GPSProcessingMethod] = b"ASCII\x00\x00\x00GPS"
    return exif


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _icc_profile(red: tuple[float, float, float], green: tuple[float, float, float]) -> bytes:
    """A matrix/TRC RGB display profile (ICC v2.1) whose red and green colorants are the
    given D50 XYZ values, blue and the curves (gamma 2.2) those of sRGB."""

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + bytes(4) + _s15(x) + _s15(y) + _s15(z)

    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, 563) + bytes(2)
    tags = [
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(*red)),
        (b"gXYZ", xyz(*green)),
        (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    start = 128 + 4 + 12 * len(tags)
    table, bodies = b"", b""
    for signature, body in tags:
        table += signature + struct.pack(">II", start + len(bodies), len(body))
        bodies += body
    header = (
        struct.pack(">I", start + len(bodies))
        + bytes(4)
        + bytes([2, 0x10, 0, 0])
        + b"mntrRGB XYZ "
        + bytes(12)
        + b"acsp"
        + bytes(28)
        + _s15(0.9642)
        + _s15(1.0)
        + _s15(0.8249)
    ).ljust(128, b"\x00")
    return header + struct.pack(">I", len(tags)) + table + bodies


_SRGB_RED = (0.4361, 0.2225, 0.0139)
_SRGB_GREEN = (0.3851, 0.7169, 0.0971)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + payload))
        return struct.pack(">I", len(payload)) + kind + payload + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00"))
        + chunk(b"IEND", b"")
    )


def _gif_header_only(width: int, height: int) -> bytes:
    """A GIF of one frame of `width` x `height` whose coded data is a few bytes."""
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0) + bytes(6)  # 2-colour palette
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + frame + b"\x3b"


def _scan_bomb(size: tuple[int, int] = (1024, 1024), copies: int = 1000) -> bytes:
    """A progressive JPEG whose last scan is repeated: a few bytes and a full decode each."""
    data = _jpeg(Image.new("RGB", size, (120, 90, 200)), progressive=True, quality=80)
    last_scan = data.rindex(b"\xff\xda")
    return data[:-2] + data[last_scan:-2] * copies + b"\xff\xd9"


# --- preparing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "declared"),
    [
        ("JPEG", "image/jpeg"),
        ("PNG", "image/png"),
        ("WEBP", "image/webp"),
        ("GIF", "image/gif"),
        ("HEIF", "image/heic"),
        ("MPO", "image/jpeg"),
    ],
)
def test_prepare_photo_takes_every_format_we_accept(fmt: str, declared: str) -> None:
    photo = prepare_photo(_encoded(_halves(), fmt), declared)
    assert (photo.width, photo.height) == (200, 100)
    image = _opened(photo.jpeg)
    assert image.size == (200, 100)
    assert _close(image.getpixel((40, 50)), (220, 20, 20))
    assert _close(image.getpixel((160, 50)), (20, 20, 220))


@pytest.mark.parametrize("declared", ["", "application/octet-stream", "image/png", "IMAGE/JPEG"])
def test_prepare_photo_goes_by_the_bytes_when_the_type_says_image_or_nothing(
    declared: str,
) -> None:
    assert prepare_photo(_jpeg(_halves()), declared).width == 200


@pytest.mark.parametrize(
    ("data", "declared"),
    [
        (b"<html>a page, not a photo</html>", "image/jpeg"),
        (b"%PDF-1.7\n", "image/jpeg"),
        (b"", "image/jpeg"),
        (_jpeg(_halves()), "video/mp4"),  # an image, sent as something else
        (_jpeg(_halves()), "text/vcard"),
        (_encoded(_halves(), "TIFF"), "image/tiff"),
        (_encoded(_halves(), "BMP"), "image/bmp"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", "image/avif"),
    ],
)
def test_prepare_photo_refuses_what_is_not_an_image_we_take(data: bytes, declared: str) -> None:
    _refused(PhotoProblem.NOT_AN_IMAGE, prepare_photo, data, declared)


@pytest.mark.parametrize(
    "data",
    [
        _jpeg(_halves())[:300],  # cut short
        b"\xff\xd8\xff\xe0" + bytes(200),
        _png_header_only(64, 64)[:40],
        b"\x89PNG\r\n\x1a\n" + bytes(100),
        b"GIF89a" + bytes(20),
        b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(20),
        b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00heicmif1" + bytes(64),
    ],
)
def test_prepare_photo_refuses_an_image_it_cannot_read(data: bytes) -> None:
    _refused(PhotoProblem.UNREADABLE, prepare_photo, data, "image/jpeg")


def test_prepare_photo_leaves_no_exif_gps_xmp_icc_or_comment() -> None:
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = _jpeg(_halves(), exif=_gps_exif(), xmp=xmp, icc_profile=icc, comment=b"at home")
    with Image.open(io.BytesIO(data)) as original:  # the test's own premise
        assert original.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    assert b"Exif" in data and b"GPS" in data and b"at home" in data

    photo = prepare_photo(data, "image/jpeg")
    _assert_no_metadata(photo.jpeg)
    assert b"at home" not in photo.jpeg
    assert b"Phone" not in photo.jpeg


def test_prepare_photo_leaves_no_metadata_from_a_heic_either() -> None:
    data = _encoded(_halves(), "HEIF", exif=_gps_exif().tobytes())
    photo = prepare_photo(data, "image/heic")
    _assert_no_metadata(photo.jpeg)


# Orientation -> the size the 200x100 picture comes out at, and where its red half ends up.
@pytest.mark.parametrize(
    ("orientation", "size", "red_at"),
    [
        (1, (200, 100), (40, 50)),  # left
        (3, (200, 100), (160, 50)),  # turned 180: right
        (6, (100, 200), (50, 40)),  # turned 90 clockwise to be upright: top
        (8, (100, 200), (50, 160)),  # turned 90 anticlockwise: bottom
    ],
)
def test_prepare_photo_turns_the_photo_upright(
    orientation: int, size: tuple[int, int], red_at: tuple[int, int]
) -> None:
    data = _jpeg(_halves(), exif=_gps_exif(orientation))
    photo = prepare_photo(data, "image/jpeg")
    image = _opened(photo.jpeg)
    assert image.size == (photo.width, photo.height) == size
    assert _close(image.getpixel(red_at), (220, 20, 20))


def test_prepare_photo_converts_a_heic_made_by_pillow_heif() -> None:
    image = Image.linear_gradient("L").resize((2000, 1500)).convert("RGB")
    image.paste((20, 160, 60), (0, 0, 1000, 1500))
    data = _encoded(image, "HEIF")
    assert data[4:12] == b"ftypheic"

    photo = prepare_photo(data, "image/heic")
    assert (photo.width, photo.height) == (1536, 1152)
    converted = _opened(photo.jpeg)
    assert _close(converted.getpixel((300, 500)), (20, 160, 60))


def test_prepare_photo_flattens_transparency_on_white() -> None:
    image = Image.new("RGBA", (100, 100), (0, 0, 0, 0))  # transparent black
    image.paste((200, 0, 0, 255), (0, 0, 50, 100))
    image.paste((200, 0, 0, 128), (50, 0, 100, 50))  # half-transparent red
    photo = prepare_photo(_encoded(image, "PNG"), "image/png")
    flat = _opened(photo.jpeg)
    assert flat.mode == "RGB"
    assert _close(flat.getpixel((25, 50)), (200, 0, 0))
    assert _close(flat.getpixel((75, 25)), (227, 127, 127))
    assert _close(flat.getpixel((75, 75)), (255, 255, 255), tolerance=4)


def test_prepare_photo_flattens_a_transparent_gif_and_takes_its_first_frame() -> None:
    first = Image.new("P", (60, 60), 0)
    first.putpalette([255, 0, 255] + [200, 0, 0] + [0] * (254 * 3))
    first.paste(1, (0, 0, 30, 60))
    second = Image.new("P", (60, 60), 2)
    second.putpalette([0, 0, 0, 0, 0, 0, 0, 0, 220] + [0] * (253 * 3))
    data = _encoded(first, "GIF", save_all=True, append_images=[second], transparency=0)
    with Image.open(io.BytesIO(data)) as gif:  # the test's own premise
        assert isinstance(gif, GifImagePlugin.GifImageFile) and gif.n_frames == 2

    flat = _opened(prepare_photo(data, "image/gif").jpeg)
    assert _close(flat.getpixel((15, 30)), (200, 0, 0))
    assert _close(flat.getpixel((45, 30)), (255, 255, 255), tolerance=4)


@pytest.mark.parametrize(
    ("size", "max_edge", "expected"),
    [
        ((3000, 1000), 1536, (1536, 512)),
        ((1000, 3000), 1536, (512, 1536)),
        ((4032, 3024), 1536, (1536, 1152)),
        ((3000, 1000), 400, (400, 133)),
        ((1536, 1000), 1536, (1536, 1000)),
        ((300, 200), 1536, (300, 200)),  # never scaled up
    ],
)
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_prepare_photo_scales_down_to_the_long_edge_limit(
    size: tuple[int, int], max_edge: int, expected: tuple[int, int], fmt: str
) -> None:
    photo = prepare_photo(_encoded(_halves(size), fmt), "image/jpeg", max_edge=max_edge)
    image = _opened(photo.jpeg)
    assert image.size == (photo.width, photo.height) == expected
    assert _close(image.getpixel((expected[0] // 4, expected[1] // 2)), (220, 20, 20))
    assert _close(image.getpixel((expected[0] * 3 // 4, expected[1] // 2)), (20, 20, 220))


def test_prepare_photo_scales_and_turns_a_portrait_photo() -> None:
    data = _jpeg(_halves((4000, 3000)), exif=_gps_exif(6))
    photo = prepare_photo(data, "image/jpeg")
    assert (photo.width, photo.height) == (1152, 1536)
    assert _close(_opened(photo.jpeg).getpixel((576, 300)), (220, 20, 20))


def test_prepare_photo_converts_the_colours_of_its_profile_to_srgb() -> None:
    # A profile whose red is sRGB's green: red pixels in it are green ones in sRGB.
    swapped = _icc_profile(red=_SRGB_GREEN, green=_SRGB_RED)
    data = _encoded(Image.new("RGB", (64, 64), (255, 0, 0)), "PNG", icc_profile=swapped)
    photo = prepare_photo(data, "image/png")
    image = _opened(photo.jpeg)
    assert _close(image.getpixel((32, 32)), (0, 255, 0))
    assert "icc_profile" not in image.info


@pytest.mark.parametrize(
    "icc", [b"not a profile at all", _icc_profile(_SRGB_RED, _SRGB_GREEN)[:140]]
)
def test_prepare_photo_ignores_a_profile_that_does_not_parse(icc: bytes) -> None:
    data = _encoded(Image.new("RGB", (64, 64), (255, 0, 0)), "PNG", icc_profile=icc)
    image = _opened(prepare_photo(data, "image/png").jpeg)
    assert _close(image.getpixel((32, 32)), (255, 0, 0))


@pytest.mark.parametrize(
    "data",
    [
        _png_header_only(60_000, 60_000),  # past Pillow's own limit
        _png_header_only(6000, 5000),  # past ours, within Pillow's
        _png_header_only(20_000, 100),  # an edge longer than MAX_PHOTO_EDGE
        _gif_header_only(65_535, 65_535),
    ],
)
def test_prepare_photo_refuses_a_decompression_bomb_before_decoding(data: bytes) -> None:
    assert MAX_PHOTO_PIXELS < 6000 * 5000
    started = time.monotonic()
    _refused(PhotoProblem.TOO_LARGE, prepare_photo, data, "image/png")
    assert time.monotonic() - started < 0.5


def test_prepare_photo_refuses_more_pixels_than_asked() -> None:
    data = _jpeg(_halves((100, 100)))
    _refused(PhotoProblem.TOO_LARGE, prepare_photo, data, "image/jpeg", max_pixels=9_999)
    assert prepare_photo(data, "image/jpeg", max_pixels=10_000).width == 100


def test_prepare_photo_refuses_a_progressive_scan_bomb_before_decoding() -> None:
    started = time.monotonic()
    refused = _refused(PhotoProblem.UNREADABLE, prepare_photo, _scan_bomb(), "image/jpeg")
    assert refused.detail is not None and "scans" in refused.detail
    assert time.monotonic() - started < 0.5


def test_prepare_photo_is_safe_from_many_threads_at_once() -> None:
    heic, jpeg = _encoded(_halves(), "HEIF"), _jpeg(_halves())
    sizes: list[tuple[int, int]] = []

    def prepare(data: bytes) -> None:
        photo = prepare_photo(data, "image/heic")
        sizes.append((photo.width, photo.height))

    threads = [threading.Thread(target=prepare, args=(heic if n % 2 else jpeg,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sizes == [(200, 100)] * 8


_LAZY = """
import io, sys
import shared.photos as photos
assert "PIL" not in sys.modules, "importing shared.photos loaded Pillow"

photos.prepare_photo(bytes.fromhex(sys.argv[1]), "image/jpeg")
assert "pillow_heif" not in sys.modules, "a JPEG loaded pillow-heif"

import pillow_heif
from PIL import Image
registered = []
real = pillow_heif.register_heif_opener
pillow_heif.register_heif_opener = lambda **options: (registered.append(options), real(**options))
out = io.BytesIO()
pillow_heif.from_pillow(Image.new("RGB", (32, 32), "red")).save(out)
for _ in range(3):
    photos.prepare_photo(out.getvalue(), "image/heic")
assert len(registered) == 1, registered
print("lazy")
"""


def test_shared_photos_loads_pillow_and_pillow_heif_only_when_needed() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _LAZY, _jpeg(_halves()).hex()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "lazy"
