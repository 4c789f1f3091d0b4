"""A local KMS for the tests: moto's HTTP server on 127.0.0.1, and a loopback front that injects faults.

Everything here listens on 127.0.0.1 only, on ports the OS picks, and stops by itself when the test
that made it ends (the fixtures in conftest.py close them). No request loop runs unbounded: a front
that holds a request open waits at most ``hold_seconds``.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
from moto.server import ThreadedMotoServer

MOTO_ACCOUNT = "123456789012"


class LocalKMS:
    """moto's KMS as a real HTTP server on 127.0.0.1."""

    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)

    def start(self) -> LocalKMS:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.host, self.port = host, port
        self.endpoint = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._server.stop()

    def admin(self, region: str = "eu-west-1"):
        # The tests' own client, to create and manage keys; the app never uses it.
        return boto3.client("kms", region_name=region, endpoint_url=self.endpoint)

    def create_key(self, region: str = "eu-west-1", description: str = "test key") -> str:
        return self.admin(region).create_key(Description=description)["KeyMetadata"]["Arn"]

    def create_hmac_key(self, region: str = "eu-west-1", description: str = "test HMAC key") -> str:
        """An HMAC_256 key, as blind indexes use (GenerateMac)."""
        metadata = self.admin(region).create_key(
            Description=description, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC"
        )["KeyMetadata"]
        return metadata["Arn"]


@dataclass
class Fault:
    """What the front does with a request whose KMS operation is in ``operations`` (all when empty)."""

    kind: str = "pass"  # pass | hang | reset | status | error
    status: int | None = None  # "status": default 500; "error": default 400, as KMS sends refusals
    error_code: str = ""
    operations: tuple[str, ...] = ()
    delay: float = 0.0
    times: int | None = None  # only the first N matching requests; all when None
    after: int = 0  # let this many matching requests through untouched first
    gate: Gate | None = None  # hold each matching request until the test lets it through


class Gate:
    """Holds requests until the test lets them through one at a time, or ``timeout`` seconds pass.

    A test that must show something kept running while KMS sat on a request lets the requests through
    from that something: the proof is then a count (let through versus timed out), which a busy
    machine cannot fake or break, instead of a wall-clock gap.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.let_through = 0
        self.timed_out = 0
        self._held = 0
        self._passes = 0
        self._condition = threading.Condition()

    def hold(self) -> None:
        with self._condition:
            self._held += 1
            opened = self._condition.wait_for(lambda: self._passes > 0, self.timeout)
            self._held -= 1
            if opened:
                self._passes -= 1
                self.let_through += 1
            else:
                self.timed_out += 1

    @property
    def waiting(self) -> int:
        """Requests held and not yet let through."""
        with self._condition:
            return self._held - self._passes

    def let_one_through(self) -> None:
        with self._condition:
            self._passes += 1
            self._condition.notify()


@dataclass
class FrontStats:
    requests: Counter = field(default_factory=Counter)  # by KMS operation
    data_keys: list = field(default_factory=list)  # base64 plaintext data keys KMS handed out
    user_agents: list = field(default_factory=list)  # the User-Agent header of each request

    @property
    def total(self) -> int:
        return sum(self.requests.values())


class KMSFront:
    """A loopback HTTP front for moto that counts requests and injects one fault at a time."""

    def __init__(self, upstream: LocalKMS, hold_seconds: float = 30.0) -> None:
        self.upstream = upstream
        self.fault = Fault()
        self.stats = FrontStats()
        self.hold_seconds = hold_seconds
        self._faults_left: int | None = None
        self._passed_before_fault = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence stderr
                pass

            def setup(self) -> None:
                super().setup()
                # Replies go out in one write with Nagle off: otherwise each costs ~40 ms of delayed ACK.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                operation = self.headers.get("X-Amz-Target", "").rpartition(".")[2]
                with front._lock:
                    front.stats.requests[operation] += 1
                    front.stats.user_agents.append(self.headers.get("User-Agent", ""))
                    fault = front.fault
                    if fault.operations and operation not in fault.operations:
                        fault = Fault()
                    elif front._passed_before_fault < fault.after:
                        front._passed_before_fault += 1
                        fault = Fault()
                    elif fault.times is not None:
                        if front._faults_left is None:
                            front._faults_left = fault.times
                        if front._faults_left <= 0:
                            fault = Fault()
                        front._faults_left -= 1
                if fault.delay:
                    front._stopping.wait(fault.delay)
                if fault.gate is not None:
                    fault.gate.hold()
                if fault.kind == "hang":
                    front._stopping.wait(front.hold_seconds)
                    self.close_connection = True
                    return
                if fault.kind == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return
                if fault.kind == "status":
                    self._reply(fault.status or 500, b"<html>upstream failure</html>", "text/html")
                    return
                if fault.kind == "error":
                    payload = json.dumps({"__type": fault.error_code, "message": f"injected {fault.error_code}"})
                    self._reply(fault.status or 400, payload.encode(), "application/x-amz-json-1.1")
                    return
                self._forward(body)

            def _forward(self, body: bytes) -> None:
                upstream = http.client.HTTPConnection(front.upstream.host, front.upstream.port, timeout=10)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                    upstream.request("POST", self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    payload = response.read()
                    if response.status == 200 and b'"Plaintext"' in payload:
                        front.stats.data_keys.append(json.loads(payload)["Plaintext"])
                    self._reply(response.status, payload, response.getheader("Content-Type", "application/json"))
                finally:
                    upstream.close()

            def _reply(self, status: int, payload: bytes, content_type: str) -> None:
                head = (
                    f"HTTP/1.1 {status} {http.client.responses.get(status, 'Status')}\r\n"
                    f"Content-Type: {content_type}\r\nContent-Length: {len(payload)}\r\n"
                    "x-amzn-RequestId: front\r\n\r\n"
                ).encode()
                self.wfile.write(head + payload)
                self.wfile.flush()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> KMSFront:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def set_fault(self, fault: Fault) -> None:
        with self._lock:
            self.fault = fault
            self._faults_left = None
            self._passed_before_fault = 0
            self.stats = FrontStats()


def closed_port_endpoint() -> str:
    """An http endpoint on 127.0.0.1 where nothing listens, so every connection is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
