"""Helm as a registry client: `helm registry login`, `helm push` and `helm pull` of
this chart against the registry in token mode over TLS, through Helm's own Go code
(helm-python-sdk's RegistryClient, push and pull: what the helm CLI runs).

The server is the real binary with a test CA's certificate; Helm trusts that CA
through SSL_CERT_FILE, which Go reads when its runtime starts, so the client runs in
a process of its own. It follows the WWW-Authenticate challenge to /token with the
login's credentials, as with any registry using the Docker token flow."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import CHART, make_tls, run

CLIENT = r"""
import json, os, sys
import helm_python as helm

host, work, action = sys.argv[1], sys.argv[2], sys.argv[3]
args = json.loads(sys.argv[4])
client = helm.RegistryClient(credentials_file=os.path.join(work, args["user"] + ".json"))
try:
    if args.get("password"):
        client.login(host, args["user"], args["password"])
    if action == "push":
        out = helm.push(args["chart"], f"oci://{host}/{args['repo']}", client=client)
    elif action == "pull":
        os.makedirs(args["dest"], exist_ok=True)
        out = helm.pull(f"oci://{host}/{args['repo']}/packs-registry", client=client,
                        version=args["version"], destination=args["dest"])
    elif action == "tags":
        out = client.tags(f"{host}/{args['repo']}/packs-registry")
    else:
        out = None
    print(json.dumps({"ok": True, "out": out}))
except helm.HelmError as e:
    print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def registry(registry_bin, tmp_path):
    """The binary in token mode over TLS: alice pushes and pulls charts/, the robot
    taskrunner only pulls it, anyone pulls public/."""
    tls = make_tls(tmp_path / "tls")

    def cli(*args: str, stdin: str = "") -> str:
        done = run([str(registry_bin), *args], input=stdin, env={"PATH": os.environ["PATH"]})
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    (tmp_path / "root.key").write_text(cli("token", "keygen") + "\n")
    alice = cli("user", "hash", stdin="alice-pw\n")
    runner = cli("user", "hash", stdin="runner-pw\n")
    port = free_port()
    config = tmp_path / "registry.toml"
    config.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
data_dir = "{tmp_path / 'data'}"

[server.tls]
cert = "{tls['tls.crt']}"
key = "{tls['tls.key']}"

[auth]
mode = "token"
service = "charts.test"
root_key_file = "{tmp_path / 'root.key'}"
anonymous_pull = ["public/"]

[[auth.users]]
name = "alice"
password_hash = "{alice}"
grants = ["charts/:pull,push", "public/:pull,push"]

[[auth.robots]]
name = "taskrunner"
password_hash = "{runner}"
grants = ["charts/:pull"]
""")
    log = open(tmp_path / "server.log", "wb")
    process = subprocess.Popen([str(registry_bin), "serve", "--config", str(config)],
                               stdout=log, stderr=log, env={"PATH": os.environ["PATH"]})
    context = ssl.create_default_context(cafile=str(tls["ca.crt"]))
    try:
        for _ in range(300):
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            try:
                urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=context,
                                       timeout=5).read()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("the registry did not come up: " + (tmp_path / "server.log").read_text())
        yield {"host": f"127.0.0.1:{port}", "ca": tls["ca.crt"], "work": tmp_path}
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def helm_client(registry, action: str, **args) -> dict:
    """One Helm client call in a process that trusts the test CA only."""
    env = {"PATH": os.environ["PATH"], "HOME": str(registry["work"]),
           "SSL_CERT_FILE": str(registry["ca"])}
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, registry["host"], str(registry["work"]), action,
         json.dumps(args)],
        capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def chart_tgz(tmp_path) -> pathlib.Path:
    import helm_python as helm

    return pathlib.Path(helm.package(str(CHART), destination=str(tmp_path)))


def test_helm_logs_in_pushes_and_pulls_over_tls(registry, chart_tgz, tmp_path):
    pushed = helm_client(registry, "push", user="alice", password="alice-pw",
                         chart=str(chart_tgz), repo="charts")
    assert pushed["ok"], pushed
    # The robot pulls what alice pushed, byte for byte.
    pulled = helm_client(registry, "pull", user="taskrunner", password="runner-pw",
                         repo="charts", version="0.1.0", dest=str(tmp_path / "pulled"))
    assert pulled["ok"], pulled
    assert (tmp_path / "pulled" / chart_tgz.name).read_bytes() == chart_tgz.read_bytes()
    tags = helm_client(registry, "tags", user="taskrunner", password="runner-pw", repo="charts")
    assert tags == {"ok": True, "out": ["0.1.0"]}


def test_helm_is_refused_what_its_grants_do_not_allow(registry, chart_tgz, tmp_path):
    # A wrong password fails at login: Helm's ping follows the challenge to /token.
    wrong = helm_client(registry, "login", user="alice", password="not-alice-pw")
    assert not wrong["ok"] and "401" in wrong["error"], wrong
    # The pull-only robot cannot push: 403 DENIED, and nothing is stored.
    denied = helm_client(registry, "push", user="taskrunner", password="runner-pw",
                         chart=str(chart_tgz), repo="charts")
    assert not denied["ok"] and "403" in denied["error"] and "denied" in denied["error"], denied
    absent = helm_client(registry, "pull", user="alice", password="alice-pw", repo="charts",
                         version="0.1.0", dest=str(tmp_path / "absent"))
    assert not absent["ok"] and "not found" in absent["error"], absent
    # Anonymous: pulls under public/ only, and never pushes.
    assert helm_client(registry, "push", user="alice", password="alice-pw",
                       chart=str(chart_tgz), repo="public")["ok"]
    anonymous = helm_client(registry, "pull", user="nobody", repo="public", version="0.1.0",
                            dest=str(tmp_path / "anonymous"))
    assert anonymous["ok"], anonymous
    assert (tmp_path / "anonymous" / chart_tgz.name).read_bytes() == chart_tgz.read_bytes()
    anonymous_push = helm_client(registry, "push", user="nobody", chart=str(chart_tgz),
                                 repo="public/other")
    assert not anonymous_push["ok"] and "401" in anonymous_push["error"], anonymous_push


def test_helm_without_the_ca_refuses_the_certificate(registry):
    env = {"PATH": os.environ["PATH"], "HOME": str(registry["work"]),
           "SSL_CERT_FILE": os.devnull}
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, registry["host"], str(registry["work"]), "login",
         json.dumps({"user": "alice", "password": "alice-pw"})],
        capture_output=True, text=True, env=env, timeout=300)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert not result["ok"] and "certificate" in result["error"], result
