"""The container image and Kubernetes manifests, checked without Docker or a cluster: they
parse, and their ports, paths, probes and timeouts agree with the daemon's own defaults and
with each other."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcphost.core import config
from mcphost.core.config import ServerConfig, ShutdownConfig
from mcphost.transport.http import HttpApp
from tests.services import REPO

DOCKER = REPO / "packaging" / "docker"
KUBERNETES = REPO / "packaging" / "kubernetes"
PORT = ServerConfig().port
DRAIN = ShutdownConfig().drain_timeout


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in (DOCKER / "Dockerfile").read_text().splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        current += raw.rstrip("\\").strip() + " "
        if not raw.rstrip().endswith("\\"):
            if current.strip():
                instruction, _, arguments = current.strip().partition(" ")
                lines.append((instruction.upper(), arguments.strip()))
            current = ""
    return lines


def test_dockerfile_builds_in_stages_and_runs_unprivileged_with_a_health_check() -> None:
    instructions = dockerfile()
    stages = [args for name, args in instructions if name == "FROM"]
    assert len(stages) >= 2 and stages[0].endswith(" AS build")
    final = instructions[max(i for i, (name, _) in enumerate(instructions) if name == "FROM") :]
    values = {name: args for name, args in final}
    assert values["USER"] not in ("root", "0")
    assert values["EXPOSE"] == str(PORT)
    assert f"http://127.0.0.1:{PORT}/health" in values["HEALTHCHECK"]
    assert values["STOPSIGNAL"] == "SIGTERM"
    env = dict(item.split("=", 1) for item in shlex.split(values["ENV"]))
    assert env["MCPHOST_SERVER__HOST"] == "0.0.0.0"
    assert env["MCPHOST_CONFIG"] == "/etc/mcphost/mcphost.toml"
    assert env["CREDENTIALS_DIRECTORY"] == "/run/secrets/mcphost"
    assert env["STATE_DIRECTORY"] == values["VOLUME"].strip('[]"')


def test_every_mcphost_variable_of_the_image_and_the_pod_sets_a_setting(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    """A variable that sets nothing would be ignored (``serve`` warns, ``check-config`` fails)."""
    final = [args for name, args in dockerfile() if name == "ENV"]
    image = dict(item.split("=", 1) for args in final for item in shlex.split(args))
    pod = {e["name"]: e.get("value", "") for e in mcphost_container(objects).get("env", [])}
    assert any(name.startswith("MCPHOST_") for name in image) and any(name.startswith("MCPHOST_") for name in pod)
    assert config.unknown_environment(image) == [] and config.unknown_environment(pod) == []


def test_dockerfile_copies_only_what_exists_and_the_context_lets_through() -> None:
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for name, args in dockerfile():
        if name == "COPY" and not args.startswith("--from"):
            *sources, _ = args.split()
            for source in sources:
                assert (REPO / source).exists(), source
                assert source.rstrip("/") in allowed, f"{source} is excluded from the build context"


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object in the kustomization, by (kind, name)."""
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    objects = {}
    for resource in kustomization["resources"]:
        for document in yaml.safe_load_all((KUBERNETES / resource).read_text()):
            assert {"apiVersion", "kind", "metadata"} <= set(document), resource
            objects[document["kind"], document["metadata"]["name"]] = document
    assert {p.name for p in KUBERNETES.glob("*.yaml")} == {"kustomization.yaml", *kustomization["resources"]}
    return objects


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict[str, Any]]:
    return manifests()


@pytest.fixture(scope="module")
def host_config(objects: dict[tuple[str, str], dict[str, Any]]) -> config.HostConfig:
    """The ConfigMap's mcphost.toml, validated as mcphost would."""
    return config.parse(objects["ConfigMap", "mcphost-config"]["data"]["mcphost.toml"], "configmap.yaml").config


def mcphost_container(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    pod = objects["Deployment", "mcphost"]["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "mcphost")


def test_probes_and_ports_are_the_daemons(
    objects: dict[tuple[str, str], dict[str, Any]], host_config: config.HostConfig
) -> None:
    container = mcphost_container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == host_config.server.port == PORT
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    # The paths the probes use are the ones HttpApp serves.
    source = Path(HttpApp.__module__.replace(".", "/") + ".py")
    text = (REPO / source).read_text()
    assert '"/health"' in text and '"/ready"' in text
    service = objects["Service", "mcphost"]["spec"]
    assert service["ports"][0]["targetPort"] == "http"
    assert service["selector"] == objects["Deployment", "mcphost"]["spec"]["template"]["metadata"]["labels"]


def test_the_grace_period_outlasts_the_drain(
    objects: dict[tuple[str, str], dict[str, Any]], host_config: config.HostConfig
) -> None:
    pod = objects["Deployment", "mcphost"]["spec"]["template"]["spec"]
    pause = float(mcphost_container(objects)["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert host_config.shutdown.drain_timeout == DRAIN
    assert pod["terminationGracePeriodSeconds"] >= pause + host_config.shutdown.drain_timeout + 5


def test_resources_and_security_are_set(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    for kind, name in [("Deployment", "mcphost"), ("Deployment", "mcphost-redis")]:
        pod = objects[kind, name]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert {"requests", "limits"} <= set(container["resources"]), name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_credentials_and_shared_state_are_wired(
    objects: dict[tuple[str, str], dict[str, Any]], host_config: config.HostConfig
) -> None:
    container = mcphost_container(objects)
    pod = objects["Deployment", "mcphost"]["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    secret = objects["Secret", volumes["credentials"]["secret"]["secretName"]]
    # The image's $CREDENTIALS_DIRECTORY is where the Secret is mounted, and holds what the config reads.
    assert mounts["credentials"] == "/run/secrets/mcphost"
    assert str(host_config.sessions.secret_file) == f"{mounts['credentials']}/session-secret"
    assert {"session-secret", str(host_config.auth.credential)} <= set(secret["stringData"])
    keys = tomllib.loads(secret["stringData"][str(host_config.auth.credential)])
    assert "keys" in keys
    assert mounts["config"] == "/etc/mcphost" and container["args"][-1] == "/etc/mcphost/mcphost.toml"
    assert objects["ConfigMap", volumes["config"]["configMap"]["name"]]
    # Several replicas share Redis, which the config names by its Service.
    assert objects["Deployment", "mcphost"]["spec"]["replicas"] > 1
    assert host_config.state.backend == "redis"
    redis = objects["Service", "mcphost-redis"]["spec"]["ports"][0]["port"]
    assert host_config.state.redis_url == f"redis://mcphost-redis:{redis}/0"
    assert host_config.proxy.trusted and host_config.server.allowed_hosts


def test_the_shipped_proxies_close_idle_connections_before_mcphost_does() -> None:
    """Whoever closes an idle keep-alive connection may close it under a request the other
    side is just sending on it; nginx and Caddy resend no POST. So the proxies must give up
    idle connections to mcphost first."""
    keep_alive = ServerConfig().keep_alive_timeout
    nginx = (REPO / "packaging" / "nginx" / "mcphost.conf").read_text()
    caddy = (REPO / "packaging" / "caddy" / "Caddyfile").read_text()
    timeouts = {
        "nginx keepalive_timeout": re.search(r"^\s*keepalive_timeout (\d+)s;", nginx, re.M),
        "Caddy keepalive": re.search(r"^\s*keepalive (\d+)s$", caddy, re.M),
    }
    for name, found in timeouts.items():
        assert found is not None, f"{name} is not set in seconds"
        assert float(found.group(1)) < keep_alive, f"{name} must be below [server] keep_alive_timeout"
