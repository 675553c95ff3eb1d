"""A client for a running local stack (`devstack.stack.Stack`): its functions over HTTP, its
stand-ins through their /__dev/ endpoints, its database with SQL.

`StackClient` holds the connection; the functions beside it are the steps tests take on the
stack (record a request without `generate`, age it, run the sweep, post a signed callback or a
signed Twilio form), built on `devstack.vendor_calls`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
import requests
from psycopg.rows import dict_row

from shared.callbacks import SWEEP_BODY
from shared.endpoints import generation_callback_url
from shared.records import reference_for
from shared.replies import picture_caption

from . import openai_images, qstash, stack, supabase, twilio
from .call import send_text
from .qstash import DEV_CURRENT_SIGNING_KEY
from .stack import Stack
from .vendor_calls import DEFAULT_PROMPT, incoming_text, post_as_qstash, post_as_twilio, reply_text

__all__ = [
    "StackClient",
    "acknowledged",
    "age",
    "configured_secrets",
    "count_rows",
    "latest_request",
    "pictures_to",
    "post_callback",
    "queued_row",
    "run_sweep",
    "signed_post",
    "text_in",
]


@dataclass
class StackClient:
    """Talks to the in-process stack over HTTP and reads the database with SQL."""

    stack: Stack
    env: dict[str, str]
    http: requests.Session

    def submit(self, prompt: str, to: str) -> requests.Response:
        return self.stack.request_picture(prompt, to=to)

    def row(self, request_id: str) -> dict[str, Any]:
        with psycopg.connect(self.env["DATABASE_URL"], row_factory=dict_row) as conn:
            found = conn.execute(
                "select * from public.requests where id = %s", (request_id,)
            ).fetchone()
        assert found is not None, f"no row for {request_id}"
        return dict(found)

    def sql(self, query: str, *params: Any) -> list[dict[str, Any]]:
        with psycopg.connect(
            self.env["DATABASE_URL"], row_factory=dict_row, autocommit=True
        ) as conn:
            cursor = conn.execute(query, params)
            return [dict(r) for r in cursor.fetchall()] if cursor.description else []

    def wait_finished(self, request_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            row = self.row(request_id)
            if row["status"] in ("delivered", "failed"):
                self.stack.wait_idle(10)
                return self.row(request_id)
            time.sleep(0.05)
        raise AssertionError(f"request {request_id} still {self.row(request_id)['status']}")

    def half_sent(self, request_id: str, to: str) -> str:
        """Leave a request as a run that died right after Twilio took its MMS: marked
        `sending`, and a message with its ref at Twilio. Returns that message's SID."""
        self.sql(
            "update public.requests set status = 'sending', send_started_at = now(),"
            " image_path = 'x/' || media_token || '.jpg' where id = %s",
            request_id,
        )
        sid = self.env["TWILIO_ACCOUNT_SID"]
        row = self.row(request_id)
        caption = picture_caption(row["prompt"], reference_for(request_id), row["language"])
        message = self.http.post(
            f"{self.env['TWILIO_API_BASE_URL']}/2010-04-01/Accounts/{sid}/Messages.json",
            data={"To": to, "From": self.env["DEMO_FROM"], "Body": caption},
            auth=(sid, self.env["TWILIO_AUTH_TOKEN"]),
            timeout=5,
        ).json()
        return str(message["sid"])

    def messages_to(self, number: str) -> list[dict[str, Any]]:
        return [m for m in self.stack.outbox() if m.get("to") == number]

    def generations(self, prompt: str) -> list[dict[str, Any]]:
        """The OpenAI stand-in's log of generation requests whose prompt holds `prompt`."""
        base = self.env["OPENAI_BASE_URL"].removesuffix("/v1")
        log = self.http.get(f"{base}/__dev/requests", timeout=5).json()
        return [e for e in log if prompt in str((e.get("json") or {}).get("prompt", ""))]

    def qstash_messages(self) -> list[dict[str, Any]]:
        return self.stack.qstash_messages()

    def fault(self, target: str, **fault: Any) -> None:
        base = {
            "openai": self.env["OPENAI_BASE_URL"].removesuffix("/v1"),
            "twilio": self.env["TWILIO_API_BASE_URL"],
            "supabase": self.env["SUPABASE_URL"],
        }[target]
        response = self.http.post(f"{base}/__dev/faults", json=fault, timeout=5)
        assert response.status_code < 300, response.text

    def clear_faults(self) -> None:
        for base in (
            self.env["OPENAI_BASE_URL"].removesuffix("/v1"),
            self.env["TWILIO_API_BASE_URL"],
            self.env["SUPABASE_URL"],
        ):
            self.http.delete(f"{base}/__dev/faults", timeout=5)
        self.qstash_config(duplicate_deliveries=1)

    def qstash_config(self, **config: Any) -> None:
        response = self.http.post(f"{self.env['QSTASH_URL']}/__dev/config", json=config, timeout=5)
        assert response.status_code < 300, response.text


