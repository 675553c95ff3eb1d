"""The Twilio stand-in's incoming phone numbers and Messaging Services APIs.

* Incoming phone numbers (``/2010-04-01/Accounts/<AC…>/IncomingPhoneNumbers``): list (with the
  ``PhoneNumber``/``FriendlyName`` filters), fetch and update of the numbers in
  ``TwilioConfig.phone_numbers``. This is how ``./deploy.sh studio`` points a number's voice and
  messaging webhooks at a Studio flow, and where ``/__dev/incoming`` finds a number's webhook.
* Messaging Services (``messaging.twilio.com/v1/Services``): fetch a service and list its sender
  pool (``/v1/Services/<MG…>/PhoneNumbers``), read-only, for ``deploy.sh doctor``. The pools
  themselves come from ``TwilioConfig.messaging_services``.

Chosen where Twilio's behaviour was not pinned down (see the project's Twilio notes):

* SIDs are derived from account and number, so they survive restarts and resets; reset restores
  the start state (empty URLs).
* A bad URL is 21402, a bad method 21403 (the codes Twilio documents for number configuration).
* ``PhoneNumber`` matches a part of the number with ``*`` for any digit; ``FriendlyName``
  matches exactly.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import flask
from werkzeug.datastructures import MultiDict

from devstack.twilio_api import (
    API_VERSION,
    E164,
    ApiError,
    account_path,
    envelope_2010,
    envelope_v2,
    is_http_url,
    iso8601,
    json_response,
    not_found,
    parse_paging,
    rfc2822,
    strip_json,
    utc_now,
)

__all__ = ["MESSAGING_BASE_URL", "MessagingServices", "NumberRecord", "NumberStore", "init_app"]

log = logging.getLogger(__name__)

MESSAGING_BASE_URL = "https://messaging.twilio.com"

# Writable fields of a number: form parameter -> (JSON field, kind of value).
_NUMBER_PARAMS: dict[str, tuple[str, str]] = {
    "FriendlyName": ("friendly_name", "text"),
    "ApiVersion": ("api_version", "text"),
    "VoiceUrl": ("voice_url", "url"),
    "VoiceMethod": ("voice_method", "method"),
    "VoiceFallbackUrl": ("voice_fallback_url", "url"),
    "VoiceFallbackMethod": ("voice_fallback_method", "method"),
    "VoiceApplicationSid": ("voice_application_sid", "text"),
    "VoiceCallerIdLookup": ("voice_caller_id_lookup", "bool"),
    "VoiceReceiveMode": ("voice_receive_mode", "text"),
    "SmsUrl": ("sms_url", "url"),
    "SmsMethod": ("sms_method", "method"),
    "SmsFallbackUrl": ("sms_fallback_url", "url"),
    "SmsFallbackMethod": ("sms_fallback_method", "method"),
    "SmsApplicationSid": ("sms_application_sid", "text"),
    "StatusCallback": ("status_callback", "url"),
    "StatusCallbackMethod": ("status_callback_method", "method"),
    "TrunkSid": ("trunk_sid", "text"),
    "IdentitySid": ("identity_sid", "text"),
    "AddressSid": ("address_sid", "text"),
    "BundleSid": ("bundle_sid", "text"),
    "EmergencyStatus": ("emergency_status", "text"),
    "EmergencyAddressSid": ("emergency_address_sid", "text"),
}
# A number as bought: no webhooks, Twilio's default methods.
_NUMBER_DEFAULTS: dict[str, Any] = {
    "api_version": API_VERSION,
    "voice_url": "",
    "voice_method": "POST",
    "voice_fallback_url": "",
    "voice_fallback_method": "POST",
    "voice_application_sid": "",
    "voice_caller_id_lookup": False,
    "voice_receive_mode": "voice",
    "sms_url": "",
    "sms_method": "POST",
    "sms_fallback_url": "",
    "sms_fallback_method": "POST",
    "sms_application_sid": "",
    "status_callback": "",
    "status_callback_method": "POST",
    "trunk_sid": None,
    "identity_sid": None,
    "address_sid": None,
    "bundle_sid": None,
    "emergency_status": "Inactive",
    "emergency_address_sid": None,
}


@dataclass
class NumberRecord:
    sid: str
    phone_number: str
    settings: dict[str, Any]  # the writable resource fields, keyed by their JSON names
    date_created: datetime
    date_updated: datetime


# --------------------------------------------------------------------------------------------
# Incoming phone numbers: checks of an update and JSON shape
# --------------------------------------------------------------------------------------------


def _number_sid(account_sid: str, phone_number: str) -> str:
    # Derived, not random: a SID noted once keeps working across stand-in restarts and resets.
    return "PN" + hashlib.sha256(f"{account_sid}:{phone_number}".encode()).hexdigest()[:32]


def _display_number(phone_number: str) -> str:
    """Twilio's default friendly name: ``(500) 555-0006`` for a +1 number, else as given."""
    digits = phone_number.removeprefix("+1")
    if phone_number.startswith("+1") and len(digits) == 10:
        return f"({digits[:3]}) {digits[3:6]}-{digits[6:]}"
    return phone_number


