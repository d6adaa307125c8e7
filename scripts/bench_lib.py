"""Process plumbing shared by ``scripts/bench`` and ``scripts/soak``.

The fakes and the daemon run as separate processes, driven the way an operator
would: command lines, a config directory, signals.  The fakes expose their
counts and faults on a loopback control port (sylkpush.testing.control).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=HERE)
if HERE not in sys.path:  # this tree's sylkpush (certificates for the Node fake), without PYTHONPATH=.
    sys.path.insert(1, HERE)
NODE_FAKE = os.path.join(HERE, "scripts", "bench-fake.mjs")
DAEMON = "import sys; from sylkpush.cli import main; sys.exit(main(sys.argv[1:]))"


def raise_fd_limit() -> None:
    """Up to the hard limit: the outage test holds 10 000 connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Fake:
    """A fake push service process with its control port: ``python -m module``, or
    ``program`` (a command line: the Node fake, see :func:`node_fake`)."""

    def __init__(self, module: str, directory: str, extra: List[str], python: str = sys.executable,
                 program: Optional[List[str]] = None) -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.process = subprocess.Popen(
            [*(program or [python, "-u", "-m", module]), "--dir", directory, "--control-port", "0", "--quiet",
             *extra],
            stdout=subprocess.PIPE, stderr=open(os.path.join(directory, "fake.log"), "w"),
            text=True, env=ENV)
        first = self.process.stdout.readline()
        second = self.process.stdout.readline()
        if "listening on" not in first or "control port" not in second:
            self.process.kill()
            raise SystemExit(f"{module} did not start: {first!r} {second!r}")
        self.port = int(first.rsplit(":", 1)[1])
        self.control = int(second.split()[-1])

    def fault(self, name: str, count: int = 1) -> None:
        url = f"http://127.0.0.1:{self.control}/fault/{name}?count={count}"
        urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=10).read()

    def stats(self) -> Dict:
        return json.load(urllib.request.urlopen(f"http://127.0.0.1:{self.control}/stats", timeout=10))

    def delivered(self, prefix: str) -> Dict[str, int]:
        """call-id -> deliveries, for the call-ids that start with ``prefix``."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.control}/delivered", timeout=30).read()
        counts: Dict[str, int] = {}
        for line in text.decode().splitlines():
            if line.startswith(prefix):
                counts[line] = counts.get(line, 0) + 1
        return counts

    def stop(self) -> str:
        """SIGTERM; the fake's last ``stats`` line."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=30)
        return next((line for line in out.splitlines() if line.startswith("stats ")), "")


def node_fake(service: str, directory: str, extra: List[str]) -> Fake:
    """scripts/bench-fake.mjs serving ``service`` ("apns" or "fcm"), with the files it reads made
    here as the Python fakes make theirs (node has no X.509 certificate maker).  ``node`` must be
    on PATH (the bench says so before it starts)."""
    write_node_fake_files(service, directory)
    fake = Fake(f"{NODE_FAKE} --service {service}", directory, extra,
                program=["node", NODE_FAKE, "--service", service])
    if service == "fcm":  # what firebase_sections reads, as the Python fake writes it
        from sylkpush.testing.fake_fcm import APPLICATIONS_FILE_NAME, SERVICE_ACCOUNT_FILE_NAME
        account = os.path.join(directory, SERVICE_ACCOUNT_FILE_NAME)
        with open(account) as stream:
            project = json.load(stream)["project_id"]
        with open(os.path.join(directory, APPLICATIONS_FILE_NAME), "w") as stream:
            stream.write(f"[node-fake-fcm]\napp_id = com.example.fake.fcm\napp_type = sylk\n"
                         f"app_platform = firebase\n"
                         f"firebase_push_url = https://127.0.0.1:{fake.port}/v1/projects/{project}/messages:send\n"
                         f"firebase_authorization_file = {account}\n"
                         f"tls_ca_file = {os.path.join(directory, 'ca.crt')}\n")
    return fake


def write_node_fake_files(service: str, directory: str) -> None:
    """What scripts/bench-fake.mjs reads in ``directory``: a CA (``ca.crt``), its server
    certificate (``server.crt``, ``server.key``), and a client certificate for APNs
    (``client.crt``, ``client.key``) or a service account for FCM whose ``token_uri``
    names a free port, where the fake serves its token endpoint."""
    from sylkpush.testing.certs import CertificateAuthority
    from sylkpush.testing.fake_fcm import write_service_account
    os.makedirs(directory, exist_ok=True)
    ca = CertificateAuthority(f"Node fake {service} CA")
    ca.write(directory, "ca")
    ca.server(("localhost", "127.0.0.1", "::1")).write(directory, "server")
    if service == "apns":
        ca.client("Apple Push Services: fake", uid="com.example.fake").write(directory, "client")
    else:
        write_service_account(directory, f"https://127.0.0.1:{free_port()}/token")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def apple_sections(fake: Fake, count: int, prefix: str = "com.example.bench", connections: int = 0) -> str:
    """``count`` Apple applications (certificate auth) pointed at ``fake``
    (with ``apple_connections`` when ``connections`` is not 0)."""
    sections = []
    pool = f"apple_connections = {connections}\n" if connections else ""
    for i in range(count):
        sections.append(
            f"[bench-apple-{i}]\napp_id = {prefix}{i}\napp_type = sylk\napp_platform = apple\n"
            f"apple_push_url = 127.0.0.1:{fake.port}\ntls_ca_file = {fake.directory}/ca.crt\n"
            f"apple_certificate = {fake.directory}/client.crt\napple_key = {fake.directory}/client.key\n{pool}")
    return "\n".join(sections)


