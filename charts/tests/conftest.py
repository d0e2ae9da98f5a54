"""Shared helpers of the chart tests: rendering through Helm's own library
(helm-python-sdk), the values files, and the registry binary under test.

Run them through charts/tests/run.sh, which installs the pinned tools and passes
the binary (PACKS_REGISTRY_BIN)."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import helm_python as helm
import pytest
import yaml

HERE = pathlib.Path(__file__).resolve().parent
CHART = HERE.parent / "packs-registry"
VALUES = HERE / "values"
# The Kubernetes version the rendered objects are validated against (strict).
KUBERNETES_VERSION = "1.37.0"
RELEASE = "reg"
NAMESPACE = "packs"

# name -> values file (None: the chart's defaults)
VALUE_SETS = {
    "default": None,
    "embedded": VALUES / "embedded.yaml",
    "production": VALUES / "production.yaml",
    "token-tls": VALUES / "token-tls.yaml",
}


def load_values(name: str) -> dict | None:
    path = VALUE_SETS[name]
    return None if path is None else yaml.safe_load(path.read_text())


def deep_merge(base: dict | None, override: dict) -> dict:
    """`override` layered over `base`, as Helm layers a second values file."""
    out = dict(base or {})
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def render(values: dict | None) -> dict[str, str]:
    """`helm template`: every template rendered (hooks included), after the values
    were checked against values.schema.json."""
    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def render_objects(values: dict | None) -> list[dict]:
    """The Kubernetes objects of `render`, in template order."""
    objects = []
    for path, text in sorted(render(values).items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return objects


def find(objects: list[dict], kind: str, name: str | None = None) -> dict:
    matches = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def kinds(objects: list[dict]) -> list[str]:
    return sorted(o["kind"] for o in objects)


def hook_events(obj: dict) -> set[str]:
    hook = obj["metadata"].get("annotations", {}).get("helm.sh/hook", "")
    return {h for h in hook.split(",") if h}


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def missing(what: str) -> None:
    """A test's prerequisite is absent: a failure under CI, else a skip saying why."""
    if in_ci():
        pytest.fail(f"{what} (required under CI)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def registry_bin() -> pathlib.Path:
    path = os.environ.get("PACKS_REGISTRY_BIN", "")
    if not path or not os.access(path, os.X_OK):
        missing(f"no packs-registry binary (PACKS_REGISTRY_BIN={path!r}); run charts/tests/run.sh BINARY")
    return pathlib.Path(path).resolve()


@pytest.fixture(scope="session")
def psql() -> str:
    found = shutil.which("psql")
    if not found:
        missing("psql is not installed")
    return found


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def make_tls(folder: pathlib.Path) -> dict[str, pathlib.Path]:
    """A test CA and a certificate it signed for 127.0.0.1 (openssl), as an operator's
    cert-manager would provide; the PEM files by name."""
    folder.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        ["req", "-x509", *ec, "-days", "2", "-subj", "/CN=chart tests CA", "-keyout", "ca.key",
         "-out", "ca.crt", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["req", *ec, "-subj", "/CN=localhost", "-keyout", "tls.key", "-out", "tls.csr"],
        ["x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
         "-days", "2", "-extfile", "ext.cnf", "-out", "tls.crt"],
    ]
    (folder / "ext.cnf").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    for args in steps:
        try:
            done = run(["openssl", *args], cwd=folder)
        except FileNotFoundError:
            missing("openssl is not installed")
        assert done.returncode == 0, done.stderr
    return {name: folder / name for name in ("ca.crt", "tls.crt", "tls.key")}
