"""The Secret Manager stand-in, driven by Google's real client over REST."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import secretmanager

from devstack.secretmanager import SecretManagerConfig, crc32c, create_app
from devstack.serving import RunningServer, serve_in_thread

PROJECT = "devstack-project"


# One server for the module: stopping one costs ~0.5 s (werkzeug's shutdown poll interval).
# Tests that add versions use secret names of their own so they cannot disturb the others.
@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    config = SecretManagerConfig(
        project=PROJECT,
        secrets={
            "twilio-auth-token": "value",
            "check": "123456789",
            "unicode": "clé ✓",
            "rotating": "value",
            "logged": "value",
        },
    )
    running = serve_in_thread(create_app(config))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: RunningServer) -> secretmanager.SecretManagerServiceClient:
    return secretmanager.SecretManagerServiceClient(
        transport="rest",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": server.url},
    )


def _name(secret: str, version: str = "latest", project: str = PROJECT) -> str:
    return f"projects/{project}/secrets/{secret}/versions/{version}"


def test_latest_version_with_real_client(client):
    resp = client.access_secret_version(name=_name("twilio-auth-token"))
    assert resp.payload.data == b"value"
    assert resp.name == _name("twilio-auth-token", "1")


def test_crc32c_matches_the_published_check_value(client):
    # 0xE3069283 is the CRC-32C check value of "123456789" (RFC 3720, appendix B.4).
    assert crc32c(b"123456789") == 0xE3069283
    resp = client.access_secret_version(name=_name("check"))
    assert resp.payload.data_crc32c == 0xE3069283


def test_client_side_crc_check_passes_for_every_payload(client):
    # The client library does not verify the checksum itself; Google's samples do it like this.
    for secret in ("twilio-auth-token", "check", "unicode"):
        resp = client.access_secret_version(name=_name(secret))
        assert resp.payload.data_crc32c == crc32c(resp.payload.data)
    assert client.access_secret_version(name=_name("unicode")).payload.data.decode() == "clé ✓"


def test_new_version_moves_latest_and_numbered_versions_stay(client, server):
    added = requests.post(
        f"{server.url}/__dev/secrets", json={"name": "rotating", "value": "rotated"}
    )
    assert added.status_code == 201
    assert added.json() == {"name": _name("rotating", "2"), "version": 2}

    latest = client.access_secret_version(name=_name("rotating"))
    assert (latest.payload.data, latest.name) == (b"rotated", _name("rotating", "2"))
    assert client.access_secret_version(name=_name("rotating", "1")).payload.data == b"value"
    assert client.access_secret_version(name=_name("rotating", "2")).payload.data == b"rotated"


def test_dev_endpoint_can_create_a_secret(client, server):
    requests.post(f"{server.url}/__dev/secrets", json={"name": "fresh", "value": "v1"})
    assert client.access_secret_version(name=_name("fresh")).payload.data == b"v1"


def test_regional_path(client):
    name = f"projects/{PROJECT}/locations/us-central1/secrets/check/versions/latest"
    resp = client.access_secret_version(name=name)
    assert resp.payload.data == b"123456789"
    assert resp.name == f"projects/{PROJECT}/locations/us-central1/secrets/check/versions/1"


def test_unknown_secret_raises_not_found(client):
    with pytest.raises(gexc.NotFound) as info:
        client.access_secret_version(name=_name("nope"))
    assert f"Secret [projects/{PROJECT}/secrets/nope] not found or has no versions." in str(
        info.value
    )


def test_unknown_version_raises_not_found(client):
    with pytest.raises(gexc.NotFound):
        client.access_secret_version(name=_name("check", "7"))


def test_wrong_project_is_a_403(client, server):
    # Over REST, google-api-core maps any 403 to `Forbidden` (by HTTP status); `PermissionDenied`
    # is a subclass that only the gRPC transport raises. Catch `Forbidden` to handle both.
    with pytest.raises(gexc.Forbidden) as info:
        client.access_secret_version(name=_name("check", project="someone-else"))
    assert "secretmanager.versions.access" in str(info.value)
    raw = requests.get(f"{server.url}/v1/{_name('check', project='someone-else')}:access")
    assert raw.status_code == 403
    assert raw.json()["error"]["status"] == "PERMISSION_DENIED"


def test_error_shape_over_plain_http(server):
    resp = requests.get(f"{server.url}/v1/{_name('nope')}:access")
    assert resp.status_code == 404
    assert resp.json()["error"]["status"] == "NOT_FOUND"
    assert resp.json()["error"]["code"] == 404
    bad = requests.get(f"{server.url}/v1/{_name('check', 'first')}:access")
    assert bad.status_code == 400
    assert bad.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_access_log_names_but_never_values(client, server):
    client.access_secret_version(name=_name("logged"))
    with pytest.raises(gexc.NotFound):
        client.access_secret_version(name=_name("logged-missing"))
    resp = requests.get(f"{server.url}/__dev/access-log")
    mine = [e for e in resp.json() if "/secrets/logged" in e["name"]]
    assert [(e["name"], e["resolved"], e["status"]) for e in mine] == [
        (_name("logged"), _name("logged", "1"), 200),
        (_name("logged-missing"), None, 404),
    ]
    assert all(isinstance(e["time"], float) for e in mine)
    assert "value" not in resp.text  # the payload (the string "value") never appears
    assert "dmFsdWU=" not in resp.text  # nor its base64


def test_dev_endpoint_rejects_bad_input(server):
    url = f"{server.url}/__dev/secrets"
    assert requests.post(url, json={"name": "a/b", "value": "x"}).status_code == 400
    assert requests.post(url, json={"name": "ok", "value": 3}).status_code == 400
    assert requests.post(url, data="not json").status_code == 400