def firebase_sections(fake: Fake, count: int, prefix: str = "com.example.bench") -> str:
    """``count`` Firebase (FCM v1) applications cloned from the sample the fake FCM writes."""
    import configparser
    sample = configparser.ConfigParser()
    sample.read(os.path.join(fake.directory, "fake-fcm-applications.ini"))
    values = sample[sample.sections()[0]]
    sections = []
    for i in range(count):
        sections.append(
            f"[bench-firebase-{i}]\napp_id = {prefix}{i}\napp_type = sylk\napp_platform = firebase\n"
            f"firebase_push_url = {values['firebase_push_url']}\n"
            f"firebase_authorization_file = {values['firebase_authorization_file']}\n"
            f"tls_ca_file = {values['tls_ca_file']}\n")
    return "\n".join(sections)


def write_config(directory: str, port: int, applications: str, return_async: bool = True,
                 workers: int = 1) -> str:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "general.ini"), "w") as stream:
        # max_connections: the outage run holds 10 000 callers' connections open
        stream.write(f"[server]\nhost = 127.0.0.1\nport = {port}\nreturn_async = {str(return_async).lower()}\n"
                     f"spool_dir = spool\nmax_connections = 20000\n"
                     + (f"workers = {workers}\n" if workers != 1 else ""))
    with open(os.path.join(directory, "applications.ini"), "w") as stream:
        stream.write(applications)
    return directory


class Daemon:
    """sylk-pushserver in the foreground, its log in ``config_dir``/daemon.log.

    ``source``: the source tree the daemon runs from (default: this one), so a
    benchmark can run another build (a checkout of an older commit) beside it.
    """

    def __init__(self, config_dir: str, port: int, python: str = sys.executable,
                 source: str = HERE) -> None:
        self.port = port
        command = [python, "-c", DAEMON, "--config_dir", config_dir, "--no-fork"]
        self.log_path = os.path.join(config_dir, "daemon.log")
        # run in the source tree: "python -c" puts the working directory first on sys.path
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=open(self.log_path, "a"),
                                        env=dict(os.environ, PYTHONPATH=source), cwd=source,
                                        preexec_fn=raise_fd_limit)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the daemon exited with {self.process.returncode}; see {self.log_path}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit("the daemon did not listen within 20 s")

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def pids(self) -> List[int]:
        """The daemon's process and its workers."""
        return process_tree(self.pid)

    def cpu_seconds(self) -> float:
        """CPU time of the daemon and its workers so far."""
        return sum(self.cpu_times())

    def cpu_times(self) -> Tuple[float, float]:
        """(user, system) CPU seconds of the daemon and its workers so far."""
        times = [cpu_times(pid) for pid in self.pids]
        return sum(user for user, _ in times), sum(system for _, system in times)

    def memory(self) -> Tuple[float, float]:
        """(current RSS, peak RSS) in MB, of the daemon and its workers together."""
        current = peak = 0.0
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/status") as stream:
                    for line in stream:
                        if line.startswith("VmRSS:"):
                            current += int(line.split()[1]) / 1024.0
                        elif line.startswith("VmHWM:"):
                            peak += int(line.split()[1]) / 1024.0
            except OSError:  # gone meanwhile
                pass
        return current, peak

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def cpu_times(pid: int) -> Tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` so far ((0, 0) when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stream:
            fields = stream.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (0 when it is gone)."""
    return sum(cpu_times(pid))


def process_tree(pid: int) -> List[int]:
    """``pid`` and its descendants."""
    children: Dict[int, List[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as stream:
                parent = int(stream.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def get_json(port: int, path: str) -> Dict:
    """GET a JSON resource of the daemon (whatever its status code)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as error:
        return json.load(error)


def raw_request(body: Dict) -> bytes:
    data = json.dumps(body).encode()
    return (b"POST /push HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)


def wakeup(app: str, platform: str, call_id: str, n: int) -> Dict:
    return {"app-id": app, "platform": platform, "token": f"{n:064x}", "device-id": "dev",
            "call-id": call_id, "from": "alice@example.com", "to": "bob@example.com",
            "media-type": "audio", "event": "incoming_session", "silent": True}
