"""Running a fake as a program: its command line, and a small HTTP control
port for the fakes run as separate processes.

The benchmark and the soak drive faults and read counts through it, since
they cannot call the fake's methods across a process boundary::

    GET  /stats                  counts as JSON (see :func:`fake_stats`)
    GET  /delivered              the call-id of every delivery, one a line
    POST /fault/<name>?count=N   call the fake's fault method (see FAULTS)

Loopback only: the fakes are test tools.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from typing import Any, Callable, Dict, List

from twisted.internet.task import LoopingCall
from twisted.web import resource, server

from sylkpush.logs import FORMAT

log = logging.getLogger(__name__)

#: seconds between two count lines of a fake run as a program
REPORT_INTERVAL = 10.0

#: fault name -> what it does to a fake, given the request's ``count``
FAULTS: Dict[str, Callable[[Any, int], Any]] = {
    # FakeAPNs and FakeFCM: fail, slow, restart, stop, start; the others FakeAPNs only
    "drop": lambda fake, count: fake.drop_next(count),
    "fail": lambda fake, count: fake.fail_next(count, 500),
    "fail_all": lambda fake, count: fake.fail_all(count or None),  # count: the status; 0 ends it
    "fail503": lambda fake, count: fake.fail_next(count, 503),
    "reset": lambda fake, count: fake.reset_next(count),
    "goaway": lambda fake, count: fake.goaway_now("bench"),
    "silence": lambda fake, count: [fake.silence_one() for _ in range(max(1, count))],
    "goaway_after": lambda fake, count: fake.goaway_after(count),
    "slow": lambda fake, count: setattr(fake, "delay", count / 1000.0),
    "restart": lambda fake, count: fake.restart(),
    "stop": lambda fake, count: fake.stop(),
    "start": lambda fake, count: fake.start() if getattr(fake, "_listening", None) is None else None,
    "wrong_ca": lambda fake, count: fake.present_wrong_certificate(bool(count)),
}


def delivered_payloads(fake: Any) -> List[Any]:
    """What the fake accepted: APNs payloads, or FCM v1 messages and legacy bodies."""
    if hasattr(fake, "notifications"):
        return [delivery.payload for delivery in fake.notifications]
    return list(fake.messages) + list(fake.legacy_messages)


def fake_stats(fake: Any) -> Dict[str, Any]:
    """What a run checks at the fake: requests, deliveries, and call-ids
    delivered more than once."""
    calls = Counter(call_id_of(payload) for payload in delivered_payloads(fake))
    stats = {
        "requests": getattr(fake, "requests_received", getattr(fake, "push_requests", 0)),
        "delivered": sum(calls.values()),
        "distinct": len(calls),
        "duplicated": sum(count - 1 for count in calls.values() if count > 1),
    }
    if hasattr(fake, "answers"):
        stats["answers"] = {str(code): count for code, count in sorted(fake.answers.items())}
        stats["connections"] = fake.connections_made
    return stats


def report_periodically(reactor: Any, fake: Any, name: str, interval: float = REPORT_INTERVAL) -> LoopingCall:
    """Log the fake's counts every ``interval`` seconds, each line naming the
    fake (``fake APNs 127.0.0.1:18443``): a demo runs two in one terminal."""
    def report() -> None:
        stats = fake_stats(fake)
        log.info("%s: %s", name, ", ".join(f"{key} {value}" for key, value in stats.items()))
    loop = LoopingCall(report)
    loop.clock = reactor
    loop.start(interval, now=False)
    return loop


def call_id_of(payload: Any) -> str:
    """The call-id a rendered sylk payload carries (Apple: top level, FCM: message.data)."""
    if not isinstance(payload, dict):
        return ""
    for candidate in (payload, payload.get("data"), (payload.get("message") or {}).get("data")):
        if isinstance(candidate, dict):
            value = candidate.get("call-id") or candidate.get("message_id") or candidate.get("file-id")
            if value:
                return str(value)
    return ""


class ControlResource(resource.Resource):
    isLeaf = True

    def __init__(self, fake: Any) -> None:
        super().__init__()
        self.fake = fake

    def render_GET(self, request: server.Request) -> bytes:
        if request.postpath and request.postpath[0] == b"delivered":
            request.setHeader(b"content-type", b"text/plain")
            return "".join(call_id_of(payload) + "\n" for payload in delivered_payloads(self.fake)).encode()
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(fake_stats(self.fake)).encode()

    def render_POST(self, request: server.Request) -> bytes:
        parts = [part.decode() for part in request.postpath or () if part]
        fault = FAULTS.get(parts[1]) if len(parts) == 2 and parts[0] == "fault" else None
        if fault is None:
            request.setResponseCode(404)
            return b'{"error": "unknown fault"}'
        args: Dict[bytes, List[bytes]] = request.args or {}
        count = int(args.get(b"count", [b"1"])[0])
        fault(self.fake, count)
        return b'{"ok": true}'


class QuietSite(server.Site):
    """A Site without access log or factory start and stop lines (the fakes
    answer thousands of requests a second)."""

    noisy = False

    def log(self, request: Any) -> None:
        pass


def listen_control(reactor: Any, fake: Any, port: int) -> int:
    """Serve the control port on 127.0.0.1; the port number."""
    site = QuietSite(ControlResource(fake))
    return reactor.listenTCP(port, site, interface="127.0.0.1").getHost().port


def fake_arguments(prog: str, description: str, app_id: str, files: str) -> argparse.ArgumentParser:
    """The command line both fakes share; ``files`` says what ``--dir`` receives."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="listen port (default: any free port)")
    parser.add_argument("--dir", required=True, help=f"directory where {files} are written")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--app-id", default=app_id, help="app_id of the applications.ini sample")
    parser.add_argument("--app-type", default="sylk", help="app_type of the applications.ini sample")
    parser.add_argument("--control-port", type=int, default=None,
                        help="serve GET /stats and POST /fault/<name> on 127.0.0.1 at this port "
                             "(0: any free port, printed on the second line)")
    parser.add_argument("--quiet", action="store_true", help="log warnings only (no periodic count lines)")
    return parser


def serve_fake(reactor: Any, fake: Any, name: str, args: argparse.Namespace,
               details: Callable[[], List[str]]) -> int:
    """Start ``fake`` and run the reactor until a signal stops it.

    Prints ``<name> listening on <host:port>`` first (scripts wait for it),
    then ``control port N`` with ``--control-port``, then ``details()``; at
    exit one ``stats {...}`` line for scripts that check deliveries.
    """
    # as the daemon's lines, which a demo mixes in
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format=FORMAT)

    def started(_: int) -> None:
        lines = details()  # before the first line: it may write files the scripts read then
        print(f"{name} listening on {fake.authority}", flush=True)
        if args.control_port is not None:
            print(f"control port {listen_control(reactor, fake, args.control_port)}", flush=True)
        for line in lines:
            print(line, flush=True)
        if not args.quiet:
            report_periodically(reactor, fake, f"{name} {fake.authority}")

    def final_stats() -> None:
        print("stats " + json.dumps(fake_stats(fake)), flush=True)

    fake.start().addCallback(started)
    reactor.addSystemEventTrigger("before", "shutdown", final_stats)
    reactor.run()
    return 0

