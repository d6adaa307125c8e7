"""Push-service clients, one module per service (``apple``, ``firebase``).

Each module defines a :class:`sylkpush.pns.base.PushClient` subclass named
``<Platform>Client`` (``AppleClient``, ``FirebaseClient``);
:mod:`sylkpush.pns.client_classes` finds it.
"""
