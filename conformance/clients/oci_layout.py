#!/usr/bin/env python3
"""OCI image layout helpers for conformance/clients/run.sh (no network, stdlib only).

  oci_layout.py make DIR
      Writes an OCI image layout with two references:
        v1     an image manifest: OCI config + 2 gzip layers (one ~6 MiB, incompressible)
        multi  an image index of two platform manifests (linux/amd64, linux/arm64) that
               share one layer
      Deterministic: the same bytes on every run.
  oci_layout.py digest DIR REF
      Prints the digest of the descriptor that REF names in DIR/index.json.
  oci_layout.py compare DIR_A REF_A DIR_B REF_B
      Checks that both refs name the same digest, then walks everything reachable
      from it (index -> manifests -> config + layers) and compares each blob byte for
      byte, also checking each blob's bytes hash to its name.
  oci_layout.py compare-dir OCI_DIR REF SKOPEO_DIR
      The same against a skopeo `dir:` copy (manifest.json + blobs named by hex):
      manifest.json must be the very manifest bytes, and every blob must match.
  oci_layout.py sha256 FILE
      Prints sha256:<hex> of FILE.
"""

import gzip
import hashlib
import io
import json
import os
import random
import sys
import tarfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


class Writer:
    def __init__(self, root):
        self.root = root
        os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)

    def blob(self, data, media_type, **extra):
        d = sha256(data)
        path = os.path.join(self.root, "blobs", "sha256", d.split(":", 1)[1])
        with open(path, "wb") as f:
            f.write(data)
        desc = {"mediaType": media_type, "digest": d, "size": len(data)}
        desc.update(extra)
        return desc


def tar_layer(files):
    """A gzip'd tar of {path: bytes}, plus the uncompressed tar's digest (diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mtime = 1736937000
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    plain = raw.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0) as g:
        g.write(plain)
    return gz.getvalue(), sha256(plain)


def image(w, arch, layers, created="2025-01-15T10:30:00Z"):
    config = {
        "created": created,
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Labels": {"org.stellaops.test": "skopeo"}},
        "rootfs": {"type": "layers", "diff_ids": [diff for _, diff in layers]},
        "history": [{"created": created, "created_by": f"layer {i}"} for i in range(len(layers))],
    }
    cdesc = w.blob(canonical(config), OCI_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": cdesc,
        "layers": [w.blob(gz, OCI_LAYER_GZIP) for gz, _ in layers],
        "annotations": {"org.opencontainers.image.created": created},
    }
    return w.blob(canonical(manifest), OCI_MANIFEST)


def make(root):
    w = Writer(root)
    rnd = random.Random(42)
    small = tar_layer({
        "etc/pack.conf": b"name=skopeo-test\nversion=1\n",
        "usr/share/doc/README": b"PacksRegistry skopeo conformance image\n" * 20,
    })
    big = tar_layer({"opt/pack/data.bin": rnd.randbytes(6 * 1024 * 1024 + 4321)})
    arm = tar_layer({"opt/pack/arch": b"arm64\n"})

    v1 = image(w, "amd64", [small, big])
    amd = image(w, "amd64", [small, big])
    assert amd["digest"] == v1["digest"]
    arm64 = image(w, "arm64", [small, arm])
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            dict(amd, platform={"architecture": "amd64", "os": "linux"}),
            dict(arm64, platform={"architecture": "arm64", "os": "linux"}),
        ],
    }
    multi = w.blob(canonical(index), OCI_INDEX)

    top = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            dict(v1, annotations={REF_NAME: "v1"}),
            dict(multi, annotations={REF_NAME: "multi"}),
        ],
    }
    with open(os.path.join(root, "index.json"), "wb") as f:
        f.write(canonical(top))
    with open(os.path.join(root, "oci-layout"), "wb") as f:
        f.write(b'{"imageLayoutVersion":"1.0.0"}')


def resolve(root, ref):
    with open(os.path.join(root, "index.json"), "rb") as f:
        top = json.load(f)
    found = [d for d in top["manifests"] if (d.get("annotations") or {}).get(REF_NAME) == ref]
    if len(found) != 1:
        # skopeo writes the bare tag; accept a single untagged entry too.
        if not found and len(top["manifests"]) == 1 and not ref:
            return top["manifests"][0]
        raise SystemExit(f"{root}: {len(found)} entries named {ref!r} in index.json")
    return found[0]


def read_blob(root, digest):
    alg, hexd = digest.split(":", 1)
    with open(os.path.join(root, "blobs", alg, hexd), "rb") as f:
        data = f.read()
    if sha256(data) != digest:
        raise SystemExit(f"{root}: blob {digest} does not hash to its name")
    return data


def walk(read, digest, media_type, seen):
    """Yields (digest, bytes) for everything reachable from a manifest or index."""
    if digest in seen:
        return
    seen.add(digest)
    data = read(digest)
    yield digest, data
    doc = json.loads(data)
    mt = doc.get("mediaType", media_type)
    if mt in (OCI_INDEX, "application/vnd.docker.distribution.manifest.list.v2+json"):
        for d in doc["manifests"]:
            yield from walk(read, d["digest"], d["mediaType"], seen)
    else:
        for d in [doc["config"]] + doc.get("layers", []):
            if d["digest"] not in seen:
                seen.add(d["digest"])
                yield d["digest"], read(d["digest"])


def compare(a, ref_a, b, ref_b):
    da, db = resolve(a, ref_a), resolve(b, ref_b)
    if da["digest"] != db["digest"]:
        raise SystemExit(f"top digests differ: {da['digest']} vs {db['digest']}")
    n = total = 0
    for digest, data in walk(lambda d: read_blob(a, d), da["digest"], da["mediaType"], set()):
        other = read_blob(b, digest)
        if other != data:
            raise SystemExit(f"blob {digest} differs between {a} and {b}")
        n += 1
        total += len(data)
    print(f"{da['digest']}: {n} blobs, {total} bytes identical")


def compare_dir(oci, ref, skdir):
    d = resolve(oci, ref)
    with open(os.path.join(skdir, "manifest.json"), "rb") as f:
        m = f.read()
    if sha256(m) != d["digest"]:
        raise SystemExit(f"{skdir}/manifest.json is {sha256(m)}, expected {d['digest']}")

    def read(digest):
        if digest == d["digest"]:
            return m
        with open(os.path.join(skdir, digest.split(":", 1)[1]), "rb") as f:
            data = f.read()
        if sha256(data) != digest:
            raise SystemExit(f"{skdir}: blob {digest} does not hash to its name")
        return data

    n = 0
    for digest, data in walk(read, d["digest"], d["mediaType"], set()):
        if data != read_blob(oci, digest):
            raise SystemExit(f"blob {digest} differs")
        n += 1
    print(f"{d['digest']}: {n} blobs identical in {skdir}")


def main(argv):
    if len(argv) >= 2 and argv[1] == "make" and len(argv) == 3:
        make(argv[2])
    elif len(argv) == 4 and argv[1] == "digest":
        print(resolve(argv[2], argv[3])["digest"])
    elif len(argv) == 6 and argv[1] == "compare":
        compare(*argv[2:])
    elif len(argv) == 5 and argv[1] == "compare-dir":
        compare_dir(*argv[2:])
    elif len(argv) == 3 and argv[1] == "sha256":
        with open(argv[2], "rb") as f:
            print(sha256(f.read()))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
