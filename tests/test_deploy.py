"""The team deployment end to end: the official TypeScript MCP client, over HTTPS, through
the shipped Caddy and nginx configs, to two mcphost replicas sharing a real Redis.

Each run initializes, lists and calls tools, watches a slow tool's progress notifications
arrive while the call runs (a proxy that buffered would deliver them all with the result),
then stops the replica that served the session and carries on with the same session on the
other one.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import queue
import secrets
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mcphost.testing import RunningDaemon, free_port, start_daemon, stateless_request
from tests.authkit import api_key, bearer
from tests.services import (
    REPO,
    RedisServer,
    held_listener,
    node_client,
    program,
    redis_server,
    sign_in,
    start_on_socket,
    wait_for_port,
)
from tests.sessionkit import open_session, result_of, rpc

KEY = api_key("team", ["*"])
CLIENT_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


class Replicas:
    """Two replicas as docs/deploying/replicas.md runs them, sharing Redis and the session
    secret, behind a proxy connecting from ``proxy_address``; each on a socket it
    binds itself, or (``held``) on one the test holds, as mcphost.socket would."""

    def __init__(self, redis: RedisServer, workdir: Path):
        self.redis, self.workdir = redis, workdir
        self.running: list[RunningDaemon] = []
        self.sockets: list[socket.socket] = []
        self.config: dict[str, Any] = {}
        self._starts = 0

    def start(self, proxy_address: str, *, held: bool = False) -> list[RunningDaemon]:
        secret = self.workdir / "session-secret"
        secret.write_text(secrets.token_hex(32))
        self.config = {
            "plugins": {"enable": ["echo"]},
            "state": {"backend": "redis", "redis_url": self.redis.url, "key_prefix": f"{self.workdir.name}:"},
            "sessions": {"secret_file": str(secret)},
            "auth": {"keys": {KEY.name: KEY.entry}},
            "proxy": {"trusted": [proxy_address]},
            "shutdown": {"drain_timeout": 5},
        }
        if held:
            self.config["admin"] = {"enabled": False}  # one fixed port: it would clash
            self.sockets = [held_listener() for _ in range(2)]
            self.running = [self._start_on_socket(index) for index in range(2)]
        else:
            self.running = [start_daemon(self.workdir, self.config) for _ in range(2)]
        return self.running

    def restart(self, index: int) -> RunningDaemon:
        """``systemctl restart mcphost`` on replica ``index``: it drains and stops, and the next
        process takes over its held socket."""
        old = self.running[index]
        assert old.stop() == 0, old.logs()[-4000:]
        self.running[index] = self._start_on_socket(index)
        return self.running[index]

    def _start_on_socket(self, index: int) -> RunningDaemon:
        self._starts += 1
        name = f"replica-{index}-{self._starts}"
        return start_on_socket(self.sockets[index], self.workdir, name, self.config, self.workdir / f"state-{index}")

    def stop(self) -> None:
        for replica in self.running:
            replica.stop()
        for listener in self.sockets:
            listener.close()


@pytest.fixture
def replicas(redis: RedisServer, tmp_path: Path) -> Iterator[Replicas]:
    started = Replicas(redis, tmp_path)
    yield started
    started.stop()


class NodeClient:
    """``tests/e2e/client.mjs`` running, its JSON lines read as they come."""

    def __init__(self, url: str, env: dict[str, str]):
        node, directory = node_client()
        self.process = subprocess.Popen(
            [node, str(directory / "client.mjs"), url],
            cwd=directory,
            env={**os.environ, **env, "MCPHOST_TOKEN": KEY.token},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.seen: list[dict[str, Any]] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def until(self, event: str) -> dict[str, Any]:
        """Every line up to the first ``event``; fails on an error or the client's exit."""
        while True:
            try:
                line = self._lines.get(timeout=CLIENT_TIMEOUT)
            except queue.Empty:
                raise AssertionError(f"no {event!r} from the client within {CLIENT_TIMEOUT}s: {self.seen}") from None
            if line is None:
                raise AssertionError(f"the client exited before {event!r}: {self.seen}")
            try:
                record = json.loads(line)
            except ValueError:
                record = {"event": "output", "line": line.rstrip()}
            self.seen.append(record)
            assert record["event"] != "error", record["message"]
            if record["event"] == event:
                return record

    def resume(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def drive(url: str, env: dict[str, str], replicas: list[RunningDaemon]) -> list[dict[str, Any]]:
    """The scenario of this module's docstring; returns what the client saw."""
    # A client added without its key (Claude Code without --header) goes looking for OAuth:
    # what it finds through the proxy tells it that a key is wanted, and how to send one.
    without_key = sign_in(url, env)
    assert without_key["event"] == "error" and "takes API keys" in without_key["message"], without_key
    assert '--header "Authorization: Bearer <key>"' in without_key["message"]
    client = NodeClient(url, env)
    try:
        session = client.until("connected")["sessionId"]
        assert session and "." in session  # a signed id from mcphost
        assert {"echo_echo", "echo_slow"} <= set(client.until("tools")["names"])
        assert client.until("echo")["result"] == {"result": "hello"}
        client.until("slow")
        client.until("waiting")

        # Stop the replica that ran the slow call; the session goes on on the other.
        holder = replica_that_logged(
            replicas, lambda r: r.get("session_id") == session and r.get("tool") == "echo_slow"
        )
        survivor = next(r for r in replicas if r is not holder)
        assert holder.stop() == 0
        client.resume()
        after = client.until("echo_after")
        assert after["result"] == {"result": "after"}
        assert after["sessionId"] == session  # the same session, never re-initialized
        client.until("done")
        assert client.process.wait(10) == 0
        served = [r for r in survivor.log_records() if r.get("event") == "request" and r.get("session_id") == session]
        assert any(r.get("tool") == "echo_echo" for r in served)
        # The client's event stream (GET), cut when the holder drained, reconnected before the
        # client gave up (after two failed attempts): once the holder answers 503 or refuses
        # connections, the proxy sends the next attempt to the survivor.
        errors = [r["message"] for r in client.seen if r["event"] == "transport_error"]
        assert not [e for e in errors if e.startswith("Maximum reconnection attempts")], errors
        # The node client's address, from X-Forwarded-For (nginx connects from 127.0.0.3).
        assert {r["client"] for r in served} == {"127.0.0.1"}
        return client.seen
    finally:
        client.close()


def replica_that_logged(
    replicas: list[RunningDaemon], predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> RunningDaemon:
    """The replica with a log record matching ``predicate``, waiting for it to be written if
    need be: a request's line is written just after its response is sent, so the client can
    see the answer before the line is there."""
    deadline = time.monotonic() + timeout
    while True:
        for replica in replicas:
            if any(predicate(r) for r in replica.log_records()):
                return replica
        if time.monotonic() > deadline:
            raise AssertionError(f"no replica logged a matching record within {timeout}s")
        time.sleep(0.02)


def assert_progress_streamed(seen: list[dict[str, Any]]) -> None:
    """The slow call's ten progress notifications arrived spread over the call, the first
    long before the result: nothing between mcphost and the client buffered the stream."""
    start = next(r["t"] for r in seen if r["event"] == "slow_start")
    end = next(r["t"] for r in seen if r["event"] == "slow")
    times = [r["t"] for r in seen if r["event"] == "progress"]
    assert [r["progress"] for r in seen if r["event"] == "progress"] == list(range(1, 11))
    duration = end - start
    assert (times[0] - start) < 0.4 * duration, (times, start, end)
    assert (times[-1] - times[0]) > 0.5 * duration, (times, start, end)


def render(template: Path, replacements: dict[str, str]) -> str:
    """The shipped config with each ``old`` replaced by ``new``; each must be there exactly once,
    so a change to the shipped file that this test no longer covers fails here."""
    text = template.read_text()
    for old, new in replacements.items():
        assert text.count(old) == 1, f"{template.name}: expected {old!r} exactly once"
        text = text.replace(old, new)
    return text


@contextlib.contextmanager
def caddy_in_front(upstreams: list[RunningDaemon], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The shipped Caddyfile in front of ``upstreams``, with a local CA: (MCP URL, CA root)."""
    caddy = program("caddy", "caddy")
    http_port, https_port = free_port(), free_port()
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text(
        render(
            REPO / "packaging" / "caddy" / "Caddyfile",
            {
                # A local CA instead of a public one (this machine has no public name), not
                # added to the system's trust store; the client trusts its root below.
                "\t# email ops@example.com\n": f"\tadmin off\n\tlocal_certs\n\tskip_install_trust\n"
                f"\thttp_port {http_port}\n\thttps_port {https_port}\n",
            },
        )
    )
    data = tmp_path / "caddy-data"
    env = {
        **os.environ,
        "XDG_DATA_HOME": str(data),
        "XDG_CONFIG_HOME": str(tmp_path / "caddy-config"),
        "MCPHOST_SITE": f"localhost:{https_port}",
        "MCPHOST_UPSTREAMS": " ".join(f"127.0.0.1:{r.port}" for r in upstreams),
    }
    log = (tmp_path / "caddy.log").open("wb")
    process = subprocess.Popen(
        [caddy, "run", "--config", str(caddyfile), "--adapter", "caddyfile"], env=env, stdout=log, stderr=log
    )
    try:
        wait_for_port(https_port, timeout=20)
        root = data / "caddy" / "pki" / "authorities" / "local" / "root.crt"
        # Node reads its extra CA once, at start; Caddy issues the site's certificate just after listening.
        wait_for_file(root)
        wait_for_file(data / "caddy" / "certificates" / "local" / "localhost" / "localhost.crt")
        yield f"https://localhost:{https_port}/mcp", root
    finally:
        stop(process)
        log.close()


NGINX_ADDRESS = "127.0.0.3"
"""nginx connects to mcphost from its own address (the test's proxy_bind), so the client
address in the logs can only have come from X-Forwarded-For."""


@contextlib.contextmanager
def nginx_in_front(upstreams: list[RunningDaemon], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The shipped nginx site in front of ``upstreams``, with a test CA: (MCP URL, CA)."""
    nginx = program("nginx", "nginx")
    ca, cert, key = make_certificates(tmp_path)
    https_port, http_port = free_port(), free_port()
    proxy_conf = tmp_path / "mcphost-proxy.conf"
    proxy_conf.write_text((REPO / "packaging" / "nginx" / "mcphost-proxy.conf").read_text())
    shipped = (REPO / "packaging" / "nginx" / "mcphost.conf").read_text()
    server = next(line for line in shipped.splitlines(keepends=True) if line.startswith("    server 127.0.0.1:8080"))
    servers = "".join(server.replace("127.0.0.1:8080", f"127.0.0.1:{r.port}") for r in upstreams)
    site = render(
        REPO / "packaging" / "nginx" / "mcphost.conf",
        {
            server: servers,
            "    listen 80;\n    listen [::]:80;\n": f"    listen 127.0.0.1:{http_port};\n",
            "    listen 443 ssl http2;\n    listen [::]:443 ssl http2;\n": (
                f"    listen 127.0.0.1:{https_port} ssl http2;\n"
            ),
            "/etc/ssl/certs/mcp.example.com.pem": str(cert),
            "/etc/ssl/private/mcp.example.com.key": str(key),
        },
    ).replace("/etc/nginx/mcphost-proxy.conf", str(proxy_conf))
    (tmp_path / "mcphost.conf").write_text(site)
    temp = tmp_path / "nginx-temp"
    temp.mkdir()
    # Everything under the test's own directory: no /var/log, /run or /var/lib writes, and
    # one process (as whoever runs the test), so the files it reads need no other owner.
    (tmp_path / "nginx.conf").write_text(
        f"""daemon off;
master_process off;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/nginx-error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {tmp_path}/nginx-access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    proxy_bind {NGINX_ADDRESS};
    include {tmp_path}/mcphost.conf;
}}
"""
    )
    command = [nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "nginx-error.log")]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(https_port)
        yield f"https://localhost:{https_port}/mcp", ca
    finally:
        stop(process)


def test_through_caddy(replicas: Replicas, tmp_path: Path) -> None:
    upstreams = replicas.start("127.0.0.1")
    with caddy_in_front(upstreams, tmp_path) as (url, ca):
        seen = drive(url, {"NODE_EXTRA_CA_CERTS": str(ca)}, upstreams)
    assert_progress_streamed(seen)


def test_through_nginx(replicas: Replicas, tmp_path: Path) -> None:
    upstreams = replicas.start(NGINX_ADDRESS)
    with nginx_in_front(upstreams, tmp_path) as (url, ca):
        seen = drive(url, {"NODE_EXTRA_CA_CERTS": str(ca)}, upstreams)
    assert_progress_streamed(seen)


@pytest.mark.parametrize("proxy", ["caddy", "nginx"])
def test_a_rolling_restart_under_load_fails_no_call(replicas: Replicas, tmp_path: Path, proxy: str) -> None:
    """Clients keep calling through the proxy (2026-07-28 requests, and 2025-11-25 sessions)
    while each replica in turn is restarted as the documented procedure says (under systemd,
    its socket unit holding the port; the next once the proxy sends the restarted one work
    again). Not one call fails."""
    in_front = caddy_in_front if proxy == "caddy" else nginx_in_front
    upstreams = replicas.start("127.0.0.1" if proxy == "caddy" else NGINX_ADDRESS, held=True)
    with in_front(upstreams, tmp_path) as (url, ca):
        wait_until_ready_through(url, ca)
        with CallLoops(url, ca) as loops:
            loops.wait_for_calls(50)
            for index in range(len(upstreams)):
                restarted = replicas.restart(index)
                # The proxy sends the restarted replica work again before the next goes down.
                replica_that_logged([restarted], lambda r: r.get("event") == "request" and r.get("status") == 200, 60)
            loops.wait_for_calls(loops.calls + 50)
    assert loops.failures == []
    # The sessions went on in the restarted processes.
    assert any(r.get("event") == "session rebuilt" for replica in replicas.running for r in replica.log_records())


def wait_until_ready_through(url: str, ca: Path, timeout: float = CLIENT_TIMEOUT) -> None:
    """Until the proxy at ``url`` passes ``/ready`` on to a replica that answers 200 (its
    health checks see the replicas up): load measured before that measures the proxy's start."""
    ready = url.replace("/mcp", "/ready")
    deadline = time.monotonic() + timeout
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=5) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if client.get(ready).status_code == 200:
                    return
            assert time.monotonic() < deadline, f"{ready} did not answer 200 within {timeout}s"
            time.sleep(0.1)


class CallLoops:
    """Threads calling ``echo_echo`` through ``url`` until closed: three with 2026-07-28
    requests, three each in a 2025-11-25 session of its own; every answer is checked."""

    def __init__(self, url: str, ca: Path):
        self.url, self.ca = url, ca
        self.calls = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(n < 3,)) for n in range(6)]

    def __enter__(self) -> CallLoops:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(CLIENT_TIMEOUT)

    def wait_for_calls(self, count: int, timeout: float = CLIENT_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while self.calls < count:
            assert time.monotonic() < deadline, f"{self.calls} calls answered of {count}: {self.failures[:5]}"
            assert not self.failures, self.failures[:5]
            time.sleep(0.05)

    def _loop(self, stateless: bool) -> None:
        tls = ssl.create_default_context(cafile=str(self.ca))
        with httpx.Client(verify=tls, timeout=CLIENT_TIMEOUT, headers=bearer(KEY.token)) as client:
            try:
                headers = {} if stateless else open_session(self.url, client=client)
            except (httpx.HTTPError, AssertionError, KeyError) as error:
                self.failures.append(f"opening a session: {error!r}")
                return
            n = 0
            while not self._stop.is_set():
                n += 1
                text = f"call {n}"
                if stateless:
                    body, headers = stateless_request("tools/call", {"name": "echo_echo", "arguments": {"text": text}})
                else:
                    body = rpc("tools/call", {"name": "echo_echo", "arguments": {"text": text}}, n + 2)
                kind = "stateless" if stateless else "session"
                try:
                    response = client.post(self.url, json=body, headers=headers)
                except httpx.HTTPError as error:
                    self.failures.append(f"{kind}: {error!r}")
                    continue
                try:
                    answer = result_of(response) if response.status_code == 200 else None
                except (ValueError, StopIteration):
                    answer = None
                if answer is None or answer.get("result", {}).get("structuredContent") != {"result": text}:
                    self.failures.append(
                        f"{kind}: {response.status_code} {dict(response.headers)} {response.text[:300]!r}"
                    )
                    continue
                self.calls += 1


def wait_for_file(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout}s"
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a proxy without waiting for its graceful shutdown (open event streams hold it up)."""
    process.terminate()
    try:
        process.wait(3)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate it signed for localhost: (CA cert, cert, key) files."""
    now = datetime.datetime.now(datetime.UTC)
    period = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))

    def certificate(subject: str, key: Any, issuer: str, signer: Any, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(period[0])
            .not_valid_after(period[1])
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate("mcphost test CA", ca_key, "mcphost test CA", ca_key, True)
    leaf = certificate("localhost", leaf_key, "mcphost test CA", ca_key, False)
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths
