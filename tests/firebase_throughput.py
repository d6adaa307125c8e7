"""Throughput of FirebaseClient against the fake FCM (a measurement, not a test).

    python tests/firebase_throughput.py -n 10000 --delay 0.05 [--in-process] [--max-in-flight 128]

By default the fake runs in its own process (as the real service would be
elsewhere), started with ``python -m sylkpush.testing.fake_fcm``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, reactor  # noqa: E402

from sylkpush.config import AppConfig  # noqa: E402
from sylkpush.pns.base import OutgoingPush  # noqa: E402
from sylkpush.pns.firebase import FirebaseClient  # noqa: E402


def start_fake_process(directory: str, delay: float):
    process = subprocess.Popen([sys.executable, "-m", "sylkpush.testing.fake_fcm", "--dir", directory,
                                "--delay", str(delay)], stdout=subprocess.PIPE, text=True,
                               cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    found = {}
    for line in process.stdout:
        key, _, value = line.strip().partition(": ")
        found[key.strip()] = value.strip()
        if key.strip() == "applications.ini":
            break
    return process, found["v1 push URL"], found["service account"], found["CA certificate"]


@defer.inlineCallbacks
def run(args):
    directory = tempfile.mkdtemp(prefix="fcm-throughput-")
    process = fake = None
    if args.in_process:
        from sylkpush.testing.fake_fcm import FakeFCM
        fake = FakeFCM(reactor, directory, delay=args.delay)
        yield fake.start()
        url, account, ca = fake.push_url, fake.service_account_file, fake.ca_file
    else:
        process, url, account, ca = start_fake_process(directory, args.delay)
    app = AppConfig(section="bench", app_id="com.example.bench", app_type="sylk", platform="firebase",
                    firebase_push_url=url, firebase_authorization_file=account, tls_ca_file=ca)
    client = FirebaseClient(app, reactor, max_in_flight=args.max_in_flight, queue_limit=args.count + 1)
    client.start()
    # warm up: the access token and the connections
    yield defer.gatherResults([client.send(push(i, "warm")) for i in range(args.max_in_flight)])
    started = time.monotonic()
    results = yield defer.gatherResults([client.send(push(i)) for i in range(args.count)])
    elapsed = time.monotonic() - started
    codes = {}
    for result in results:
        codes[result.code] = codes.get(result.code, 0) + 1
    print(f"{args.count} pushes in {elapsed:.2f} s: {args.count / elapsed:.0f} notifications/s "
          f"(fake delay {args.delay * 1000:.0f} ms, max_in_flight {args.max_in_flight}, "
          f"fake {'in process' if args.in_process else 'in its own process'}); codes {codes}")
    yield client.stop()
    if fake is not None:
        yield fake.stop()
    if process is not None:
        process.terminate()
        process.wait()
    reactor.stop()


def push(i: int, prefix: str = "device") -> OutgoingPush:
    token = f"{prefix}-{i}"
    return OutgoingPush(request_id=f"incoming_session-com.example.bench-{prefix}{i}", token=token, headers={},
                        payload={"message": {"token": token, "data": {"event": "incoming_session", "call-id": str(i)},
                                             "android": {"priority": "high", "ttl": "60s"}}},
                        deadline=reactor.seconds() + 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--count", type=int, default=10000)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--max-in-flight", type=int, default=128)
    parser.add_argument("--in-process", action="store_true")
    args = parser.parse_args()
    reactor.callWhenRunning(lambda: run(args).addErrback(lambda f: (f.printTraceback(), reactor.stop())))
    reactor.run()


if __name__ == "__main__":
    main()
