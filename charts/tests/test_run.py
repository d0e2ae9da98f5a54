"""The chart's configuration starts a working registry, not only renders.

Each test renders the chart, then plays the kubelet for one pod: the container's
volumes become folders (ConfigMaps and Secrets written out as files, the
PersistentVolumeClaim or emptyDir a temporary folder), its environment is resolved from `env` and
`envFrom` (values, and keys of the rendered Secrets and ConfigMaps or of those a
test puts in the "cluster" beforehand), and its command and args are run with the
binary under test. Paths under a mount are mapped to the folder standing for it,
and the pod's `0.0.0.0:<containerPort>` to a free loopback port. In production the
migrations Job runs first, then the Deployment's container serves against
PostgreSQL (a database per test) and S3 (moto, a bucket per test); a blob, a
manifest and a pack (POST /packs) are pushed and pulled back with plain HTTP. In
token mode over TLS (values/token-tls.yaml) the pod serves HTTPS with a test CA's
certificate and the same is done through the token flow."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import pathlib
import re
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from http.client import HTTPException

import pytest

from conftest import (
    RELEASE,
    deep_merge,
    find,
    load_values,
    make_tls,
    missing,
    render_objects,
    run,
)

FULLNAME = f"{RELEASE}-packs-registry"
POSTGRES = os.environ.get("PACKS_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
         context: ssl.SSLContext | None = None):
    """(status, headers, body) of one request; errors are answers too. `context`:
    the TLS settings of an https:// URL (a test CA)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


