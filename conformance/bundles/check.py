#!/usr/bin/env python3
"""Offline bundles with the real tools; run by run.sh, which starts the servers.

A is the connected registry, B and C empty offline ones (ours), D a CNCF Distribution.
Each check prints `PASS  bundles: <name>` or `FAIL  bundles: <name>: <reason>`; the last
line is `N passed, M failed`, and the exit status is non-zero if any failed.
"""

import argparse
import gzip
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import traceback

import requests

import oras.client

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
RESULTS = []


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def check(name, fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - every failure is reported
        traceback.print_exc(file=sys.stderr)
        detail = "".join(traceback.format_exception_only(type(e), e)).strip()
        print(f"FAIL  bundles: {name}: {detail}", flush=True)
        RESULTS.append(False)
        return
    print(f"PASS  bundles: {name}", flush=True)
    RESULTS.append(True)


class Run:
    def __init__(self, args):
        self.bin = args.bin
        self.a, self.b, self.c, self.d = args.a, args.b, args.c, args.distribution
        self.work = args.work
        self.helper = args.layout_helper
        rng = random.Random(18)
        # Incompressible content, several MiB: a realistic pack.
        self.base_content = bytes(rng.getrandbits(8) for _ in range(3 * 1024 * 1024 + 17))
        self.top_content = b"policy rules\n" * 1000
        self.archive = os.path.join(self.work, "bundle.tar")

    def cli(self, *args, ok=True):
        p = subprocess.run([self.bin, *args], capture_output=True, text=True, timeout=600)
        if ok:
            expect(p.returncode == 0, f"{args}: exit {p.returncode}: {p.stderr.strip()}")
        else:
            expect(p.returncode != 0, f"{args}: succeeded: {p.stdout.strip()}")
        return p

    def skopeo(self, *args):
        p = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=600)
        expect(p.returncode == 0, f"skopeo {' '.join(args)}: {p.stderr.strip()}")
        return p.stdout

    def publish(self, host, manifest, content):
        r = requests.post(
            f"http://{host}/packs",
            files={
                "manifest": ("manifest.json", json.dumps(manifest), "application/json"),
                "content": ("content", content, "application/octet-stream"),
            },
            timeout=120,
        )
        expect(r.status_code == 201, f"publish: {r.status_code} {r.text}")
        return r.json()

    # -- the checks ------------------------------------------------------------------

    def setup(self):
        self.publish(
            self.a,
            {"packId": "base-lib", "version": "1.2.0", "type": "policy", "name": "Base"},
            self.base_content,
        )
        top = self.publish(
            self.a,
            {
                "packId": "policy-baseline",
                "version": "2.1.0",
                "type": "policy",
                "name": "Baseline",
                "dependencies": [{"packId": "base-lib", "version": "^1.2"}],
            },
            self.top_content,
        )
        # A signature attached to the top pack (as cosign/notation would attach one).
        repo = "packs/policy-baseline"
        subject = requests.get(
            f"http://{self.a}/v2/{repo}/manifests/{top['manifestDigest']}",
            headers={"Accept": OCI_MANIFEST},
            timeout=30,
        ).content
        for blob in (b"{}", b"a signature"):
            r = requests.post(
                f"http://{self.a}/v2/{repo}/blobs/uploads/?digest={sha256(blob)}",
                data=blob,
                headers={"Content-Type": "application/octet-stream"},
                timeout=30,
            )
            expect(r.status_code == 201, f"blob: {r.status_code}")
        self.referrer = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(b"{}"), "size": 2},
                "layers": [{"mediaType": "application/octet-stream", "digest": sha256(b"a signature"), "size": 11}],
                "subject": {"mediaType": OCI_MANIFEST, "digest": top["manifestDigest"], "size": len(subject)},
            }
        ).encode()
        r = requests.put(
            f"http://{self.a}/v2/{repo}/manifests/{sha256(self.referrer)}",
            data=self.referrer,
            headers={"Content-Type": OCI_MANIFEST},
            timeout=30,
        )
        expect(r.status_code == 201, f"referrer: {r.status_code} {r.text}")
        self.top_manifest = top["manifestDigest"]

    def export(self):
        p = self.cli("bundle", "export", "--registry", f"http://{self.a}", "--pack",
                     "policy-baseline@^2", "-o", self.archive)
        printed = [l.split(" ", 1)[1] for l in p.stdout.splitlines() if l.startswith("sha256 ")]
        expect(printed == [file_sha256(self.archive)], f"printed {printed}")
        expect("2 packs, 1 referrers" in p.stdout, p.stdout)

    def deterministic(self):
        again = os.path.join(self.work, "again.tar")
        self.cli("bundle", "export", "--registry", f"http://{self.a}", "--pack",
                 "policy-baseline@2.1.0", "-o", again)
        expect(file_sha256(again) == file_sha256(self.archive), "two exports differ")

    def verify(self):
        p = self.cli("bundle", "verify", "--json", self.archive)
        listed = json.loads(p.stdout)
        packs = [(x["packId"], x["version"], x["type"]) for x in listed["packs"]]
        expect(packs == [("base-lib", "1.2.0", "policy"), ("policy-baseline", "2.1.0", "policy")], packs)
        expect(listed["referrers"] == 1, listed)

    def import_and_pull_with_oras(self):
        p = self.cli("bundle", "import", "--registry", f"http://{self.b}", self.archive)
        expect("imported 2 of 2 packs" in p.stdout, p.stdout)
        client = oras.client.OrasClient(hostname=self.b, insecure=True)
        for ref, content in (
            ("packs/base-lib:1.2.0", self.base_content),
            ("packs/policy-baseline:2.1.0", self.top_content),
        ):
            out = os.path.join(self.work, "pulled", ref.replace("/", "_"))
            os.makedirs(out, exist_ok=True)
            files = client.pull(target=f"{self.b}/{ref}", outdir=out)
            expect(len(files) == 1, f"{ref}: pulled {files}")
            with open(files[0], "rb") as f:
                expect(f.read() == content, f"{ref}: bytes differ")
        r = requests.get(f"http://{self.b}/v2/packs/policy-baseline/referrers/{self.top_manifest}", timeout=30)
        got = [m["digest"] for m in r.json()["manifests"]]
        expect(got == [sha256(self.referrer)], f"referrers {got}")
        r = requests.get(f"http://{self.b}/packs/policy-baseline", timeout=30)
        expect(r.json()["pack"]["dependencies"] == [{"packId": "base-lib", "version": "^1.2"}], r.text)

    def reimport(self):
        p = self.cli("bundle", "import", "--registry", f"http://{self.b}", self.archive)
        expect("nothing new" in p.stdout, p.stdout)
        gz = self.archive + ".gz"
        with open(self.archive, "rb") as src, gzip.open(gz, "wb") as dst:
            shutil.copyfileobj(src, dst)
        p = self.cli("bundle", "import", "--registry", f"http://{self.b}", gz)
        expect("nothing new" in p.stdout, p.stdout)

    def refused(self):
        with open(self.archive, "rb") as f:
            data = bytearray(f.read())
        # Flip a byte inside the big content blob (the archive's largest entry).
        data[len(data) // 2] ^= 0xFF
        bad = os.path.join(self.work, "damaged.tar")
        with open(bad, "wb") as f:
            f.write(data)
        before = requests.get(f"http://{self.c}/v2/_catalog", timeout=30).json()
        p = self.cli("bundle", "import", "--registry", f"http://{self.c}", bad, ok=False)
        expect("corrupted" in p.stderr, p.stderr)
        p = self.cli("bundle", "verify", bad, ok=False)
        expect("corrupted" in p.stderr, p.stderr)
        after = requests.get(f"http://{self.c}/v2/_catalog", timeout=30).json()
        expect(before == after, f"{before} -> {after}")

    def skopeo_archive_into_ours(self):
        # A plain image, pushed to A with skopeo, copied out as an oci-archive by
        # skopeo, imported into C: it lands where its ref name says.
        layout = os.path.join(self.work, "layout")
        subprocess.run([sys.executable, self.helper, "make", layout], check=True)
        self.skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://{self.a}/team/app:v1")
        sk = os.path.join(self.work, "skopeo.tar")
        self.skopeo("copy", "--src-tls-verify=false", f"docker://{self.a}/team/app:v1",
                    f"oci-archive:{sk}:team/app:v1")
        p = self.cli("bundle", "import", "--registry", f"http://{self.c}", sk)
        expect("sha256 " in p.stdout, p.stdout)
        want = self.skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{self.a}/team/app:v1")
        got = self.skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{self.c}/team/app:v1")
        expect(want == got, "manifests differ")
        # A pack copied out by skopeo goes to its pack's repository and is indexed.
        pk = os.path.join(self.work, "skopeo-pack.tar")
        self.skopeo("copy", "--src-tls-verify=false", f"docker://{self.a}/packs/base-lib:1.2.0",
                    f"oci-archive:{pk}:base")
        self.cli("bundle", "import", "--registry", f"http://{self.c}", pk)
        r = requests.get(f"http://{self.c}/packs/base-lib/1.2.0", timeout=60)
        expect(r.status_code == 200 and r.content == self.base_content, f"{r.status_code}")

    def skopeo_bundle_into(self, host, name):
        for ref in ("packs/base-lib:1.2.0", "packs/policy-baseline:2.1.0"):
            self.skopeo("copy", "--dest-tls-verify=false", f"oci-archive:{self.archive}:{ref}",
                        f"docker://{host}/{ref}")
            want = self.skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{self.a}/{ref}")
            got = self.skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{host}/{ref}")
            expect(want == got, f"{name}: {ref}: manifests differ")
        client = oras.client.OrasClient(hostname=host, insecure=True)
        out = os.path.join(self.work, "pulled-" + name)
        os.makedirs(out, exist_ok=True)
        files = client.pull(target=f"{host}/packs/base-lib:1.2.0", outdir=out)
        with open(files[0], "rb") as f:
            expect(f.read() == self.base_content, f"{name}: bytes differ")


def main():
    parser = argparse.ArgumentParser()
    for flag in ("--bin", "--a", "--b", "--c", "--distribution", "--work", "--layout-helper"):
        parser.add_argument(flag, required=True)
    run = Run(parser.parse_args())
    check("publish packs and a signature to A", run.setup)
    check("bundle export prints the archive's SHA-256", run.export)
    check("a second export has the same SHA-256", run.deterministic)
    check("bundle verify --json lists the packs offline", run.verify)
    check("import into B, pull with oras-py: same bytes, referrer, dependencies", run.import_and_pull_with_oras)
    check("re-import (.tar and .tar.gz): nothing new", run.reimport)
    check("a damaged archive is refused, C unchanged", run.refused)
    check("skopeo-written oci-archive imports into C", run.skopeo_archive_into_ours)
    check("skopeo copy oci-archive:bundle.tar:<ref> into ours (C)", lambda: run.skopeo_bundle_into(run.c, "ours"))
    check("skopeo copy oci-archive:bundle.tar:<ref> into Distribution",
          lambda: run.skopeo_bundle_into(run.d, "distribution"))
    passed = sum(RESULTS)
    print(f"{passed} passed, {len(RESULTS) - passed} failed")
    sys.exit(0 if all(RESULTS) else 1)


if __name__ == "__main__":
    main()