def new_number(account_sid: str, phone_number: str, now: datetime) -> NumberRecord:
    if E164.fullmatch(phone_number) is None:
        raise ValueError(f"TwilioConfig.phone_numbers: {phone_number!r} is not E.164")
    settings = {**_NUMBER_DEFAULTS, "friendly_name": _display_number(phone_number)}
    return NumberRecord(_number_sid(account_sid, phone_number), phone_number, settings, now, now)


def _number_value(param: str, kind: str, raw: str) -> Any:
    if kind == "url" and raw and not is_http_url(raw):  # "" clears a URL
        raise ApiError(21402, f"{param} is not a valid URL: {raw}")
    if kind == "method":
        if raw.upper() not in ("GET", "POST"):
            raise ApiError(21403, f"{param} must be GET or POST, not {raw!r}")
        return raw.upper()
    if kind == "bool":
        if raw.lower() not in ("true", "false"):
            raise ApiError(20001, f"Invalid {param}: {raw}")
        return raw.lower() == "true"
    return raw


def parse_number_update(form: MultiDict[str, str], account_sid: str) -> dict[str, Any]:
    """The fields an update sets, all checked before any is applied; unknown parameters are
    ignored, as Twilio does."""
    # AccountSid on update moves the number to another (sub)account; the stand-in has one.
    if form.get("AccountSid", account_sid) != account_sid:
        raise ApiError(20001, "Numbers cannot move to another account in the stand-in")
    return {
        field: _number_value(param, kind, form[param])
        for param, (field, kind) in _NUMBER_PARAMS.items()
        if param in form
    }


def number_matches(
    record: NumberRecord, phone_number: str | None, friendly_name: str | None, origin: str | None
) -> bool:
    """The list filters: ``PhoneNumber`` is any part of the number, ``*`` standing for a digit."""
    if phone_number is not None:
        pattern = re.escape(phone_number).replace(r"\*", r"\d")
        if re.search(pattern, record.phone_number) is None:
            return False
    if friendly_name is not None and record.settings["friendly_name"] != friendly_name:
        return False
    return origin is None or origin == "twilio"  # all the stand-in's numbers are Twilio's own


def number_resource(record: NumberRecord, account_sid: str) -> dict[str, Any]:
    """The IncomingPhoneNumberInstance JSON Twilio answers with."""
    uri = f"{account_path(account_sid)}/IncomingPhoneNumbers/{record.sid}"
    return {
        "account_sid": account_sid,
        "address_requirements": "none",
        "beta": False,
        "capabilities": {"voice": True, "sms": True, "mms": True, "fax": False},
        "date_created": rfc2822(record.date_created),
        "date_updated": rfc2822(record.date_updated),
        "emergency_address_status": "unregistered",
        "origin": "twilio",
        "phone_number": record.phone_number,
        "sid": record.sid,
        "status": "in-use",
        "subresource_uris": {"assigned_add_ons": f"{uri}/AssignedAddOns.json"},
        "type": "local",
        "uri": f"{uri}.json",
        **record.settings,
    }


