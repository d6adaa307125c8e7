"""Throughput of AppleClient against the fake APNs (a check to run by hand, not a test).

The fake runs in its own process (``python -m sylkpush.testing.fake_apns``)
so client and server do not share a CPU, answers after ``--delay`` seconds,
and the client pushes ``--count`` notifications as fast as it can::

    python tests/apple_throughput.py --count 20000 --delay 0.05 --connections 2

``--connections`` is the size of the pool (``apple_connections``); the line
printed also gives the client's CPU time per push.  With ``--silence-at``,
pushes go out at a steady ``--rate`` for ``--seconds`` instead, and one
connection of the fake stops reading and answering (no FIN, no RST) that many
seconds in; the line printed says how long the pushes waited::

    python tests/apple_throughput.py --rate 150 --seconds 8 --silence-at 2 --connections 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import reactor  # noqa: E402
import treq  # noqa: E402
from twisted.internet.defer import gatherResults, inlineCallbacks  # noqa: E402
from twisted.internet.task import deferLater  # noqa: E402

from sylkpush.config import AppConfig  # noqa: E402
from sylkpush.pns.apple import AppleClient  # noqa: E402
from sylkpush.pns.base import OutgoingPush  # noqa: E402


def start_fake(directory: str, delay: float, auth: str) -> "tuple[subprocess.Popen, int, int]":
    """The fake APNs process, its port and its control port."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sylkpush.testing.fake_apns", "--dir", directory,
         "--delay", str(delay), "--auth", auth, "--control-port", "0", "--quiet"],
        stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))})
    line, control = process.stdout.readline(), process.stdout.readline()
    if "listening on" not in line or "control port" not in control:
        process.kill()
        raise SystemExit(f"the fake APNs did not start: {line!r}")
    return process, int(line.rsplit(":", 1)[1]), int(control.split()[-1])


@inlineCallbacks
def steady_with_silence(args: argparse.Namespace, client: AppleClient, push, control: int):
    """``--rate`` pushes a second; one connection goes silent ``--silence-at`` seconds in."""
    waited = []
    sends = []
    total = int(args.rate * args.seconds)
    for i in range(total):
        if i == int(args.rate * args.silence_at):
            yield treq.post(f"http://127.0.0.1:{control}/fault/silence", b"")
        started = time.perf_counter()
        sends.append(client.send(push(i)).addCallback(
            lambda result, started=started: waited.append((time.perf_counter() - started, result.code))))
        yield deferLater(reactor, 1.0 / args.rate, lambda: None)
    yield gatherResults(sends)
    times = sorted(seconds for seconds, _ in waited)
    codes = {}
    for _, code in waited:
        codes[code] = codes.get(code, 0) + 1
    print(f"{total} pushes at {args.rate:g}/s, one of {args.connections} connections silent after "
          f"{args.silence_at:g} s: longest wait {times[-1]:.2f} s, {sum(1 for t in times if t > 1)} waited "
          f"over 1 s, median {times[len(times) // 2] * 1000:.0f} ms (fake delay {args.delay * 1000:.0f} ms), "
          f"results {codes}")


@inlineCallbacks
def run(args: argparse.Namespace, port: int, directory: str, control: int):
    common = dict(section="bench", app_id="com.example.fake", app_type="sylk", platform="apple",
                  apple_host="127.0.0.1", apple_port=port,
                  tls_ca_file=os.path.join(directory, "ca.crt"))
    if args.auth == "token":
        app = AppConfig(apple_key=os.path.join(directory, "AuthKey_FAKEKEY123.p8"),
                        key_id="FAKEKEY123", team_id="FAKETEAM12", **common)
    else:
        app = AppConfig(apple_certificate=os.path.join(directory, "client.crt"),
                        apple_key=os.path.join(directory, "client.key"), **common)
    client = AppleClient(app, reactor, queue_limit=args.count + 1, connections=args.connections)
    client.start()
    headers = {"apns-topic": "com.example.fake.voip", "apns-push-type": "voip", "apns-priority": "10",
               "apns-expiration": str(int(time.time()) + 120)}

    def push(i: int) -> OutgoingPush:
        return OutgoingPush(f"bench-{i}", "0123456789abcdef" * 4, headers,
                            {"event": "incoming_session", "call-id": f"call-{i}", "media-type": "audio",
                             "from_uri": "alice@example.com", "to_uri": "bob@example.com"},
                            reactor.seconds() + 64, voip=True)

    # warm up: every connection of the pool, TLS, first token
    while client.status()["connections"] < args.connections:
        yield client.send(push(-1))
    if args.silence_at is not None:
        yield steady_with_silence(args, client, push, control)
        yield client.stop()
        return
    started, cpu = time.perf_counter(), time.process_time()
    results = yield gatherResults([client.send(push(i)) for i in range(args.count)])
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    codes = {}
    for result in results:
        codes[result.code] = codes.get(result.code, 0) + 1
    print(f"{args.count} notifications in {elapsed:.2f} s: {args.count / elapsed:.0f}/s, "
          f"{cpu / args.count * 1e6:.0f} us CPU each (fake delay {args.delay * 1000:.0f} ms, "
          f"{args.connections} connections, {args.auth} auth), results {codes}")
    yield client.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--auth", choices=("certificate", "token"), default="certificate")
    parser.add_argument("--connections", type=int, default=2, help="HTTP/2 connections in the pool")
    parser.add_argument("--silence-at", type=float, default=None,
                        help="steady load instead; one connection goes silent this many seconds in")
    parser.add_argument("--rate", type=float, default=150, help="pushes a second, with --silence-at")
    parser.add_argument("--seconds", type=float, default=8, help="seconds of load, with --silence-at")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        process, port, control = start_fake(directory, args.delay, args.auth)
        try:
            def done(result):
                if hasattr(result, "printTraceback"):
                    result.printTraceback()
                reactor.stop()
            reactor.callWhenRunning(lambda: run(args, port, directory, control).addBoth(done))
            reactor.run()
        finally:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
