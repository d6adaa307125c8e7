"""Template of a custom application type: ``app_type = myapp``.

How to use it:

1. Copy this file into ``extra_applications_dir`` (general.ini,
   ``[applications]``; ``applications/`` inside the config directory by
   default) and rename it after your application type, e.g. ``acme.py``.
2. Rename the four classes to match: ``<Platform><Apptype>Headers`` and
   ``<Platform><Apptype>Payload`` with the type capitalised, e.g.
   ``AppleAcmeHeaders`` ... ``FirebaseAcmePayload``.  You only need the
   platforms you configure.
3. In applications.ini set ``app_type = acme`` in the application's section.

For a custom push service (``app_platform = mypns``, see
``config/pns/mypns.py``) the classes are ``Mypns<Apptype>Headers`` and
``Mypns<Apptype>Payload``, subclassing ``Renderer`` (below).

A renderer receives the validated request (``self.notification``: ``event``,
``call_id``, ``sip_from``, ``sip_to``, ``from_display_name``,
``media_type``, ``silent``, ``reason``, ``badge``, ``token`` ...), the
application's settings (``self.app``: ``app_id``, ``option(name)`` for your
own keys in the applications.ini section) and ``self.now``, the current UNIX
time.  Keep it pure: no file or network access, no logging, no clock reads
(use ``self.now``); the server does all of that around it.  If this module
fails to import or lacks a class, only the applications using it are left
out, with a log line saying why.
"""

from typing import Any, Dict

from sylkpush.applications.base import (
    AppleHeaders, ApplePayload, FirebaseHeaders, FirebasePayload, Renderer, base_topic, session_id,
)


def call_fields(notification: Any) -> Dict[str, Any]:
    """What your app needs to show an incoming call; both platforms send it."""
    return {
        "event": notification.event,
        "call-id": notification.call_id,
        "session-id": session_id(notification.call_id),
        "media-type": notification.media_type,
        "from_uri": notification.sip_from,
        "from_display_name": notification.from_display_name or notification.sip_from,
        "to_uri": notification.sip_to,
    }


class AppleMyappHeaders(AppleHeaders):
    """APNs headers.

    Change ``ttl`` (seconds APNs keeps an undelivered notification) and the
    methods below.  The base class turns them into ``apns-push-type``,
    ``apns-topic``, ``apns-priority`` and ``apns-expiration``; the
    ``authorization`` header is added by the Apple client.
    """

    ttl = 60

    def push_type(self) -> str:
        """``voip`` for calls (needs a VoIP certificate/topic), else ``alert``."""
        return "voip" if self.notification.is_voip else "alert"

    def topic(self) -> str:
        """Your bundle id; VoIP pushes go to ``<bundle id>.voip``."""
        topic = base_topic(self.app.app_id)
        return topic + ".voip" if self.notification.is_voip else topic

    def priority(self) -> int:
        """10: deliver now; 5: when convenient for the device's battery."""
        return 10 if self.notification.is_voip else 5


class AppleMyappPayload(ApplePayload):
    """The APNs JSON payload: put here what your iOS app expects.

    Alert pushes need an ``aps`` dictionary; VoIP pushes may carry any keys.
    """

    @property
    def payload(self) -> Dict[str, Any]:
        notification = self.notification
        if notification.is_voip:
            return call_fields(notification)
        return {
            "aps": {
                "alert": {"title": notification.from_display_name or notification.sip_from,
                          "body": f"{notification.event} from {notification.sip_from}"},
                "sound": "default",
                "badge": notification.badge,
            },
            "event": notification.event,
            "call-id": notification.call_id,
        }


class FirebaseMyappHeaders(FirebaseHeaders):
    """Extra HTTP headers for FCM; usually none (the client adds authorization)."""


class FirebaseMyappPayload(FirebasePayload):
    """The FCM message: usually only :meth:`data` needs changing.

    The base class wraps ``data()`` in ``{"message": {"token", "data",
    "android": {"priority": "high", "ttl": "<ttl>s"}}}`` (or the legacy form
    when the application uses a server key), converting every value to a
    string as FCM requires.  Override ``v1_message()`` to add ``notification``
    or ``apns`` blocks.
    """

    ttl = 60

    def data(self) -> Dict[str, Any]:
        """FCM refuses the keys ``from``, ``message_type`` and ``google.*``/``gcm.*``."""
        return call_fields(self.notification)


class MypnsMyappHeaders(Renderer):
    """Headers for the custom push service of ``config/pns/mypns.py``.

    A custom platform has no base class of its own: subclass ``Renderer``
    and provide a ``headers`` property returning a dict of strings.  Never
    put credentials here; the push-service client adds them.
    """

    @property
    def headers(self) -> Dict[str, str]:
        return {"x-mypns-priority": "high" if self.notification.is_voip else "normal"}


class MypnsMyappPayload(Renderer):
    """The payload for ``config/pns/mypns.py``: any JSON object."""

    @property
    def payload(self) -> Dict[str, Any]:
        notification = self.notification
        return {
            "event": notification.event,
            "call-id": notification.call_id,
            "from": notification.sip_from,
            "to": notification.sip_to,
            "media-type": notification.media_type,
            "sent-at": int(self.now),
        }