# --------------------------------------------------------------------------------------
# The services: moto (S3) and PostgreSQL.


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """A moto S3 server of this session, on a free loopback port."""
    moto = pathlib.Path(sys.executable).parent / "moto_server"
    if not moto.exists():
        missing(f"no moto_server beside {sys.executable}; run charts/tests/run.sh")
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    for _ in range(3):  # a free port can be taken between the probe and the bind
        port = free_port()
        with open(log, "w") as out:
            process = subprocess.Popen(
                [str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out
            )
        endpoint = f"http://127.0.0.1:{port}"
        for _ in range(150):
            if process.poll() is not None:
                break
            try:
                urllib.request.urlopen(endpoint + "/", timeout=2).read()
                yield endpoint
                process.terminate()
                process.wait(timeout=30)
                return
            except OSError:
                time.sleep(0.2)
        process.kill()
        process.wait()
    pytest.fail(f"moto did not start: {log.read_text()[-2000:]}")


@pytest.fixture
def bucket(s3_endpoint) -> str:
    name = f"packs-chart-{uuid.uuid4().hex[:12]}"
    status, _, body = http("PUT", f"{s3_endpoint}/{name}")
    assert status == 200, body
    return name


@pytest.fixture
def database(psql):
    """A fresh PostgreSQL database; its URL."""
    name = f"packs_chart_{uuid.uuid4().hex[:12]}"
    created = run([psql, POSTGRES, "-qc", f"CREATE DATABASE {name}"])
    if created.returncode != 0:
        missing(f"PostgreSQL at {POSTGRES} refused CREATE DATABASE: {created.stderr.strip()}")
    yield f"{POSTGRES.rsplit('/', 1)[0]}/{name}"
    run([psql, POSTGRES, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"])


# --------------------------------------------------------------------------------------
# A pod, played on this machine.


class Cluster:
    """The Secrets and ConfigMaps a pod can reference: the rendered ones and any
    the test created beforehand (as an operator would with kubectl)."""

    def __init__(self, objects: list[dict]):
        self.secrets: dict[str, dict[str, str]] = {}
        self.config_maps: dict[str, dict[str, str]] = {}
        for obj in objects:
            name = obj["metadata"]["name"]
            if obj["kind"] == "Secret":
                data = {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
                data.update(obj.get("stringData", {}))
                self.secrets[name] = data
            elif obj["kind"] == "ConfigMap":
                self.config_maps[name] = dict(obj.get("data", {}))

    def key(self, kind: str, ref: dict) -> str | None:
        source = self.secrets if kind == "secret" else self.config_maps
        if ref["name"] not in source or ref["key"] not in source[ref["name"]]:
            assert ref.get("optional"), f"{kind} {ref['name']} has no key {ref['key']}"
            return None
        return source[ref["name"]][ref["key"]]

    def all_keys(self, kind: str, ref: dict) -> dict[str, str]:
        source = self.secrets if kind == "secret" else self.config_maps
        if ref["name"] not in source:
            assert ref.get("optional"), f"no {kind} {ref['name']}"
            return {}
        return source[ref["name"]]


class Pod:
    """One container of a rendered pod spec, ready to run here."""

    def __init__(self, cluster: Cluster, workload: dict, root: pathlib.Path, binary: pathlib.Path,
                 claims: dict[str, pathlib.Path] | None = None):
        spec = workload["spec"]["template"]["spec"]
        (self.container,) = spec["containers"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        self.port = free_port()
        self.paths: dict[str, pathlib.Path] = {}
        for mount in self.container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "persistentVolumeClaim" in volume:
                host = (claims or {})[volume["persistentVolumeClaim"]["claimName"]]
            else:
                host = root / mount["mountPath"].strip("/")
            host.mkdir(parents=True, exist_ok=True)
            self.paths[mount["mountPath"]] = host
            assert {"configMap", "emptyDir", "persistentVolumeClaim", "secret"} & volume.keys(), volume
        for mount in self.container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "configMap" in volume:
                files = cluster.all_keys("configmap", volume["configMap"])
                for key, text in files.items():
                    (self.paths[mount["mountPath"]] / key).write_text(self.translate(text))
            if "secret" in volume:
                source = volume["secret"]
                keys = cluster.all_keys("secret", {"name": source["secretName"]})
                items = source.get("items") or [{"key": k, "path": k} for k in keys]
                for item in items:
                    assert item["key"] in keys, f"Secret {source['secretName']} has no key {item['key']}"
                    path = self.paths[mount["mountPath"]] / item["path"]
                    path.write_text(keys[item["key"]])
                    path.chmod(source.get("defaultMode", 0o644))
        self.env = {"PATH": "/usr/bin:/bin"}
        for source in self.container.get("envFrom", []):
            kind, ref = ("secret", source["secretRef"]) if "secretRef" in source else (
                "configmap", source["configMapRef"])
            for key, value in cluster.all_keys(kind, ref).items():
                self.env[source.get("prefix", "") + key] = value
        for var in self.container.get("env", []):
            if "value" in var:
                self.env[var["name"]] = var["value"]
                continue
            ref = var["valueFrom"]
            value = (cluster.key("secret", ref["secretKeyRef"]) if "secretKeyRef" in ref
                     else cluster.key("configmap", ref["configMapKeyRef"]))
            if value is not None:
                self.env[var["name"]] = value
        command = self.container["command"]
        assert command[0].endswith("/packs-registry"), command
        self.argv = [str(binary)] + [self.translate(a) for a in command[1:] + self.container["args"]]
        self.log = root / f"{self.container['name']}.log"

    def translate(self, text: str) -> str:
        """Container paths and the pod's listen address, as this machine sees them."""
        if self.paths:
            # One pass, paths that start a word only: a replaced path is not replaced again.
            mounts = "|".join(re.escape(m) for m in sorted(self.paths, key=len, reverse=True))
            text = re.sub(rf"(?<![^\s\"'=])({mounts})(?=/|\b|$)",
                          lambda m: str(self.paths[m.group(1)]), text)
        for port in self.container.get("ports", []):
            text = text.replace(f"0.0.0.0:{port['containerPort']}", f"127.0.0.1:{self.port}")
        return text

    @property
    def scheme(self) -> str:
        """What the probes speak: https when the registry serves TLS itself."""
        return self.container["readinessProbe"]["httpGet"].get("scheme", "HTTP").lower()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def run_to_completion(self) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv, env=self.env, capture_output=True, text=True, timeout=300)

    def start(self) -> subprocess.Popen:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=out)
        return self.process

    def probe(self, name: str) -> int:
        """As the kubelet probes: over HTTPS without checking the certificate."""
        get = self.container[name]["httpGet"]
        assert get["port"] == "http"
        scheme = get.get("scheme", "HTTP").lower()
        context = ssl._create_unverified_context() if scheme == "https" else None
        status, _, _ = http("GET", f"{scheme}://127.0.0.1:{self.port}{get['path']}", context=context)
        return status

    def wait_ready(self) -> None:
        """Until the readiness probe passes, as the kubelet would (the startup
        probe's budget bounds the wait)."""
        startup = self.container["startupProbe"]
        deadline = time.monotonic() + startup["periodSeconds"] * startup["failureThreshold"]
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"exited {self.process.returncode}: {self.logs()}"
            try:
                if self.probe("readinessProbe") == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail(f"never ready: {self.logs()}")

    def terminate(self, grace: int) -> int:
        """SIGTERM, then what the kubelet allows: the grace period."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=grace)

    def logs(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else ""


# --------------------------------------------------------------------------------------
# What a client does.


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_and_pull_image(url: str, repo: str, auth: dict | None = None,
                        context: ssl.SSLContext | None = None) -> str:
    """A blob and a manifest pushed and read back; the manifest's digest. `auth`: the
    headers that authorize it (token mode); `context`: TLS settings."""
    auth = auth or {}
    layer = os.urandom(256 * 1024)
    config = b'{"architecture":"amd64","os":"linux"}'
    for blob in (layer, config):
        status, headers, body = http(
            "POST", f"{url}/v2/{repo}/blobs/uploads/?digest={sha256(blob)}", blob,
            {"Content-Type": "application/octet-stream", **auth}, context)
        assert status == 201, body
        assert headers["Docker-Content-Digest"] == sha256(blob)
    status, _, body = http("GET", f"{url}/v2/{repo}/blobs/{sha256(layer)}", headers=auth, context=context)
    assert status == 200 and body == layer
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256(layer), "size": len(layer)}],
    }).encode()
    media_type = "application/vnd.oci.image.manifest.v1+json"
    status, headers, body = http(
        "PUT", f"{url}/v2/{repo}/manifests/v1", manifest, {"Content-Type": media_type, **auth}, context)
    assert status == 201, body
    assert headers["Docker-Content-Digest"] == sha256(manifest)
    status, headers, body = http(
        "GET", f"{url}/v2/{repo}/manifests/v1", headers={"Accept": media_type, **auth}, context=context)
    assert status == 200 and body == manifest
    assert headers["Content-Type"] == media_type
    return sha256(manifest)


def pack_tarball() -> bytes:
    """The same bytes every time (no timestamps)."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        rule = b"package chart\n\ndefault allow := true\n"
        info = tarfile.TarInfo("rules/chart.rego")
        info.size = len(rule)
        tar.addfile(info, io.BytesIO(rule))
    return out.getvalue()


def multipart(parts: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b""
    for name, content_type, data in parts:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                 f"filename=\"{name}\"\r\nContent-Type: {content_type}\r\n\r\n").encode()
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def publish_and_pull_pack(url: str) -> bytes:
    """A pack published with POST /packs, read back through /packs and /v2."""
    content = pack_tarball()
    manifest = json.dumps({"packId": "chart-check", "version": "1.0.0", "type": "policy",
                           "name": "Chart check", "author": "charts"}).encode()
    body, content_type = multipart([
        ("manifest", "application/json", manifest),
        ("content", "application/vnd.stellaops.pack.content.v1.tar+gzip", content),
    ])
    status, _, answer = http("POST", f"{url}/packs", body, {"Content-Type": content_type})
    assert status == 201, answer
    published = json.loads(answer)
    assert published["digest"] == sha256(content)
    status, _, body = http("GET", f"{url}/packs/chart-check/%5E1")
    assert status == 200 and body == content
    status, _, body = http("GET", f"{url}/packs/chart-check")
    assert status == 200 and json.loads(body)["pack"]["version"] == "1.0.0"
    status, headers, body = http(
        "GET", f"{url}/v2/packs/chart-check/manifests/1.0.0",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert status == 200
    assert headers["Docker-Content-Digest"] == published["manifestDigest"]
    assert json.loads(body)["layers"][0]["digest"] == sha256(content)
    return content


# --------------------------------------------------------------------------------------


def serve_and_exercise(pod: Pod, grace: int) -> None:
    pod.start()
    try:
        pod.wait_ready()
        assert pod.probe("livenessProbe") == 200
        push_and_pull_image(pod.url, "team/chart-check")
        publish_and_pull_pack(pod.url)
        # Stopped as Kubernetes stops it: it drains and exits in time, cleanly.
        assert pod.terminate(grace) == 0, pod.logs()
    finally:
        if pod.process.poll() is None:
            pod.process.kill()
            pod.process.wait()


def production(objects: list[dict], cluster: Cluster, tmp_path: pathlib.Path, binary) -> None:
    job = Pod(cluster, find(objects, "Job"), tmp_path / "job", binary)
    migrated = job.run_to_completion()
    assert migrated.returncode == 0, migrated.stderr
    assert "migrations applied" in migrated.stdout
    deployment = find(objects, "Deployment")
    pod = Pod(cluster, deployment, tmp_path / "pod", binary)
    serve_and_exercise(pod, deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])


def s3_config(endpoint: str, bucket: str) -> dict:
    return {"config": {"storage": {"s3": {"endpoint": endpoint, "bucket": bucket}}}}


def test_production_values_file_runs_a_registry(registry_bin, database, s3_endpoint, bucket, tmp_path):
    """values/production.yaml, credentials inline (the chart's own Secrets)."""
    values = deep_merge(load_values("production"), {
        "postgres": {"url": database},
        "s3": {"accessKeyId": "chart-tests", "secretAccessKey": "chart-tests"},
        **s3_config(s3_endpoint, bucket),
    })
    objects = render_objects(values)
    # extraEnvFrom in production.yaml names a ConfigMap the operator made.
    cluster = Cluster(objects + [{"kind": "ConfigMap", "metadata": {"name": "packs-extra"},
                                  "data": {"AWS_EC2_METADATA_DISABLED": "true"}}])
    production(objects, cluster, tmp_path, registry_bin)


def test_default_values_with_existing_secrets_run_a_registry(
        registry_bin, database, s3_endpoint, bucket, tmp_path):
    """The README's quick start: the default values, the two Secrets created first."""
    objects = render_objects(s3_config(s3_endpoint, bucket))
    assert not [o for o in objects if o["kind"] == "Secret"]
    secrets = [
        {"kind": "Secret", "metadata": {"name": "packs-registry-postgres"},
         "stringData": {"url": database}},
        {"kind": "Secret", "metadata": {"name": "packs-registry-s3"},
         "stringData": {"access-key-id": "chart-tests", "secret-access-key": "chart-tests"}},
    ]
    production(objects, Cluster(objects + secrets), tmp_path, registry_bin)


def test_replicas_need_the_migrations_job(registry_bin, database, s3_endpoint, bucket, tmp_path):
    """Without the Job the replicas do not migrate (the Job owns the schema): the
    registry is not usable, which is why the Job is a pre-install hook."""
    values = deep_merge(s3_config(s3_endpoint, bucket), {
        "postgres": {"url": database},
        "s3": {"accessKeyId": "chart-tests", "secretAccessKey": "chart-tests"},
    })
    objects = render_objects(values)
    deployment = find(objects, "Deployment")
    pod = Pod(Cluster(objects), deployment, tmp_path / "pod", registry_bin)
    pod.start()
    try:
        pod.wait_ready()  # the database and the bucket answer...
        status, _, _ = http("GET", f"{pod.url}/v2/_catalog")
        assert status >= 500  # ...but holds no schema yet
    finally:
        pod.process.kill()
        pod.process.wait()


def test_embedded_mode_runs_a_registry_on_its_volume(registry_bin, tmp_path):
    objects = render_objects(load_values("embedded"))
    deployment = find(objects, "Deployment")
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    claims = {FULLNAME: tmp_path / "pvc"}
    pod = Pod(Cluster(objects), deployment, tmp_path / "pod", registry_bin, claims)
    serve_and_exercise(pod, grace)
    assert (claims[FULLNAME] / "metadata.db").exists()
    assert any((claims[FULLNAME] / "blobs").rglob("*"))
    # A new pod on the same claim serves what the first one stored.
    pod = Pod(Cluster(objects), deployment, tmp_path / "pod2", registry_bin, claims)
    pod.start()
    try:
        pod.wait_ready()
        status, _, body = http("GET", f"{pod.url}/packs/chart-check/1.0.0")
        assert status == 200 and body == pack_tarball()
        status, _, _ = http("GET", f"{pod.url}/v2/team/chart-check/manifests/v1",
                            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert status == 200
        assert pod.terminate(grace) == 0
    finally:
        if pod.process.poll() is None:
            pod.process.kill()
            pod.process.wait()


def test_token_mode_over_tls_runs_a_registry(registry_bin, tmp_path):
    """values/token-tls.yaml with the Secrets an operator makes first (certificate, root
    key, users file): the pod serves HTTPS, probes pass over it, and the token flow,
    grants and anonymous pull work as configured."""
    tls = make_tls(tmp_path / "tls")

    def cli(*args: str, stdin: str = "") -> str:
        done = run([str(registry_bin), *args], input=stdin, env={"PATH": os.environ["PATH"]})
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    alice_hash = cli("user", "hash", stdin="alice-pw\n")
    users = (f'[[users]]\nname = "alice"\npassword_hash = "{alice_hash}"\n'
             'grants = ["packs/:pull,push", "public/:pull,push"]\n')
    runner_hash = cli("user", "hash", stdin="runner-pw\n")
    values = deep_merge(load_values("token-tls"), {"config": {"auth": {"robots": [
        {"name": "taskrunner", "password_hash": runner_hash, "grants": ["packs/:pull"]}]}}})
    objects = render_objects(values)
    secrets = [
        {"kind": "Secret", "metadata": {"name": "packs-tls"},
         "stringData": {"tls.crt": tls["tls.crt"].read_text(), "tls.key": tls["tls.key"].read_text()}},
        {"kind": "Secret", "metadata": {"name": "packs-root-key"},
         "stringData": {"root.key": cli("token", "keygen") + "\n"}},
        {"kind": "Secret", "metadata": {"name": "packs-users"}, "stringData": {"users": users}},
    ]
    deployment = find(objects, "Deployment")
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    claims = {FULLNAME: tmp_path / "pvc"}
    pod = Pod(Cluster(objects + secrets), deployment, tmp_path / "pod", registry_bin, claims)
    assert pod.scheme == "https"
    ca = ssl.create_default_context(cafile=str(tls["ca.crt"]))
    pod.start()
    try:
        pod.wait_ready()
        assert pod.probe("livenessProbe") == 200
        # Not a word in clear text.
        with pytest.raises((OSError, HTTPException)):
            http("GET", f"http://127.0.0.1:{pod.port}/v2/")
        status, headers, body = http("GET", f"{pod.url}/v2/", context=ca)
        assert status == 401, body
        assert headers["WWW-Authenticate"] == (
            f'Bearer realm="https://127.0.0.1:{pod.port}/token",service="packs.example.com"')

        def token(user: str, password: str, scope: str) -> dict:
            basic = base64.b64encode(f"{user}:{password}".encode()).decode()
            status, _, body = http(
                "GET", f"{pod.url}/token?service=packs.example.com&scope={scope}",
                headers={"Authorization": f"Basic {basic}"}, context=ca)
            assert status == 200, body
            return {"Authorization": f"Bearer {json.loads(body)['token']}"}

        # alice, from the users Secret, pushes and pulls.
        alice = token("alice", "alice-pw", "repository:packs/team/chart-check:pull,push")
        push_and_pull_image(pod.url, "packs/team/chart-check", alice, ca)
        # The inline robot pulls, and may not push.
        runner = token("taskrunner", "runner-pw", "repository:packs/team/chart-check:pull,push")
        status, _, _ = http("GET", f"{pod.url}/v2/packs/team/chart-check/tags/list",
                            headers=runner, context=ca)
        assert status == 200
        status, _, body = http("POST", f"{pod.url}/v2/packs/team/chart-check/blobs/uploads/",
                               headers=runner, context=ca)
        assert status == 403 and b"DENIED" in body, body
        # Anonymous: public/ only; /metrics is protected.
        push_and_pull_image(pod.url, "public/chart-check",
                            token("alice", "alice-pw", "repository:public/chart-check:pull,push"), ca)
        status, _, _ = http("GET", f"{pod.url}/v2/public/chart-check/tags/list", context=ca)
        assert status == 200
        status, _, _ = http("GET", f"{pod.url}/v2/packs/team/chart-check/tags/list", context=ca)
        assert status == 401
        status, _, _ = http("GET", f"{pod.url}/metrics", context=ca)
        assert status == 401
        assert pod.terminate(grace) == 0, pod.logs()
    finally:
        if pod.process.poll() is None:
            pod.process.kill()
            pod.process.wait()
