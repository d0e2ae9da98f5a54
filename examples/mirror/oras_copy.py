#!/usr/bin/env python3
"""`oras cp` written with oras-py (PyPI `oras`, which has no copy): one artifact from
one registry to another, digests preserved.

    oras_copy.py SRC_HOST:PORT/REPOSITORY:TAG DST_HOST:PORT/REPOSITORY[:TAG]

The manifest is read as raw bytes and put back byte for byte (so its digest is
kept: oras-py's own upload_manifest re-serializes the JSON); for an image index the
child manifests are copied first, by digest. Blobs the destination has already are
skipped; the others are streamed through a temporary file and checked against their
digest on the way. Plain HTTP (loopback registries). Prints the manifest digest.
"""

import hashlib
import sys
import tempfile

import oras.container
import oras.provider

MANIFEST_TYPES = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
]
INDEX_TYPES = {MANIFEST_TYPES[1], MANIFEST_TYPES[3]}


class Endpoint:
    def __init__(self, ref):
        self.registry = oras.provider.Registry(hostname=ref.split("/")[0], insecure=True)
        self.container = self.registry.get_container(ref)

    def at(self, tag_or_digest):
        c = self.container
        sep = "@" if tag_or_digest.startswith("sha256:") else ":"
        return self.registry.get_container(f"{c.registry}/{c.api_prefix}{sep}{tag_or_digest}")

    def manifest_url(self, reference):
        return f"{self.registry.prefix}://{self.at(reference).manifest_url()}"


def copy_manifest(src, dst, reference, tag=None):
    """Copies the manifest `reference` (tag or digest) and what it references; its digest."""
    r = src.registry.do_request(
        src.manifest_url(reference), "GET", headers={"Accept": ", ".join(MANIFEST_TYPES)})
    if r.status_code != 200:
        sys.exit(f"GET manifest {reference}: {r.status_code} {r.text[:300]}")
    raw, media_type = r.content, r.headers["Content-Type"].split(";")[0]
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    if reference.startswith("sha256:") and reference != digest:
        sys.exit(f"manifest {reference}: bytes hash to {digest}")
    manifest = r.json()
    if media_type in INDEX_TYPES:
        for child in manifest["manifests"]:
            copy_manifest(src, dst, child["digest"])
    else:
        for blob in [manifest["config"]] + manifest.get("layers", []):
            copy_blob(src, dst, blob)
    put = dst.registry.do_request(
        dst.manifest_url(tag or digest), "PUT", headers={"Content-Type": media_type}, data=raw)
    if put.status_code != 201:
        sys.exit(f"PUT manifest {tag or digest}: {put.status_code} {put.text[:300]}")
    if put.headers.get("Docker-Content-Digest") != digest:
        sys.exit(f"the destination stored {put.headers.get('Docker-Content-Digest')}, not {digest}")
    return digest


def copy_blob(src, dst, blob):
    if dst.registry.blob_exists(blob, dst.container):
        return
    with tempfile.NamedTemporaryFile() as tmp:
        r = src.registry.get_blob(src.container, blob["digest"], stream=True)
        if r.status_code != 200:
            sys.exit(f"GET blob {blob['digest']}: {r.status_code}")
        h = hashlib.sha256()
        for chunk in r.iter_content(chunk_size=1 << 20):
            h.update(chunk)
            tmp.write(chunk)
        tmp.flush()
        if "sha256:" + h.hexdigest() != blob["digest"]:
            sys.exit(f"blob {blob['digest']}: the source sent bytes hashing to sha256:{h.hexdigest()}")
        up = dst.registry.upload_blob(tmp.name, dst.container, blob)
        if up.status_code not in (200, 201, 202):
            sys.exit(f"upload {blob['digest']}: {up.status_code} {up.text[:300]}")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = Endpoint(sys.argv[1]), Endpoint(sys.argv[2])
    tag = dst.container.tag if ":" in sys.argv[2].split("/", 1)[1] else src.container.tag
    print(copy_manifest(src, dst, src.container.tag, tag))


if __name__ == "__main__":
    main()
