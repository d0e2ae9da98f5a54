#!/usr/bin/env python3
"""Real-client checks with oras-py (PyPI `oras`) against a running PacksRegistry.

Usage: oras_check.py HOST:PORT WORKDIR

Prints one line per check, `PASS  <name>` or `FAIL  <name>: <reason>`, and exits
non-zero if any check failed. conformance/clients/run.sh counts those lines.

Everything goes through oras-py's own client code (oras.provider.Registry, which
is what oras.client.OrasClient is): its push/pull, its blob upload (monolithic
POST+PUT and chunked POST+PATCH+PUT), its manifest upload and fetch, tags and
tag deletion. Raw HTTP is used only through the client's own session
(`do_request`) to look at headers and exact bytes that the high-level calls hide.
"""

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import sys
import tarfile
import traceback
from urllib.parse import quote

import requests

import oras.client
import oras.defaults
import oras.oci

ARTIFACT_TYPE = "application/vnd.stellaops.pack.policy.v1"
CONFIG_TYPE = "application/vnd.stellaops.pack.config.v1+json"
CONTENT_TYPE = "application/vnd.stellaops.pack.content.v1.tar+gzip"
README_TYPE = "text/markdown"
SBOM_TYPE = "application/spdx+json"
SIG_ARTIFACT_TYPE = "application/vnd.stellaops.pack.signature.v1"
SIG_CONFIG_TYPE = "application/vnd.stellaops.pack.signature.config.v1+json"
SIG_LAYER_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
TITLE = oras.defaults.annotation_title

BIG = 6 * 1024 * 1024 + 12345  # ~6 MiB, not a multiple of any chunk size

RESULTS = []


def check(name):
    def wrap(fn):
        def run(self, *a, **kw):
            try:
                # oras-py retries every failed request for ~2 minutes: probe first, so a
                # dead server fails the remaining checks at once instead of hanging.
                try:
                    requests.get(f"http://{self.host}/v2/", timeout=10)
                except requests.exceptions.RequestException as e:
                    raise AssertionError(f"not run: the registry does not answer ({e.__class__.__name__})")
                fn(self, *a, **kw)
            except Exception as e:  # noqa: BLE001 - every failure is reported
                detail = "".join(traceback.format_exception_only(type(e), e)).strip()
                traceback.print_exc(file=sys.stderr)
                print(f"FAIL  oras: {name}: {detail}", flush=True)
                RESULTS.append(False)
                return False
            print(f"PASS  oras: {name}", flush=True)
            RESULTS.append(True)
            return True

        return run

    return wrap


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def same_bytes(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


class Fixture:
    """The pack's files, made deterministically under WORKDIR/src."""

    def __init__(self, workdir):
        self.src = os.path.join(workdir, "src")
        self.tree = os.path.join(workdir, "tree")  # what goes inside the content tarball
        os.makedirs(self.src, exist_ok=True)
        os.makedirs(os.path.join(self.tree, "rules"), exist_ok=True)
        rnd = random.Random(20250115)
        self.tree_files = {
            "rules/baseline.rego": b"package stellaops.baseline\n\ndefault allow := false\n"
            + b"allow if input.severity != \"critical\"\n" * 50,
            "data.json": json.dumps({"thresholds": {"critical": 0, "high": 5}}, indent=2).encode(),
            "model.bin": rnd.randbytes(BIG),  # incompressible, so the layer stays ~6 MiB
            "empty.txt": b"",
        }
        for rel, data in self.tree_files.items():
            with open(os.path.join(self.tree, rel), "wb") as f:
                f.write(data)
        # The content layer: a gzip'd tar of the tree, with fixed mtimes (reproducible).
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for rel in sorted(self.tree_files):
                info = tarfile.TarInfo(rel)
                info.size = len(self.tree_files[rel])
                info.mtime = 1736937000
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(self.tree_files[rel]))
        self.content = os.path.join(self.src, "policy-baseline-2.1.0.tar.gz")
        with open(self.content, "wb") as f:
            with gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
                gz.write(raw.getvalue())
        self.readme = os.path.join(self.src, "README.md")
        with open(self.readme, "wb") as f:
            f.write("# Baseline Security Policy\n\nUnicode survives: ✓ — ü\n".encode())
        self.sbom = os.path.join(self.src, "sbom.spdx.json")
        with open(self.sbom, "wb") as f:
            f.write(json.dumps({"spdxVersion": "SPDX-2.3", "name": "policy-baseline"}).encode())
        self.config = os.path.join(self.src, "pack.json")
        with open(self.config, "wb") as f:
            f.write(
                json.dumps(
                    {
                        "packId": "policy-baseline",
                        "version": "2.1.0",
                        "type": "policy",
                        "name": "Baseline Security Policy",
                        "description": "Standard security policy pack",
                        "digest": sha256_file(self.content),
                        "size": os.path.getsize(self.content),
                        "publishedAt": "2025-01-15T10:30:00Z",
                        "author": "stellaops",
                        "dependencies": [],
                        "metadata": {"minRunnerVersion": "1.5.0"},
                    },
                    separators=(",", ":"),
                ).encode()
            )
        self.signature = os.path.join(self.src, "signature.json")
        with open(self.signature, "wb") as f:
            f.write(b'{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","fake":true}')
        self.layers = [
            (self.content, CONTENT_TYPE),
            (self.readme, README_TYPE),
            (self.sbom, SBOM_TYPE),
        ]


