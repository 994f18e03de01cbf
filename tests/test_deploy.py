"""The team deployment end to end: the official TypeScript MCP client, over HTTPS, through
the shipped Caddy and nginx configs, to two mcphost replicas sharing a real Redis.

Each run initializes, lists and calls tools, watches a slow tool's progress notifications
arrive while the call runs (a proxy that buffered would deliver them all with the result),
then stops the replica that served the session and carries on with the same session on the
other one.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import queue
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mcphost.testing import RunningDaemon, free_port, start_daemon
from tests.authkit import api_key
from tests.services import REPO, RedisServer, node_client, program, redis_server, sign_in, wait_for_port

KEY = api_key("team", ["*"])
CLIENT_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
def replicas(redis: RedisServer, tmp_path: Path) -> Iterator[Callable[[str], list[RunningDaemon]]]:
    """Start two replicas as the README's multi-replica deployment runs them, behind a proxy
    connecting from ``proxy_address``."""
    started: list[RunningDaemon] = []

    def start(proxy_address: str) -> list[RunningDaemon]:
        secret = tmp_path / "session-secret"
        secret.write_text(secrets.token_hex(32))
        config = {
            "plugins": {"enable": ["echo"]},
            "state": {"backend": "redis", "redis_url": redis.url, "key_prefix": f"{tmp_path.name}:"},
            "sessions": {"secret_file": str(secret)},
            "auth": {"keys": {KEY.name: KEY.entry}},
            "proxy": {"trusted": [proxy_address]},
            "shutdown": {"drain_timeout": 5},
        }
        started.extend(start_daemon(tmp_path, config) for _ in range(2))
        return started

    yield start
    for replica in started:
        replica.stop()


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


def test_through_caddy(replicas: Callable[[str], list[RunningDaemon]], tmp_path: Path) -> None:
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
    upstreams = replicas("127.0.0.1")
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
        seen = drive(f"https://localhost:{https_port}/mcp", {"NODE_EXTRA_CA_CERTS": str(root)}, upstreams)
        assert_progress_streamed(seen)
    finally:
        stop(process)
        log.close()


def test_through_nginx(replicas: Callable[[str], list[RunningDaemon]], tmp_path: Path) -> None:
    nginx = program("nginx", "nginx")
    # nginx connects to mcphost from its own address (the test's proxy_bind below), so the
    # client address in the logs can only have come from X-Forwarded-For.
    upstreams = replicas("127.0.0.3")
    ca, cert, key = make_certificates(tmp_path)
    https_port, http_port = free_port(), free_port()
    proxy_conf = tmp_path / "mcphost-proxy.conf"
    proxy_conf.write_text((REPO / "packaging" / "nginx" / "mcphost-proxy.conf").read_text())
    servers = "".join(f"    server 127.0.0.1:{r.port} max_fails=1 fail_timeout=10s;\n" for r in upstreams)
    site = render(
        REPO / "packaging" / "nginx" / "mcphost.conf",
        {
            "    server 127.0.0.1:8080 max_fails=1 fail_timeout=10s;\n": servers,
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
    proxy_bind 127.0.0.3;
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
        seen = drive(f"https://localhost:{https_port}/mcp", {"NODE_EXTRA_CA_CERTS": str(ca)}, upstreams)
        assert_progress_streamed(seen)
    finally:
        stop(process)


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