# --------------------------------------------------------------------------------------------
# Messaging Services: JSON shapes
# --------------------------------------------------------------------------------------------


def service_resource(sid: str, account_sid: str, created: datetime) -> dict[str, Any]:
    """The Messaging Service JSON (``GET /v1/Services/<sid>``) [DOC messaging/api/service-resource;
    SDK messaging/v1/service/__init__.py]: the fields the SDK reads, with Twilio's defaults for
    a service made in the Console. Values of `usecase` other than "undeclared" are [UNCONFIRMED]."""
    url = f"{MESSAGING_BASE_URL}/v1/Services/{sid}"
    return {
        "account_sid": account_sid,
        "sid": sid,
        "friendly_name": "Picture Line senders",
        "date_created": iso8601(created),
        "date_updated": iso8601(created),
        "inbound_request_url": None,
        "inbound_method": "POST",
        "fallback_url": None,
        "fallback_method": "POST",
        "status_callback": None,
        "sticky_sender": True,
        "mms_converter": True,
        "smart_encoding": True,
        "scan_message_content": "inherit",
        "fallback_to_long_code": True,
        "area_code_geomatch": True,
        "synchronous_validation": False,
        "validity_period": 14400,
        "url": url,
        "links": {
            "phone_numbers": f"{url}/PhoneNumbers",
            "short_codes": f"{url}/ShortCodes",
            "alpha_senders": f"{url}/AlphaSenders",
        },
        "usecase": "undeclared",
        "us_app_to_person_registered": False,
        "use_inbound_webhook_on_number": True,
    }


def service_number_resource(
    service_sid: str, account_sid: str, phone_number: str, created: datetime
) -> dict[str, Any]:
    """One sender of a Messaging Service (``/v1/Services/<sid>/PhoneNumbers``) [DOC
    messaging/api/phonenumber-resource]. Its SID is the incoming number's PN SID (a number is
    added to a service by that SID) [DOC]; `capabilities` is a list of strings [SDK], whose exact
    values are [UNCONFIRMED]."""
    sid = _number_sid(account_sid, phone_number)
    return {
        "sid": sid,
        "account_sid": account_sid,
        "service_sid": service_sid,
        "date_created": iso8601(created),
        "date_updated": iso8601(created),
        "phone_number": phone_number,
        "country_code": "US" if phone_number.startswith("+1") else None,
        "capabilities": ["SMS", "MMS", "Voice"],
        "url": f"{MESSAGING_BASE_URL}/v1/Services/{service_sid}/PhoneNumbers/{sid}",
    }


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