def descriptor(path, media_type, title=True):
    d = {"mediaType": media_type, "digest": sha256_file(path), "size": os.path.getsize(path)}
    if title:
        d["annotations"] = {TITLE: os.path.basename(path)}
    return d


class Checks:
    def __init__(self, host, workdir):
        self.host = host
        self.workdir = workdir
        self.fx = Fixture(workdir)
        self.client = oras.client.OrasClient(hostname=host, insecure=True)
        # oras-py silently retries a 500; record every 5xx so one cannot hide.
        self.server_errors = []
        self.client.session.hooks["response"].append(self._record_5xx)
        self.repo = f"{host}/packs/policy-baseline"
        self.pushed_manifest = None  # (dict, digest, raw bytes) from the provider-API push

    # -- helpers -------------------------------------------------------------------------
    def _record_5xx(self, r, *args, **kwargs):
        if r.status_code >= 500:
            self.server_errors.append(f"{r.request.method} {r.request.url} -> {r.status_code} {r.text[:200]}")

    def url(self, path):
        return f"http://{self.host}/v2/{path}"

    def raw_manifest(self, repo_path, reference, accept=None):
        headers = {"Accept": accept or ", ".join([OCI_MANIFEST, OCI_INDEX])}
        r = self.client.do_request(self.url(f"{repo_path}/manifests/{reference}"), "GET", headers=headers)
        expect(r.status_code == 200, f"GET manifest {repo_path}:{reference} -> {r.status_code} {r.text[:300]}")
        return r

    def compare_pulled(self, files, outdir):
        pulled = {os.path.basename(p): p for p in files}
        for path, _ in self.fx.layers:
            name = os.path.basename(path)
            expect(name in pulled, f"pull did not return {name}: got {sorted(pulled)}")
            expect(os.path.dirname(os.path.abspath(pulled[name])) == os.path.abspath(outdir),
                   f"{name} pulled outside {outdir}: {pulled[name]}")
            expect(same_bytes(path, pulled[name]), f"{name}: pulled bytes differ from pushed bytes")
        expect(len(pulled) == len(self.fx.layers), f"pull returned extra files: {sorted(pulled)}")
        # And what is inside the content tarball, file by file.
        with tarfile.open(pulled[os.path.basename(self.fx.content)], "r:gz") as tar:
            names = sorted(m.name for m in tar.getmembers())
            expect(names == sorted(self.fx.tree_files), f"tar members {names}")
            for rel, data in self.fx.tree_files.items():
                got = tar.extractfile(rel).read()
                expect(got == data, f"tar member {rel}: {len(got)} bytes differ from {len(data)} pushed")

    # -- checks --------------------------------------------------------------------------
    @check("ping GET /v2/ answers 200 with Docker-Distribution-API-Version")
    def ping(self):
        r = self.client.do_request(self.url(""), "GET")
        expect(r.status_code == 200, f"/v2/ -> {r.status_code}")
        expect(r.headers.get("Docker-Distribution-API-Version") == "registry/2.0",
               f"Docker-Distribution-API-Version = {r.headers.get('Docker-Distribution-API-Version')!r}")

    @check("push (OrasClient.push): custom config media type + 3 layers incl. ~6 MiB tar+gzip")
    def push_highlevel(self):
        cwd = os.getcwd()
        os.chdir(self.fx.src)  # oras-py validates that pushed paths are under the cwd
        try:
            files = [f"{os.path.basename(p)}:{mt}" for p, mt in self.fx.layers]
            r = self.client.push(
                target=f"{self.repo}:2.1.0-oras",
                files=files,
                manifest_config=f"{os.path.basename(self.fx.config)}:{CONFIG_TYPE}",
                manifest_annotations={
                    "org.opencontainers.image.version": "2.1.0",
                    "org.opencontainers.image.title": "Baseline Security Policy",
                },
                quiet=True,
            )
        finally:
            os.chdir(cwd)
        expect(r.status_code == 201, f"manifest PUT -> {r.status_code}")
        digest = r.headers.get("Docker-Content-Digest", "")
        body = r.request.body
        body = body if isinstance(body, bytes) else body.encode()
        expect(digest == "sha256:" + hashlib.sha256(body).hexdigest(),
               f"Docker-Content-Digest {digest} is not the sha256 of the pushed manifest bytes")
        loc = r.headers.get("Location", "")
        expect(loc.endswith(f"/manifests/{digest}"), f"Location {loc!r}")

    @check("pull (OrasClient.pull) into another folder: every file byte-for-byte, tar members too")
    def pull_highlevel(self):
        out = os.path.join(self.workdir, "pull-highlevel")
        os.makedirs(out)
        files = self.client.pull(target=f"{self.repo}:2.1.0-oras", outdir=out)
        self.compare_pulled(files, out)

    @check("manifest (get_manifest): config/layer media types, titles and annotations exact")
    def manifest_highlevel(self):
        m = self.client.get_manifest(f"{self.repo}:2.1.0-oras")
        expect(m.get("schemaVersion") == 2, "schemaVersion")
        expect(m.get("mediaType") == OCI_MANIFEST, f"mediaType {m.get('mediaType')!r}")
        expect(m["config"] == descriptor(self.fx.config, CONFIG_TYPE, title=False),
               f"config descriptor {m['config']}")
        want = [descriptor(p, mt) for p, mt in self.fx.layers]
        expect(m["layers"] == want, f"layers {json.dumps(m['layers'])} != {json.dumps(want)}")
        expect(m.get("annotations") == {
            "org.opencontainers.image.version": "2.1.0",
            "org.opencontainers.image.title": "Baseline Security Policy",
        }, f"annotations {m.get('annotations')}")
        # The stored config blob is the pack manifest, byte for byte.
        r = self.client.get_blob(f"{self.repo}:2.1.0-oras", m["config"]["digest"])
        expect(r.status_code == 200, f"config blob GET -> {r.status_code}")
        with open(self.fx.config, "rb") as f:
            expect(r.content == f.read(), "config blob bytes differ")

    @check("provider API: chunked upload (1 MiB PATCHes) + artifactType manifest, exact bytes back")
    def push_artifact_type(self):
        # A repository of its own, so that oras-py's HEAD finds no blob and the chunked
        # path really runs (blob_exists is per repository).
        container = self.client.get_container(f"{self.host}/packs/policy-baseline-chunked:2.1.0")
        for path, mt in self.fx.layers:
            layer = descriptor(path, mt)
            r = self.client.upload_blob(path, container, layer, do_chunked=True, chunk_size=1024 * 1024)
            expect(r.status_code == 201, f"chunked upload of {os.path.basename(path)} -> {r.status_code} {r.text[:300]}")
            expect(r.headers.get("Docker-Content-Digest") == layer["digest"],
                   f"upload answered digest {r.headers.get('Docker-Content-Digest')}")
        conf = descriptor(self.fx.config, CONFIG_TYPE, title=False)
        r = self.client.upload_blob(self.fx.config, container, conf)
        expect(r.status_code == 201, f"config upload -> {r.status_code}")
        manifest = oras.oci.NewManifest()
        manifest["artifactType"] = ARTIFACT_TYPE
        manifest["config"] = conf
        manifest["layers"] = [descriptor(p, mt) for p, mt in self.fx.layers]
        manifest["annotations"] = {
            "org.opencontainers.image.version": "2.1.0",
            "org.opencontainers.image.created": "2025-01-15T10:30:00Z",
            "org.opencontainers.image.authors": "stellaops",
            "org.opencontainers.image.description": "Standard security policy pack",
            "org.opencontainers.image.title": "Baseline Security Policy",
        }
        r = self.client.upload_manifest(manifest, container)
        expect(r.status_code == 201, f"manifest PUT -> {r.status_code} {r.text[:300]}")
        body = r.request.body
        body = body if isinstance(body, bytes) else body.encode()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        expect(r.headers.get("Docker-Content-Digest") == digest,
               f"Docker-Content-Digest {r.headers.get('Docker-Content-Digest')} != {digest}")
        self.pushed_manifest = (manifest, digest, body, container)

        # Read back by tag and by digest: identical bytes, headers that name them.
        for ref in ("2.1.0", digest):
            g = self.raw_manifest("packs/policy-baseline-chunked", ref)
            expect(g.content == body, f"GET {ref}: manifest bytes differ from the pushed bytes")
            expect(g.headers.get("Content-Type") == OCI_MANIFEST, f"Content-Type {g.headers.get('Content-Type')}")
            expect(g.headers.get("Docker-Content-Digest") == digest, f"GET {ref}: digest header")
        m = self.client.get_manifest(container)
        expect(m.get("artifactType") == ARTIFACT_TYPE, f"artifactType {m.get('artifactType')!r}")
        expect(m["config"]["mediaType"] == CONFIG_TYPE, f"config mediaType {m['config']['mediaType']!r}")
        expect([l["mediaType"] for l in m["layers"]] == [CONTENT_TYPE, README_TYPE, SBOM_TYPE],
               f"layer media types {[l['mediaType'] for l in m['layers']]}")
        expect(m == manifest, "manifest JSON differs from the pushed one")

        out = os.path.join(self.workdir, "pull-chunked")
        os.makedirs(out)
        files = self.client.pull(target=f"{self.host}/packs/policy-baseline-chunked:2.1.0", outdir=out)
        self.compare_pulled(files, out)

    @check("blob GET Range on the ~6 MiB layer returns exactly the asked bytes (206)")
    def blob_range(self):
        digest = sha256_file(self.fx.content)
        start, end = 3 * 1024 * 1024 + 7, 3 * 1024 * 1024 + 7 + 65535
        r = self.client.do_request(self.url(f"packs/policy-baseline-chunked/blobs/{digest}"), "GET",
                                   headers={"Range": f"bytes={start}-{end}"})
        expect(r.status_code == 206, f"status {r.status_code}")
        with open(self.fx.content, "rb") as f:
            f.seek(start)
            want = f.read(end - start + 1)
        expect(r.content == want, "ranged bytes differ")

    @check("referrers: oras push with subject, listed by GET /referrers (+ artifactType filter)")
    def referrers(self):
        expect(self.pushed_manifest is not None, "needs the artifactType push above")
        manifest, digest, body, _ = self.pushed_manifest
        subject = oras.oci.Subject(mediaType=OCI_MANIFEST, digest=digest, size=len(body))
        cwd = os.getcwd()
        os.chdir(self.fx.src)
        try:
            r = self.client.push(
                target=f"{self.host}/packs/policy-baseline-chunked:sig",
                files=[f"{os.path.basename(self.fx.signature)}:{SIG_LAYER_TYPE}"],
                manifest_config=f"{os.path.basename(self.fx.config)}:{SIG_CONFIG_TYPE}",
                subject=subject,
                quiet=True,
            )
        finally:
            os.chdir(cwd)
        expect(r.status_code == 201, f"referrer PUT -> {r.status_code} {r.text[:300]}")
        expect(r.headers.get("OCI-Subject") == digest, f"OCI-Subject {r.headers.get('OCI-Subject')!r}")
        sig_body = r.request.body if isinstance(r.request.body, bytes) else r.request.body.encode()
        sig_digest = "sha256:" + hashlib.sha256(sig_body).hexdigest()

        g = self.client.do_request(self.url(f"packs/policy-baseline-chunked/referrers/{digest}"), "GET")
        expect(g.status_code == 200, f"referrers -> {g.status_code}")
        expect(g.headers.get("Content-Type") == OCI_INDEX, f"Content-Type {g.headers.get('Content-Type')}")
        idx = g.json()
        got = [d for d in idx.get("manifests", []) if d.get("digest") == sig_digest]
        expect(len(got) == 1, f"signature {sig_digest} not listed: {idx}")
        # No artifactType in the manifest: the config media type stands in (spec).
        expect(got[0].get("artifactType") == SIG_CONFIG_TYPE, f"artifactType {got[0].get('artifactType')!r}")
        expect(got[0].get("mediaType") == OCI_MANIFEST and got[0].get("size") == len(sig_body), f"descriptor {got[0]}")

        f = self.client.do_request(
            self.url(f"packs/policy-baseline-chunked/referrers/{digest}?artifactType={quote(SIG_CONFIG_TYPE, safe='')}"),
            "GET")
        expect(f.status_code == 200 and len(f.json()["manifests"]) == 1, f"filtered -> {f.status_code} {f.text[:300]}")
        n = self.client.do_request(
            self.url(f"packs/policy-baseline-chunked/referrers/{digest}?artifactType=application/x-none"), "GET")
        expect(n.status_code == 200 and n.json()["manifests"] == [], f"non-matching filter -> {n.text[:300]}")

    @check("tags (get_tags) and delete_tag: tag listed, deleted, then gone")
    def tags_and_delete(self):
        target = f"{self.repo}:2.1.0-oras"
        tags = self.client.get_tags(target)
        expect(tags == ["2.1.0-oras"], f"tags {tags}")
        # A second tag on the same content, via the provider API (manifest re-PUT under a new tag).
        m = self.client.get_manifest(target)
        r = self.client.upload_manifest(m, self.client.get_container(f"{self.repo}:latest"))
        expect(r.status_code == 201, f"re-tag PUT -> {r.status_code}")
        tags = self.client.get_tags(target)
        expect(sorted(tags) == ["2.1.0-oras", "latest"], f"tags {tags}")
        tags = self.client.get_tags(target, N=1)
        expect(tags == ["2.1.0-oras"], f"get_tags(N=1) -> {tags}")
        # delete_tag deletes the manifest the tag points at (by digest): both tags go.
        expect(self.client.delete_tag(target, "latest") is True, "delete_tag returned False")
        g = self.client.do_request(self.url("packs/policy-baseline/manifests/2.1.0-oras"), "GET",
                                   headers={"Accept": OCI_MANIFEST})
        expect(g.status_code == 404, f"deleted manifest still answers {g.status_code}")
        expect(g.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN", f"error body {g.text[:300]}")
        tags = self.client.get_tags(target)
        expect(tags == [], f"tags after delete {tags}")
        expect(self.client.delete_tag(target, "latest") is False, "deleting a missing tag should report False")

    @check("no 5xx answer to any oras-py request (its retries would hide them)")
    def no_server_errors(self):
        expect(not self.server_errors, "; ".join(self.server_errors[:5]))


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    host, workdir = sys.argv[1], sys.argv[2]
    os.makedirs(workdir, exist_ok=True)
    c = Checks(host, workdir)
    c.ping()
    c.push_highlevel()
    c.pull_highlevel()
    c.manifest_highlevel()
    c.push_artifact_type()
    c.blob_range()
    c.referrers()
    c.tags_and_delete()
    c.no_server_errors()
    return 0 if all(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