def configured_secrets() -> dict[str, str]:
    """Every secret the local stack configures, and the header QStash forwards to OpenAI."""
    return {
        "OPENAI_API_KEY": openai_images.DEV_API_KEY,
        "QSTASH_TOKEN": qstash.DEV_TOKEN,
        "QSTASH_CURRENT_SIGNING_KEY": qstash.DEV_CURRENT_SIGNING_KEY,
        "QSTASH_NEXT_SIGNING_KEY": qstash.DEV_NEXT_SIGNING_KEY,
        "SUPABASE_SECRET_KEY": supabase.DEV_SECRET_KEY,
        "TWILIO_AUTH_TOKEN": twilio.DEV_AUTH_TOKEN,
        "OPERATOR_KEY": stack.OPERATOR_KEY,
        "SAFETY_IDENTIFIER_SALT": stack.SAFETY_SALT,
        "STUDIO_FLOW_KEY": stack.STUDIO_FLOW_KEY,
    }


# --- the database ------------------------------------------------------------------------------


def queued_row(client: StackClient, to: str, prompt: str = DEFAULT_PROMPT) -> str:
    """A request as `generate` records it, without publishing (we play QStash ourselves)."""
    rows = client.sql(
        "insert into public.requests (recipient, sender, prompt, model, size, quality)"
        " values (%s, %s, %s, 'gpt-image-2.6-flare', '1024x1024', 'low') returning id",
        to,
        client.env["DEMO_FROM"],
        prompt,
    )
    return str(rows[0]["id"])


def count_rows(client: StackClient) -> int:
    """How many requests are recorded, for anyone."""
    return int(client.sql("select count(*) as n from public.requests")[0]["n"])


def latest_request(client: StackClient, recipient: str) -> dict[str, Any] | None:
    """The request recorded last for `recipient`, if any."""
    rows = client.sql(
        "select * from public.requests where recipient = %s order by created_at desc limit 1",
        recipient,
    )
    return rows[0] if rows else None


def age(client: StackClient, request_id: str, minutes: int) -> None:
    """Make a request look `minutes` older than it is."""
    client.sql(
        "update public.requests set created_at = now() - make_interval(mins => %s) where id = %s",
        minutes,
        request_id,
    )


# --- QStash's part, played by us -----------------------------------------------------------------


def post_callback(
    client: StackClient,
    request_id: str,
    payload: dict[str, Any],
    *,
    message_id: str = "msg_callback",
    key: str = DEV_CURRENT_SIGNING_KEY,
    signed_url: str | None = None,
    signature: str | None = None,
) -> requests.Response:
    """POST a callback for `request_id` to composite as QStash does (see `qstash_headers`)."""
    return post_as_qstash(
        generation_callback_url(client.env["COMPOSITE_URL"], request_id),
        json.dumps(payload).encode(),
        message_id=message_id,
        key=key,
        signed_url=signed_url,
        signature=signature,
        timeout=30,
    )


def run_sweep(client: StackClient) -> dict[str, int]:
    """Run the sweep the way the QStash schedule does: a signed POST of the sweep body."""
    response = post_as_qstash(
        client.env["COMPOSITE_URL"], json.dumps(SWEEP_BODY).encode(), timeout=60
    )
    assert response.status_code == 200, response.text
    client.stack.wait_idle(10)
    return dict(response.json())


# --- Twilio's part -------------------------------------------------------------------------------


def signed_post(
    client: StackClient,
    params: Mapping[str, str],
    *,
    url: str | None = None,
    token: str | None = None,
    timeout: float = 10,
) -> requests.Response:
    """POST a form to generate the way Twilio does, signed for `url` (default: GENERATE_URL)."""
    return post_as_twilio(
        client.env["GENERATE_URL"],
        params,
        auth_token=token or client.env["TWILIO_AUTH_TOKEN"],
        signed_url=url,
        timeout=timeout,
    )


def text_in(client: StackClient, caller: str, body: str, channel: str) -> None:
    """A person texts our number, through the incoming-message webhook (the stand-in sends it
    and turns the TwiML answer into a Message) or through the Studio flow."""
    if channel == "studio":
        send_text(client.env, body, sender=caller)
        return
    answer = requests.post(
        f"{client.env['TWILIO_API_BASE_URL']}/__dev/incoming",
        json={
            "from": caller,
            "to": client.env["DEMO_FROM"],
            "body": body,
            "url": client.env["GENERATE_URL"],
        },
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["webhook_status"] == 200


def acknowledged(client: StackClient, caller: str) -> dict[str, Any]:
    """The one message `caller` has: the acknowledgement of a texted request, no picture."""
    [ack] = client.messages_to(caller)
    assert "on its way" in ack["body"] and not ack["media"]
    return ack


def pictures_to(client: StackClient, caller: str) -> list[dict[str, Any]]:
    """The messages with a picture that `caller` got."""
    return [m for m in client.messages_to(caller) if m["media"]]


def text_reply(client: StackClient, caller: str, body: str, **form: str) -> str:
    """`caller` texts our number through the signed webhook; the TwiML `generate` answered."""
    return reply_text(signed_post(client, incoming_text(caller, body, **form)))


def drawn(client: StackClient, caller: str, prompt: str) -> dict[str, Any]:
    """`caller` texts DRAW `prompt`; the request's row once it has been delivered."""
    assert "on its way" in text_reply(client, caller, f"DRAW {prompt}")
    row = latest_request(client, caller)
    assert row is not None
    done = client.wait_finished(str(row["id"]))
    assert done["status"] == "delivered", done
    return done
