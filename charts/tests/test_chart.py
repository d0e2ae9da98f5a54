"""The chart renders, lints and validates: `helm lint` and `helm template` through
Helm's library for the default values, the embedded mode and a full production
values file; every object checked against the Kubernetes schemas (strict); the
registry configuration it renders accepted by `packs-registry config check`; and
the objects have the shape the deployment relies on."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import subprocess

import helm_python as helm
import kubernetes_validate
import pytest
import tomllib

from conftest import (
    CHART,
    KUBERNETES_VERSION,
    NAMESPACE,
    RELEASE,
    VALUE_SETS,
    deep_merge,
    find,
    hook_events,
    kinds,
    load_values,
    missing,
    render,
    render_objects,
    run,
)

FULLNAME = f"{RELEASE}-packs-registry"
SETS = sorted(VALUE_SETS)


@pytest.mark.parametrize("name", SETS)
def test_lint_is_clean(name):
    report = helm.lint(
        str(CHART), load_values(name), strict=True, namespace=NAMESPACE,
        kube_version=f"v{KUBERNETES_VERSION}",
    )
    assert report["errors"] == []
    # Severity 2 and 3 are warnings and errors; 1 (info) is only "icon is recommended".
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert serious == [], serious


@pytest.mark.parametrize("name", SETS)
def test_install_dry_run_accepts_the_values(name):
    # What `helm install --dry-run=client` does: also checks the chart's kubeVersion.
    with helm.Config(storage_driver="memory", namespace=NAMESPACE) as config:
        release = config.install(str(CHART), RELEASE, load_values(name), dry_run="client")
    assert "kind: Deployment" in release["manifest"]


def validate_service_monitor(obj: dict) -> None:
    """ServiceMonitor is a prometheus-operator CRD, outside the Kubernetes schemas:
    checked with the npm package @kubernetes-models/prometheus-operator (types and
    patterns of the CRD; it does not refuse unknown fields)."""
    modules = os.environ.get("PACKS_CHART_TESTS_NODE_MODULES", "")
    if not modules or not pathlib.Path(modules).is_dir():
        missing("no @kubernetes-models/prometheus-operator (PACKS_CHART_TESTS_NODE_MODULES)")
    script = (
        'import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/'
        'monitoring.coreos.com/v1/ServiceMonitor";\n'
        "let input = ''; process.stdin.on('data', d => input += d);\n"
        "process.stdin.on('end', () => { new ServiceMonitor(JSON.parse(input)).validate(); });\n"
    )
    path = pathlib.Path(modules).parent / "validate-servicemonitor.mjs"
    path.write_text(script)
    done = subprocess.run(
        ["node", str(path)], input=json.dumps(obj), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name", SETS)
def test_every_object_matches_the_kubernetes_schemas(name):
    objects = render_objects(load_values(name))
    assert objects
    for obj in objects:
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            validate_service_monitor(obj)
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {e.message} at {list(e.path)}")


def test_a_wrong_object_fails_the_schema_check():
    # The validation above can fail: an unknown field in a rendered Deployment.
    deployment = find(render_objects(None), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_a_wrong_service_monitor_fails_its_check():
    monitor = find(render_objects(load_values("production")), "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["interval"] = "every 30 seconds"
    with pytest.raises(AssertionError):
        validate_service_monitor(monitor)


def config_toml(objects: list[dict], name: str = FULLNAME) -> str:
    return find(objects, "ConfigMap", name)["data"]["registry.toml"]


@pytest.mark.parametrize("name", SETS)
def test_rendered_configuration_passes_config_check(name, registry_bin, tmp_path):
    objects = render_objects(load_values(name))
    text = config_toml(objects)
    path = tmp_path / "registry.toml"
    path.write_text(text)
    done = run([str(registry_bin), "config", "check", str(path)], env={"PATH": os.environ["PATH"]})
    assert done.returncode == 0, done.stderr + "\n" + text
    if (load_values(name) or {}).get("mode", "production") == "production":
        # The Job reads the same configuration.
        assert config_toml(objects, f"{FULLNAME}-migrate") == text


def test_configuration_carries_the_values_and_the_chart_keys():
    config = tomllib.loads(config_toml(render_objects(load_values("production"))))
    assert config["server"]["listen"] == "0.0.0.0:5000"
    assert config["server"]["data_dir"] == "/var/lib/packs-registry"
    assert config["server"]["shutdown_timeout_secs"] == 40
    assert config["storage"]["backend"] == "s3"
    assert config["storage"]["s3"]["bucket"] == "packs-prod"
    # Integers stay integers (Helm's toToml would write 21474836480 as 2.147483648e+10).
    assert config["limits"]["max_blob_bytes"] == 21474836480
    assert config["log"]["level"] == "packs_registry=debug,info"
    # The Job migrates, so replicas do not.
    assert config["metadata"]["migrate_on_start"] is False
    # Secrets never reach the ConfigMap.
    assert "url" not in config["metadata"]
    assert "s3cret" not in config_toml(render_objects(load_values("production")))

    embedded = tomllib.loads(config_toml(render_objects(load_values("embedded"))))
    assert embedded["storage"] == {"backend": "fs"}
    assert "migrate_on_start" not in embedded.get("metadata", {})


def test_migrate_on_start_follows_the_values_when_given():
    values = deep_merge(load_values("production"), {"config": {"metadata": {"migrate_on_start": True}}})
    config = tomllib.loads(config_toml(render_objects(values)))
    assert config["metadata"]["migrate_on_start"] is True
    values = deep_merge(load_values("production"), {"migrations": {"enabled": False}})
    objects = render_objects(values)
    assert "Job" not in kinds(objects)
    assert "migrate_on_start" not in tomllib.loads(config_toml(objects))["metadata"]


def test_default_values_are_production_with_existing_secrets():
    objects = render_objects(None)
    assert kinds(objects) == [
        "ConfigMap", "ConfigMap", "Deployment", "Job", "PodDisruptionBudget", "Service",
        "ServiceAccount",
    ]
    deployment = find(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PACKS__METADATA__URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "packs-registry-postgres", "key": "url"}
    assert env["PACKS__STORAGE__S3__SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "packs-registry-s3", "key": "secret-access-key"}


def test_embedded_mode_is_one_replica_on_a_volume():
    objects = render_objects(load_values("embedded"))
    assert kinds(objects) == [
        "ConfigMap", "Deployment", "Ingress", "PersistentVolumeClaim", "Service", "ServiceAccount"]
    deployment = find(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert "env" not in pod["containers"][0]
    data = next(v for v in pod["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"]["claimName"] == FULLNAME
    pvc = find(objects, "PersistentVolumeClaim")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert pvc["spec"]["storageClassName"] == "fast"
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # Ignored there: replicaCount, autoscaling and the PodDisruptionBudget.
    values = deep_merge(load_values("embedded"), {"replicaCount": 4, "autoscaling": {"enabled": True}})
    objects = render_objects(values)
    assert find(objects, "Deployment")["spec"]["replicas"] == 1
    assert "HorizontalPodAutoscaler" not in kinds(objects)


def test_full_production_objects():
    objects = render_objects(load_values("production"))
    assert kinds(objects) == [
        "ConfigMap", "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Ingress", "Job",
        "PodDisruptionBudget", "Secret", "Secret", "Service", "ServiceAccount", "ServiceMonitor",
    ]
    deployment = find(objects, "Deployment")
    # The autoscaler owns the replica count.
    assert "replicas" not in deployment["spec"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"].endswith(
        "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
    assert pod["imagePullSecrets"] == [{"name": "platform-pull"}]
    assert pod["priorityClassName"] == "platform-critical"
    secret = find(objects, "Secret", FULLNAME)
    assert base64.b64decode(secret["data"]["postgres-url"]).decode().startswith("postgres://")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/config" in annotations and "checksum/secret" in annotations
    hpa = find(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] == 3 and hpa["spec"]["maxReplicas"] == 12
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu", "memory"]
    assert find(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    monitor = find(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_probes_ports_and_security():
    for name in SETS:
        deployment = find(render_objects(load_values(name)), "Deployment")
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["ports"] == [{"name": "http", "containerPort": 5000, "protocol": "TCP"}]
        # Over HTTPS when the registry serves TLS itself.
        scheme = {"scheme": "HTTPS"} if (load_values(name) or {}).get("tls") else {}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http", **scheme}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http", **scheme}
        assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http", **scheme}
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        # With a read-only root, every folder the registry writes is a volume.
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/var/lib/packs-registry", "/tmp", "/etc/packs-registry"} <= mounts


@pytest.mark.parametrize("name", SETS)
def test_termination_grace_outlasts_the_drain(name):
    values = load_values(name) or {}
    deployment = find(render_objects(values), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    drain = values.get("config", {}).get("server", {}).get("shutdown_timeout_secs", 30)
    pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > drain + pre_stop


def test_a_grace_period_shorter_than_the_drain_is_refused():
    values = {"config": {"server": {"shutdown_timeout_secs": 60}}, "terminationGracePeriodSeconds": 30}
    with pytest.raises(helm.HelmRenderError, match="terminationGracePeriodSeconds"):
        render(values)
    # Derived, it follows the drain.
    values = {"config": {"server": {"shutdown_timeout_secs": 120}}}
    pod = find(render_objects(values), "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 120 + 5 + 10


@pytest.mark.parametrize(
    "values, message",
    [
        ({"postgres": {"existingSecret": ""}}, "postgres.url or postgres.existingSecret"),
        ({"config": {"storage": {"s3": {"bucket": ""}}}}, "config.storage.s3.bucket"),
        ({"s3": {"accessKeyId": "k"}}, "s3.secretAccessKey"),
    ],
)
def test_incomplete_production_values_are_refused(values, message):
    with pytest.raises(helm.HelmRenderError, match=message):
        render(values)


def test_migrations_job_is_a_hook_that_runs_before_the_release():
    objects = render_objects(load_values("production"))
    migrate = f"{FULLNAME}-migrate"
    job = find(objects, "Job", migrate)
    hooked = [o for o in objects if hook_events(o)]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in hooked) == [
        ("ConfigMap", migrate), ("Job", migrate), ("Secret", migrate)]
    for obj in hooked:
        assert hook_events(obj) == {"pre-install", "pre-upgrade"}
    weight = lambda o: int(o["metadata"]["annotations"]["helm.sh/hook-weight"])  # noqa: E731
    # Its ConfigMap and Secret exist before it starts.
    assert weight(find(objects, "ConfigMap", migrate)) < weight(job)
    assert weight(find(objects, "Secret", migrate)) < weight(job)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "migrate"
    env = {e["name"]: e for e in container["env"]}
    assert env["PACKS__METADATA__URL"]["valueFrom"]["secretKeyRef"]["name"] == migrate
    assert "PACKS__STORAGE__S3__ACCESS_KEY_ID" not in env
    # Without an inline URL the Job reads the existing Secret, and no hook Secret exists.
    objects = render_objects(None)
    assert [o["kind"] for o in objects if hook_events(o)] == ["ConfigMap", "Job"]


def labels_match(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_service_and_budget_select_the_serving_pods_only():
    objects = render_objects(load_values("production"))
    serving = find(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    migrating = find(objects, "Job")["spec"]["template"]["metadata"]["labels"]
    service = find(objects, "Service")["spec"]["selector"]
    budget = find(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
    deployment = find(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    for selector in (service, budget, deployment):
        assert labels_match(selector, serving)
        assert not labels_match(selector, migrating)
    monitor = find(objects, "ServiceMonitor")["spec"]["selector"]["matchLabels"]
    assert labels_match(monitor, find(objects, "Service")["metadata"]["labels"])


def test_ingress_lets_large_uploads_stream():
    ingress = find(render_objects(load_values("production")), "Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
    assert annotations["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": FULLNAME, "port": {"name": "http"}}
    # A default annotation can be dropped.
    values = deep_merge(load_values("production"), {
        "ingress": {"defaultAnnotations": {"nginx.ingress.kubernetes.io/proxy-buffering": None}}})
    annotations = find(render_objects(values), "Ingress")["metadata"]["annotations"]
    assert "nginx.ingress.kubernetes.io/proxy-buffering" not in annotations


def readme_installs() -> list[list[str]]:
    """The `--set` arguments of each `helm install` of the README."""
    readme = (CHART.parents[1] / "README.md").read_text()
    commands, current = [], None
    for line in readme.splitlines():
        if line.startswith("helm install "):
            current = []
            commands.append(current)
        if current is not None:
            current += [a.strip("'") for a in line.rstrip("\\").split()]
            if not line.endswith("\\"):
                current = None
    return [[c[i + 1] for i, a in enumerate(c) if a == "--set"] for c in commands]


def test_readme_quick_starts_render_and_validate():
    installs = readme_installs()
    assert len(installs) == 2
    for sets in installs:
        # One expression, as Helm joins repeated --set flags (list indexes merge).
        values = helm.parse_set_string(",".join(sets))
        for obj in render_objects(values):
            if obj["apiVersion"] != "monitoring.coreos.com/v1":
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_garbage_collection_and_retention_render_and_pass_config_check(registry_bin, tmp_path):
    values = deep_merge(
        load_values("production"),
        {
            "config": {
                "gc": {"interval_secs": 600, "grace_secs": 7200, "keep_orphaned_referrers": True},
                "retention": [
                    {"pack_type": "policy", "keep_newest": 10, "protect": ["1.*", "*-lts"]},
                    {"repository_prefix": "packs/ci-", "drop_prereleases_after_days": 7},
                ],
            }
        },
    )
    text = config_toml(render_objects(values))
    config = tomllib.loads(text)
    assert config["gc"] == {"interval_secs": 600, "grace_secs": 7200, "keep_orphaned_referrers": True}
    assert config["retention"] == [
        {"pack_type": "policy", "keep_newest": 10, "protect": ["1.*", "*-lts"]},
        {"repository_prefix": "packs/ci-", "drop_prereleases_after_days": 7},
    ]
    path = tmp_path / "registry.toml"
    path.write_text(text)
    done = run([str(registry_bin), "config", "check", str(path)], env={"PATH": os.environ["PATH"]})
    assert done.returncode == 0, done.stderr + "\n" + text


def test_background_work_telemetry_and_tags_reach_the_configuration():
    values = deep_merge(load_values("production"), {"config": {
        "gc": {"interval_secs": 600, "grace_secs": 7200},
        "retention": [{"pack_type": "policy", "keep_newest": 5, "protect": ["1.*"]}],
        "tags": {"immutable": ["packs/"]},
        "telemetry": {"otlp_endpoint": "http://collector:4317", "otlp_protocol": "grpc"},
        "ui": {"enabled": False, "session_ttl_secs": 3600},
    }})
    config = tomllib.loads(config_toml(render_objects(values)))
    assert config["ui"] == {"enabled": False, "session_ttl_secs": 3600}
    assert config["gc"] == {"interval_secs": 600, "grace_secs": 7200}
    assert config["retention"] == [{"pack_type": "policy", "keep_newest": 5, "protect": ["1.*"]}]
    assert config["tags"]["immutable"] == ["packs/"]
    assert config["telemetry"] == {"otlp_endpoint": "http://collector:4317", "otlp_protocol": "grpc"}


def test_metrics_on_a_port_of_their_own():
    values = deep_merge(load_values("production"), {"metrics": {"port": 9090}})
    objects = render_objects(values)
    config = tomllib.loads(config_toml(objects))
    assert config["telemetry"]["metrics_listen"] == "0.0.0.0:9090"
    container = find(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    service = find(objects, "Service")
    assert {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"} in service["spec"]["ports"]
    assert find(objects, "ServiceMonitor")["spec"]["endpoints"][0]["port"] == "metrics"
    # The main port's Service and the Ingress route only the registry.
    assert find(render_objects(load_values("production")), "ServiceMonitor")["spec"]["endpoints"][0]["port"] == "http"
