"""Token mode and TLS in the chart: the Secrets an operator makes (root key, users
file, certificate) are mounted where the rendered configuration names them; HTTPS
reaches the probes, the Ingress backend and the ServiceMonitor; a TLS-terminating
ingress is the other way; values that would not start are refused at render; and
the README's `helm upgrade --install` with auth renders and validates. (Running it
is in test_run.py, Helm as a client of it in test_helm_registry.py.)"""

from __future__ import annotations

import re

import helm_python as helm
import kubernetes_validate
import pytest
import tomllib

from conftest import (
    CHART,
    KUBERNETES_VERSION,
    deep_merge,
    find,
    load_values,
    render,
    render_objects,
)
from test_chart import config_toml, validate_service_monitor


SECRETS_DIR = "/var/run/secrets/packs-registry"


def test_token_mode_over_tls_mounts_the_secrets_the_configuration_names():
    objects = render_objects(load_values("token-tls"))
    config = tomllib.loads(config_toml(objects))
    assert config["auth"]["mode"] == "token"
    assert config["auth"]["service"] == "packs.example.com"
    assert config["auth"]["anonymous_pull"] == ["public/"]
    assert config["auth"]["protect_metrics"] is True
    assert config["auth"]["robots"][0]["grants"] == ["packs/:pull"]
    assert config["auth"]["root_key_file"] == f"{SECRETS_DIR}/root-key/root.key"
    assert config["auth"]["users_file"] == f"{SECRETS_DIR}/users/users.toml"
    assert config["server"]["tls"] == {
        "cert": f"{SECRETS_DIR}/tls/tls.crt", "key": f"{SECRETS_DIR}/tls/tls.key"}
    assert "behind_tls_proxy" not in config["server"]
    # Nothing secret in the ConfigMap: only the paths.
    assert "root_key" not in config["auth"]

    pod = find(objects, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    # Each file the configuration names is a key of a mounted Secret, read-only.
    for path, secret, key in [
        (config["auth"]["root_key_file"], "packs-root-key", "root.key"),
        (config["auth"]["users_file"], "packs-users", "users"),
        (config["server"]["tls"]["cert"], "packs-tls", "tls.crt"),
        (config["server"]["tls"]["key"], "packs-tls", "tls.key"),
    ]:
        folder, name = path.rsplit("/", 1)
        mount = mounts[folder]
        assert mount["readOnly"] is True
        source = volumes[mount["name"]]["secret"]
        assert source["secretName"] == secret
        assert {"key": key, "path": name} in source["items"]
        # The pod's group reads it; others do not.
        assert source["defaultMode"] == 0o440
    # ingress-nginx speaks HTTPS to a registry that serves it.
    ingress = find(objects, "Ingress")
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "HTTPS"


def test_token_mode_behind_a_tls_terminating_ingress():
    values = {
        "config": {"auth": {"mode": "token"}, "server": {"behind_tls_proxy": True}},
        "auth": {"rootKey": {"existingSecret": "packs-root-key"}},
        "ingress": {"enabled": True},
        "serviceMonitor": {"enabled": True},
    }
    objects = render_objects(values)
    config = tomllib.loads(config_toml(objects))
    assert config["server"]["behind_tls_proxy"] is True
    assert "tls" not in config["server"]
    assert "users_file" not in config["auth"]
    container = find(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "scheme" not in container["readinessProbe"]["httpGet"]
    assert [m["mountPath"] for m in container["volumeMounts"] if "secrets" in m["mountPath"]] == [
        f"{SECRETS_DIR}/root-key"]
    annotations = find(objects, "Ingress")["metadata"]["annotations"]
    assert "nginx.ingress.kubernetes.io/backend-protocol" not in annotations
    assert "scheme" not in find(objects, "ServiceMonitor")["spec"]["endpoints"][0]
    for obj in objects:
        if obj["apiVersion"] != "monitoring.coreos.com/v1":
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_service_monitor_scrapes_over_https_with_credentials():
    values = deep_merge(load_values("token-tls"), {"serviceMonitor": {
        "enabled": True,
        "tlsConfig": {"ca": {"secret": {"name": "packs-ca", "key": "ca.crt"}},
                      "serverName": "packs.example.com"},
        "authorization": {"type": "Bearer", "credentials": {"name": "packs-metrics", "key": "token"}},
    }})
    monitor = find(render_objects(values), "ServiceMonitor")
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"]["serverName"] == "packs.example.com"
    assert endpoint["authorization"]["credentials"] == {"name": "packs-metrics", "key": "token"}
    validate_service_monitor(monitor)


@pytest.mark.parametrize(
    "values, message",
    [
        # Token mode signs tokens with a root key from a Secret.
        ({"config": {"auth": {"mode": "token"}}, "tls": {"existingSecret": "packs-tls"}},
         "auth.rootKey.existingSecret"),
        # And never takes passwords in clear: TLS here or at the ingress.
        ({"config": {"auth": {"mode": "token"}}, "auth": {"rootKey": {"existingSecret": "k"}}},
         "tls.existingSecret, or config.server.behind_tls_proxy"),
    ],
)
def test_incomplete_token_mode_values_are_refused(values, message):
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)


def test_open_mode_mounts_no_secret():
    for name in ("default", "embedded", "production"):
        objects = render_objects(load_values(name))
        pod = find(objects, "Deployment")["spec"]["template"]["spec"]
        assert not [v for v in pod["volumes"] if "secret" in v]
        assert "auth" not in tomllib.loads(config_toml(objects))


def readme_upgrades() -> list[list[str]]:
    """The `--set` arguments of each `helm upgrade --install` of the README."""
    readme = (CHART.parents[1] / "README.md").read_text()
    commands, current = [], None
    for line in readme.splitlines():
        if line.startswith("helm upgrade --install "):
            current = []
            commands.append(current)
        if current is not None:
            current += [a.strip("'") for a in line.rstrip("\\").split()]
            if not line.endswith("\\"):
                current = None
    return [[c[i + 1] for i, a in enumerate(c) if a == "--set"] for c in commands]


def test_readme_token_mode_install_renders_and_validates():
    (sets,) = readme_upgrades()
    values = helm.parse_set_string(",".join(sets))
    objects = render_objects(values)
    config = tomllib.loads(config_toml(objects))
    assert config["auth"]["mode"] == "token"
    assert config["auth"]["anonymous_pull"] == ["public/"]
    assert config["auth"]["root_key_file"].endswith("/root.key")
    assert config["server"]["tls"]["cert"].endswith("/tls.crt")
    for obj in objects:
        if obj["apiVersion"] != "monitoring.coreos.com/v1":
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
