"""Throughput of AppleClient against the fake APNs (a check to run by hand, not a test).

The fake runs in its own process (``python -m sylkpush.testing.fake_apns``)
so client and server do not share a CPU, answers after ``--delay`` seconds,
and the client pushes ``--count`` notifications as fast as it can::

    python tests/apple_throughput.py --count 20000 --delay 0.05
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
from twisted.internet.defer import gatherResults, inlineCallbacks  # noqa: E402

from sylkpush.config import AppConfig  # noqa: E402
from sylkpush.pns.apple import AppleClient  # noqa: E402
from sylkpush.pns.base import OutgoingPush  # noqa: E402


def start_fake(directory: str, delay: float, auth: str) -> "tuple[subprocess.Popen, int]":
    process = subprocess.Popen(
        [sys.executable, "-m", "sylkpush.testing.fake_apns", "--ca-dir", directory,
         "--delay", str(delay), "--auth", auth],
        stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))})
    line = process.stdout.readline()
    if "listening on" not in line:
        process.kill()
        raise SystemExit(f"the fake APNs did not start: {line!r}")
    return process, int(line.rsplit(":", 1)[1])


@inlineCallbacks
def run(args: argparse.Namespace, port: int, directory: str):
    common = dict(section="bench", app_id="com.example.fake", app_type="sylk", platform="apple",
                  apple_host="127.0.0.1", apple_port=port,
                  tls_ca_file=os.path.join(directory, "ca.crt"))
    if args.auth == "token":
        app = AppConfig(apple_key=os.path.join(directory, "AuthKey_FAKEKEY123.p8"),
                        key_id="FAKEKEY123", team_id="FAKETEAM12", **common)
    else:
        app = AppConfig(apple_certificate=os.path.join(directory, "client.crt"),
                        apple_key=os.path.join(directory, "client.key"), **common)
    client = AppleClient(app, reactor, queue_limit=args.count)
    client.start()
    headers = {"apns-topic": "com.example.fake.voip", "apns-push-type": "voip", "apns-priority": "10",
               "apns-expiration": str(int(time.time()) + 120)}

    def push(i: int) -> OutgoingPush:
        return OutgoingPush(f"bench-{i}", "0123456789abcdef" * 4, headers,
                            {"event": "incoming_session", "call-id": f"call-{i}", "media-type": "audio",
                             "from_uri": "alice@example.com", "to_uri": "bob@example.com"},
                            reactor.seconds() + 64, voip=True)

    # warm up: connection, TLS, first token
    yield client.send(push(-1))
    started = time.perf_counter()
    results = yield gatherResults([client.send(push(i)) for i in range(args.count)])
    elapsed = time.perf_counter() - started
    codes = {}
    for result in results:
        codes[result.code] = codes.get(result.code, 0) + 1
    print(f"{args.count} notifications in {elapsed:.2f} s: {args.count / elapsed:.0f}/s "
          f"(fake delay {args.delay * 1000:.0f} ms, {args.auth} auth), results {codes}")
    yield client.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--auth", choices=("certificate", "token"), default="certificate")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        process, port = start_fake(directory, args.delay, args.auth)
        try:
            def done(_):
                reactor.stop()
            reactor.callWhenRunning(lambda: run(args, port, directory).addBoth(done))
            reactor.run()
        finally:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