class NumberStore:
    """The account's incoming phone numbers: those of ``TwilioConfig.phone_numbers``."""

    def __init__(self, account_sid: str, phone_numbers: Iterable[str]) -> None:
        self.account_sid = account_sid
        self._phone_numbers = tuple(phone_numbers)
        self._lock = threading.Lock()
        self._numbers: dict[str, NumberRecord] = {}
        self.reset()

    def reset(self) -> None:
        """Back to the numbers as configured, with no webhooks; ValueError for one not E.164."""
        now = utc_now()
        fresh = [new_number(self.account_sid, number, now) for number in self._phone_numbers]
        with self._lock:
            self._numbers = {record.sid: record for record in fresh}

    def get(self, sid: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._numbers.get(sid)
            return number_resource(record, self.account_sid) if record else None

    def settings_of(self, phone_number: str) -> dict[str, Any] | None:
        """The current webhook settings of one of the account's numbers (a copy)."""
        with self._lock:
            found = (r for r in self._numbers.values() if r.phone_number == phone_number)
            record = next(found, None)
            return dict(record.settings) if record else None

    def update(self, sid: str, settings: dict[str, Any]) -> dict[str, Any] | None:
        with self._lock:
            record = self._numbers.get(sid)
            if record is None:
                return None
            record.settings.update(settings)
            record.date_updated = utc_now()
            log.info("updated number %s: %s", record.phone_number, sorted(settings))
            return number_resource(record, self.account_sid)

    def listed(
        self,
        phone_number: str | None = None,
        friendly_name: str | None = None,
        origin: str | None = None,
    ) -> list[dict[str, Any]]:
        with self._lock:
            return [
                number_resource(record, self.account_sid)
                for record in self._numbers.values()
                if number_matches(record, phone_number, friendly_name, origin)
            ]


@dataclass(frozen=True)
class MessagingServices:
    """The account's Messaging Services, fixed for the stand-in's life: SID -> sender pool."""

    account_sid: str
    pools: Mapping[str, tuple[str, ...]]
    created: datetime


# --------------------------------------------------------------------------------------------
# HTTP (credentials are checked by the app, see devstack.twilio)
# --------------------------------------------------------------------------------------------

api = flask.Blueprint(
    "twilio_numbers", __name__, url_prefix=f"/{API_VERSION}/Accounts/<account_sid>"
)
# messaging.twilio.com: LocalTwilioHttpClient keeps only the path, so it shares the server.
messaging = flask.Blueprint("twilio_messaging", __name__, url_prefix="/v1")
_NUMBERS = "twilio.numbers"
_SERVICES = "twilio.messaging_services"


def init_app(app: flask.Flask, numbers: NumberStore, services: MessagingServices) -> None:
    """Serve the incoming numbers and Messaging Services APIs from `app`, on these."""
    app.extensions[_NUMBERS] = numbers
    app.extensions[_SERVICES] = services
    app.register_blueprint(api)
    app.register_blueprint(messaging)


def _numbers() -> NumberStore:
    numbers: NumberStore = flask.current_app.extensions[_NUMBERS]
    return numbers


def _services() -> MessagingServices:
    services: MessagingServices = flask.current_app.extensions[_SERVICES]
    return services


@api.get("/IncomingPhoneNumbers.json")
def list_numbers(account_sid: str) -> flask.Response:
    args = flask.request.args
    query = parse_paging(args, ("PhoneNumber", "FriendlyName", "Origin", "Beta"))
    numbers = _numbers().listed(
        args.get("PhoneNumber"), args.get("FriendlyName"), args.get("Origin")
    )
    return json_response(
        envelope_2010("incoming_phone_numbers", numbers, query, flask.request.path)
    )


@api.get("/IncomingPhoneNumbers/<name>")
def fetch_number(account_sid: str, name: str) -> flask.Response:
    resource = _numbers().get(strip_json(name))
    if resource is None:
        raise not_found()
    return json_response(resource)


@api.post("/IncomingPhoneNumbers/<name>")
def update_number(account_sid: str, name: str) -> flask.Response:
    numbers = _numbers()
    sid = strip_json(name)
    if numbers.get(sid) is None:  # an unknown number is 404 whatever the form holds
        raise not_found()
    resource = numbers.update(sid, parse_number_update(flask.request.form, account_sid))
    if resource is None:
        raise not_found()
    return json_response(resource)


def _service_pool(sid: str) -> tuple[str, ...]:
    pool = _services().pools.get(sid)
    if pool is None:
        raise not_found()
    return pool


@messaging.get("/Services/<sid>")
def fetch_service(sid: str) -> flask.Response:
    services = _services()
    _service_pool(sid)
    return json_response(service_resource(sid, services.account_sid, services.created))


@messaging.get("/Services/<sid>/PhoneNumbers")
def list_service_numbers(sid: str) -> flask.Response:
    services = _services()
    numbers = [
        service_number_resource(sid, services.account_sid, number, services.created)
        for number in _service_pool(sid)
    ]
    url = f"{MESSAGING_BASE_URL}/v1/Services/{sid}/PhoneNumbers"
    return json_response(
        envelope_v2("phone_numbers", numbers, parse_paging(flask.request.args), url)
    )
