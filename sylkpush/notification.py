"""The v1 wake-up request: its fields, aliases and validation rules (docs/api.md).

:func:`parse_notification` turns the decoded JSON object into an immutable
:class:`Notification` or raises :class:`ValidationError` naming the field and
the rule it broke.  It knows nothing of configured applications except the
``app_type`` passed in (for the Linphone event rule).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, Optional, overload

PLATFORM_ALIASES = {
    "apple": "apple", "ios": "apple", "apns": "apple",
    "firebase": "firebase", "android": "firebase", "fcm": "firebase",
}
EVENT_ALIASES = {"incoming_conference": "incoming_conference_request"}
EVENTS = ("incoming_session", "incoming_conference_request", "cancel", "message", "transfer")
VOIP_EVENTS = frozenset(("incoming_session", "incoming_conference_request"))
MEDIA_TYPES = ("audio", "video", "chat", "sms", "file-transfer", "image")
#: media types whose requests are calls: they get the short deadline
CALL_MEDIA = frozenset(("audio", "video"))
#: the largest badge: APNs and iOS keep it in a 32-bit signed integer
BADGE_MAX = 2**31 - 1
TRUE_VALUES = (True, 1, "1", "true", "True", "TRUE")
FALSE_VALUES = (False, 0, "0", "false", "False", "FALSE")
#: what no field may hold: control characters (a CR/LF in a logged field would
#: forge log lines) and lone surrogates (they cannot be encoded for the push
#: service, nor written to a log file)
UNSAFE_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
#: the same for a message body (``content``), which may span lines
UNSAFE_IN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
#: fields that are free text, where tabs and line breaks are the writer's
MULTILINE_FIELDS = frozenset(("content",))
UNSAFE_RULE = "must not contain control characters or lone surrogates"


class ValidationError(ValueError):
    """A field of the request is missing or invalid."""

    def __init__(self, field_name: str, rule: str) -> None:
        super().__init__(f"{field_name} {rule}")
        self.field = field_name
        self.rule = rule


@dataclass(frozen=True, slots=True)
class Notification:
    """A validated wake-up request."""

    app_id: str
    platform: str
    token: str
    call_id: str
    sip_from: str
    sip_to: str
    event: str = "incoming_session"
    media_type: Optional[str] = None
    device_id: Optional[str] = None
    from_display_name: Optional[str] = None
    silent: bool = True
    reason: Optional[str] = None
    badge: int = 1
    account: Optional[str] = None
    content: Optional[str] = None
    content_type: Optional[str] = None
    filename: Optional[str] = None
    filetype: Optional[str] = None
    #: the body as received, for remote logging (empty unless asked for)
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def request_id(self) -> str:
        """The id that tags every log line about this request."""
        return f"{self.event}-{self.app_id}-{self.call_id}"

    @property
    def is_voip(self) -> bool:
        return self.event in VOIP_EVENTS

    @property
    def is_call(self) -> bool:
        """Calls and their cancels get the short retry budget."""
        return self.event == "cancel" or self.media_type in CALL_MEDIA


@overload
def _string(body: Mapping[str, Any], key: str, required: Literal[True]) -> str: ...


@overload
def _string(body: Mapping[str, Any], key: str, required: bool) -> Optional[str]: ...


def _string(body: Mapping[str, Any], key: str, required: bool) -> Optional[str]:
    """The text of ``key``; None when absent or empty, which ``required`` refuses."""
    value = body.get(key)
    if type(value) is str and value:  # the usual case, in one test
        return value
    if value is None or value == "":
        if required:
            raise ValidationError(key, "is required")
        return None
    if not isinstance(value, str):
        raise ValidationError(key, "must be a string")
    return value


def check_strings(body: Mapping[str, Any]) -> None:
    """Refuse control characters and lone surrogates in any key or string of
    ``body``, nested ones included; the error names the top-level field."""
    # one search over all the flat text (the usual body) finds nothing wrong at
    # the cost of a single pass; only then is each field looked at
    texts = []
    for key, value in body.items():
        texts.append(key)
        if isinstance(value, str):
            if key not in MULTILINE_FIELDS:
                texts.append(value)
            elif UNSAFE_IN_TEXT.search(value) is not None:
                raise ValidationError(key, UNSAFE_RULE)
        elif isinstance(value, (dict, list)) and not _safe(value):
            raise ValidationError(key, UNSAFE_RULE)
    joined = "".join(texts)
    # printable ASCII holds none of them, and is checked faster than searched
    if (joined.isascii() and joined.isprintable()) or UNSAFE_CHARACTERS.search(joined) is None:
        return
    for key, value in body.items():
        if UNSAFE_CHARACTERS.search(key) is not None or (
                isinstance(value, str) and key not in MULTILINE_FIELDS and not _safe(value)):
            raise ValidationError(key, UNSAFE_RULE)


def _safe(value: Any) -> bool:
    if isinstance(value, str):
        return UNSAFE_CHARACTERS.search(value) is None
    if isinstance(value, dict):
        return all(UNSAFE_CHARACTERS.search(key) is None and _safe(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_safe(item) for item in value)
    return True


def _choice(value: str, key: str, choices: Any) -> str:
    """``value`` when it is one of ``choices`` (as the choice's own string:
    a push that waits holds no copy of it)."""
    try:
        return choices[choices.index(value)]
    except ValueError:
        raise ValidationError(key, "must be one of " + ", ".join(choices)) from None


def _bool(body: Mapping[str, Any], key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    # bool is an int subclass: check identity with True/False first
    if isinstance(value, (bool, int, str)) and value in TRUE_VALUES:
        return True
    if isinstance(value, (bool, int, str)) and value in FALSE_VALUES:
        return False
    raise ValidationError(key, "must be a boolean (true/false, 1/0)")


def _int(body: Mapping[str, Any], key: str, default: int, maximum: int) -> int:
    """A JSON integer or a string of ASCII digits (``int()`` would also take
    blanks around it, underscores and digits of other scripts)."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, str) and value.isascii() and value.isdigit():
        try:
            value = int(value)
        except ValueError:  # more digits than int() converts
            raise ValidationError(key, f"must be from 0 to {maximum}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(key, "must be an integer (ASCII digits)")
    if not 0 <= value <= maximum:
        raise ValidationError(key, f"must be from 0 to {maximum}")
    return value


def parse_platform(body: Mapping[str, Any], custom: Iterable[str] = ()) -> str:
    """The canonical platform name of the request (``apple``, ``firebase``,
    or one of the ``custom`` push services configured)."""
    value = _string(body, "platform", True).lower()
    canonical = PLATFORM_ALIASES.get(value)
    if canonical is not None:
        return canonical
    if value in custom:
        return value
    return _choice(value, "platform", sorted(set(PLATFORM_ALIASES) | set(custom)))  # refused: says the choices


def parse_app_id(body: Mapping[str, Any]) -> str:
    return _string(body, "app-id", True)


def parse_notification(body: Mapping[str, Any], app_type: str,
                       platform: Optional[str] = None, keep_raw: bool = True) -> Notification:
    """Validate ``body`` for an application of ``app_type`` on ``platform``
    (the canonical name :func:`parse_platform` returned; parsed when None).
    Its strings are checked by :func:`check_strings` first.  ``keep_raw``:
    keep a copy of ``body`` as :attr:`Notification.raw` (a push waiting for
    its answer holds it: only when something will read it)."""
    app_id = parse_app_id(body)
    platform = platform or parse_platform(body)
    token = _string(body, "token", True)
    call_id = _string(body, "call-id", True)
    sip_from = _string(body, "from", True)
    sip_to = _string(body, "to", True)
    display = _string(body, "from-display-name", False)
    if display is None:
        display = _string(body, "from_display_name", False)

    if app_type == "linphone":
        event = _string(body, "event", False) or "incoming_session"
        if event != "incoming_session":
            raise ValidationError("event", "must be incoming_session for linphone applications")
    else:
        event = _string(body, "event", True)
    event = _choice(EVENT_ALIASES.get(event, event), "event", EVENTS)

    media_type = _string(body, "media-type", event != "cancel")
    if media_type is not None:
        media_type = _choice(media_type, "media-type", MEDIA_TYPES)

    # positional, in the order of the fields: binding 19 keywords costs more than building it
    return Notification(
        app_id, platform, token, call_id, sip_from, sip_to, event, media_type,
        _string(body, "device-id", False),
        display,
        _bool(body, "silent", True),
        _string(body, "reason", False),
        _int(body, "badge", 1, BADGE_MAX),
        _string(body, "account", False),
        _string(body, "content", False),
        _string(body, "content-type", False),
        _string(body, "filename", False),
        _string(body, "filetype", False),
        dict(body) if keep_raw else {},
    )


#: the field rules, for the other requests that carry such fields (v2 registrations)
read_string, read_bool = _string, _bool
