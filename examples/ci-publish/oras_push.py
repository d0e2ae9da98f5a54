#!/usr/bin/env python3
"""`oras push` with an artifact type, written with oras-py (PyPI `oras`), whose push()
has no artifact type: the blobs go up through oras-py, then the manifest is built
with `artifactType` and put by tag.

    oras_push.py HOST:PORT/REPOSITORY:TAG --artifact-type TYPE \\
        --config FILE:MEDIA_TYPE [--annotation KEY=VALUE ...] FILE:MEDIA_TYPE [...]

is what `oras push --plain-http HOST:PORT/REPOSITORY:TAG --artifact-type TYPE
--config FILE:MEDIA_TYPE --annotation KEY=VALUE FILE:MEDIA_TYPE` does with the oras
CLI. Plain HTTP (a loopback registry). Prints the manifest digest.
"""

import argparse
import hashlib
import os
import sys

import oras.provider

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def descriptor(path, media_type, title=None):
    with open(path, "rb") as f:
        data = f.read()
    d = {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }
    if title:
        d["annotations"] = {"org.opencontainers.image.title": title}
    return d


def split(arg):
    path, _, media_type = arg.rpartition(":")
    if not path:
        sys.exit(f"{arg}: expected FILE:MEDIA_TYPE")
    return path, media_type


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target")
    parser.add_argument("--artifact-type", required=True)
    parser.add_argument("--config", required=True, help="FILE:MEDIA_TYPE")
    parser.add_argument("--annotation", action="append", default=[], help="KEY=VALUE")
    parser.add_argument("files", nargs="+", help="FILE:MEDIA_TYPE")
    args = parser.parse_args()

    registry = oras.provider.Registry(hostname=args.target.split("/")[0], insecure=True)
    container = registry.get_container(args.target)
    config_path, config_type = split(args.config)
    config = descriptor(config_path, config_type)
    layers = []
    for arg in [args.config] + args.files:
        path, media_type = split(arg)
        is_config = arg == args.config
        d = config if is_config else descriptor(path, media_type, os.path.basename(path))
        if not is_config:
            layers.append(d)
        response = registry.upload_blob(path, container, d)
        if response.status_code not in (200, 201, 202):
            sys.exit(f"uploading {path}: {response.status_code} {response.text[:300]}")
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": args.artifact_type,
        "config": config,
        "layers": layers,
    }
    if args.annotation:
        manifest["annotations"] = dict(a.split("=", 1) for a in args.annotation)
    response = registry.upload_manifest(manifest, container)
    if response.status_code != 201:
        sys.exit(f"manifest PUT: {response.status_code} {response.text[:300]}")
    print(response.headers["Docker-Content-Digest"])


if __name__ == "__main__":
    main()
