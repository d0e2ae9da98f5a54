#!/usr/bin/env python3
"""The /packs facade with a real OCI client, oras-py (PyPI `oras`).

Usage: packs_oras_check.py HOST:PORT WORKDIR

Publishes a pack with POST /packs (plain HTTP multipart, as curl or CI would), pulls
it with oras and compares the bytes; pushes another pack with `oras push` (the pack
config media type, as DESIGN §6 describes) and checks that /packs lists, describes
and serves both. Prints `PASS  <name>` / `FAIL  <name>: <reason>` per check, as
oras_check.py does, and exits non-zero if any failed. Run by run.sh.
"""

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import traceback

import requests

import oras.client

CONFIG_TYPE = "application/vnd.stellaops.pack.config.v1+json"
CONTENT_TYPE = "application/vnd.stellaops.pack.content.v1.tar+gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

RESULTS = []


def check(name):
    def wrap(fn):
        def run(self):
            try:
                fn(self)
            except Exception as e:  # noqa: BLE001 - every failure is reported
                traceback.print_exc(file=sys.stderr)
                detail = "".join(traceback.format_exception_only(type(e), e)).strip()
                print(f"FAIL  oras packs: {name}: {detail}", flush=True)
                RESULTS.append(False)
                return
            print(f"PASS  oras packs: {name}", flush=True)
            RESULTS.append(True)

        return run

    return wrap


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tarball(files):
    """A reproducible .tar.gz of {name: bytes}."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mtime = 1736937000
            tar.addfile(info, io.BytesIO(files[name]))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


class Checks:
    def __init__(self, host, workdir):
        self.host = host
        self.base = f"http://{host}"
        self.workdir = workdir
        self.client = oras.client.OrasClient(hostname=host, insecure=True)
        self.posted = tarball({
            "rules/posted.rego": b"package posted\n\ndefault allow := true\n",
            "data.json": b'{"posted": true}\n',
        })
        self.pushed = tarball({"analyzer.yaml": b"kind: analyzer\nname: pushed\n" * 100})
        self.posted_manifest = {
            "packId": "oras-posted", "version": "1.0.0", "type": "policy",
            "name": "Posted with POST /packs", "description": "pulled back with oras",
            "author": "clients", "dependencies": [], "metadata": {"minRunnerVersion": "1.5.0"},
        }

    @check("POST /packs publishes a pack (201, digest of the content)")
    def publish(self):
        r = requests.post(
            f"{self.base}/packs",
            files=[
                ("manifest", ("pack.json", json.dumps(self.posted_manifest), "application/json")),
                ("content", ("oras-posted.tar.gz", self.posted, CONTENT_TYPE)),
            ],
            timeout=60,
        )
        expect(r.status_code == 201, f"POST /packs -> {r.status_code} {r.text[:300]}")
        body = r.json()
        expect(body["packId"] == "oras-posted" and body["version"] == "1.0.0", f"answer {body}")
        expect(body["digest"] == sha256(self.posted), f"digest {body['digest']}")
        self.posted_manifest_digest = body["manifestDigest"]

    @check("oras pull of the POSTed pack: the content file, byte for byte, under its title")
    def pull_posted(self):
        out = os.path.join(self.workdir, "pull-posted")
        os.makedirs(out, exist_ok=True)
        files = self.client.pull(target=f"{self.host}/packs/oras-posted:1.0.0", outdir=out)
        names = sorted(os.path.basename(f) for f in files)
        expect(names == ["oras-posted-1.0.0.tar.gz"], f"pulled {names}")
        with open(files[0], "rb") as f:
            expect(f.read() == self.posted, "pulled content differs from the POSTed content")
        m = self.client.get_manifest(f"{self.host}/packs/oras-posted:1.0.0")
        expect(m.get("artifactType") == "application/vnd.stellaops.pack.policy.v1",
               f"artifactType {m.get('artifactType')!r}")
        expect(m["config"]["mediaType"] == CONFIG_TYPE, f"config {m['config']}")
        expect(m["layers"][0]["mediaType"] == CONTENT_TYPE, f"layer {m['layers'][0]}")
        expect(m["annotations"].get("org.opencontainers.image.version") == "1.0.0",
               f"annotations {m.get('annotations')}")

    @check("oras push of another pack (pack config media type) is indexed by /packs")
    def push_other(self):
        src = os.path.join(self.workdir, "push-src")
        os.makedirs(src, exist_ok=True)
        with open(os.path.join(src, "oras-pushed-2.0.0.tar.gz"), "wb") as f:
            f.write(self.pushed)
        with open(os.path.join(src, "pack.json"), "w") as f:
            json.dump({
                "packId": "oras-pushed", "version": "2.0.0", "type": "analyzer",
                "name": "Pushed with oras", "description": "listed through /packs",
                "digest": sha256(self.pushed), "size": len(self.pushed),
                "author": "clients", "dependencies": [], "metadata": {},
            }, f)
        cwd = os.getcwd()
        os.chdir(src)  # oras-py validates that pushed paths are under the cwd
        try:
            r = self.client.push(
                target=f"{self.host}/packs/oras-pushed:2.0.0",
                files=[f"oras-pushed-2.0.0.tar.gz:{CONTENT_TYPE}"],
                manifest_config=f"pack.json:{CONFIG_TYPE}",
                manifest_annotations={"org.opencontainers.image.created": "2025-01-15T10:30:00Z"},
                quiet=True,
            )
        finally:
            os.chdir(cwd)
        expect(r.status_code == 201, f"manifest PUT -> {r.status_code}")
        self.pushed_manifest_digest = r.headers.get("Docker-Content-Digest")

    @check("GET /packs lists both; each pack and its content served through /packs")
    def list_both(self):
        r = requests.get(f"{self.base}/packs", params={"q": "oras-"}, timeout=30)
        expect(r.status_code == 200, f"GET /packs -> {r.status_code} {r.text[:300]}")
        listed = {p["packId"]: p for p in r.json()["packs"]}
        expect(sorted(listed) == ["oras-posted", "oras-pushed"], f"listed {sorted(listed)}")
        expect(listed["oras-pushed"]["type"] == "analyzer", f"{listed['oras-pushed']}")
        expect(listed["oras-pushed"]["latestVersion"] == "2.0.0", f"{listed['oras-pushed']}")
        for pack_id, version, content, digest in [
            ("oras-posted", "1.0.0", self.posted, self.posted_manifest_digest),
            ("oras-pushed", "2.0.0", self.pushed, self.pushed_manifest_digest),
        ]:
            p = requests.get(f"{self.base}/packs/{pack_id}", timeout=30).json()["pack"]
            expect(p["version"] == version and p["digest"] == sha256(content), f"{pack_id}: {p}")
            expect(p["manifestDigest"] == digest, f"{pack_id}: manifestDigest {p['manifestDigest']}")
            g = requests.get(f"{self.base}/packs/{pack_id}/^{version.split('.')[0]}", timeout=60)
            expect(g.status_code == 200 and g.content == content, f"{pack_id}: download {g.status_code}")
            expect(g.headers.get("ETag") == f'"{sha256(content)}"', f"{pack_id}: ETag {g.headers.get('ETag')}")
        r = requests.get(f"{self.base}/packs", params={"type": "analyzer", "q": "oras"}, timeout=30)
        expect([p["packId"] for p in r.json()["packs"]] == ["oras-pushed"], f"type filter {r.text[:300]}")

    @check("oras delete_tag of the pushed pack removes it from /packs")
    def delete_pushed(self):
        expect(self.client.delete_tag(f"{self.host}/packs/oras-pushed:2.0.0", "2.0.0") is True,
               "delete_tag returned False")
        r = requests.get(f"{self.base}/packs/oras-pushed", timeout=30)
        expect(r.status_code == 404, f"GET /packs/oras-pushed -> {r.status_code}")
        expect(r.json()["error"]["code"] == "NOT_FOUND", f"error {r.text[:300]}")


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    host, workdir = sys.argv[1], sys.argv[2]
    os.makedirs(workdir, exist_ok=True)
    c = Checks(host, workdir)
    for step in (c.publish, c.pull_posted, c.push_other, c.list_both, c.delete_pushed):
        step()
    return 0 if all(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
