#!/usr/bin/env python3
"""Writes tools/code-order.txt: the functions a release build runs at start-up and
while serving, so that the linker places them side by side (build.rs hands the file
to lld as --symbol-ordering-file).

Why: the kernel maps code around every page a process touches ("fault-around", 64 KiB
by default, and whole large folios of the page cache on recent kernels). The
registry's start-up and request paths run about 4 MiB of functions scattered over
18 MB of code, so most of its resident memory after start was code it never ran
(13 MiB). Placed together, the same functions fill about 4 MiB.

How, in two runs of a release binary, each driven through start-up and the requests
users make (pushes, pulls, ranges, tags, deletes, /packs, the UI):
1. With the binary's pages out of the page cache and the disk's read-ahead off, a
   code page becomes resident only when the process runs it: the functions on the
   resident pages (/proc/PID/pagemap) are the candidates.
2. An uprobe on each candidate's entry counts which of them run, at start-up and
   during the requests. The list is those, start-up first, each group in address
   order.

Run as root, on a machine with tracefs (it sets the disk's read_ahead_kb for a
minute and puts it back). It takes 5-15 minutes, most of them the kernel removing
the probes (one RCU grace period each, ~0.1 s):

    cargo build --release --bin packs-registry
    sudo python3 tools/code_order.py target/release/packs-registry

Run it again after large changes: names that no longer exist are skipped by the
linker, so a stale file costs memory, never correctness. (The registry's own crate
is built as one codegen unit in release, so that its names do not carry the
per-unit `.llvm.<hash>` suffix that any edit changes.)
"""

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

PAGE = os.sysconf("SC_PAGE_SIZE")


def read_ahead_path(path):
    st = os.stat(path)
    dev = f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    for cand in (f"{dev}/queue/read_ahead_kb", f"{dev}/../queue/read_ahead_kb"):
        if os.path.exists(cand):
            return os.path.realpath(cand)
    sys.exit(f"no read_ahead_kb for the device of {path}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(base, method, path, body=None, headers=None):
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def workload(base):
    """The requests users make: pushes (monolithic and chunked), pulls, ranges, tags,
    the catalog, referrers, deletes, and the /packs facade."""

    def must(status, want, what):
        if status not in want:
            sys.exit(f"{what}: HTTP {status}")

    def push_blob(repo, data, chunked=False):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not chunked:
            s, _, _ = request(
                base, "POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", data,
                {"Content-Type": "application/octet-stream"},
            )
            must(s, (201,), "monolithic push")
            return digest
        s, h, _ = request(base, "POST", f"/v2/{repo}/blobs/uploads/")
        must(s, (202,), "start upload")
        loc = h["Location"]
        half = len(data) // 2
        for off, part in ((0, data[:half]), (half, data[half:])):
            s, h, _ = request(
                base, "PATCH", loc, part,
                {"Content-Type": "application/octet-stream",
                 "Content-Range": f"{off}-{off + len(part) - 1}"},
            )
            must(s, (202,), "chunk")
            loc = h["Location"]
        sep = "&" if "?" in loc else "?"
        s, _, _ = request(base, "PUT", f"{loc}{sep}digest={digest}")
        must(s, (201,), "close upload")
        return digest

    for i in range(3):
        repo = f"order/app{i}"
        config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
        layer = os.urandom(3 << 20)
        cd = push_blob(repo, config)
        ld = push_blob(repo, layer, chunked=i % 2 == 1)
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": cd, "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": ld, "size": len(layer)}],
        }).encode()
        ct = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
        s, h, _ = request(base, "PUT", f"/v2/{repo}/manifests/v{i}", manifest, ct)
        must(s, (201,), "manifest push")
        md = h["Docker-Content-Digest"]
        for _ in range(20):
            request(base, "GET", f"/v2/{repo}/manifests/v{i}", headers={"Accept": ct["Content-Type"]})
            request(base, "HEAD", f"/v2/{repo}/manifests/{md}")
            request(base, "HEAD", f"/v2/{repo}/blobs/{ld}")
        s, _, got = request(base, "GET", f"/v2/{repo}/blobs/{ld}")
        must(s, (200,), "blob pull")
        if got != layer:
            sys.exit("blob pull: wrong bytes")
        request(base, "GET", f"/v2/{repo}/blobs/{ld}", headers={"Range": "bytes=100-8191"})
        request(base, "GET", f"/v2/{repo}/tags/list")
        request(base, "GET", f"/v2/{repo}/referrers/{md}")
        request(base, "GET", f"/v2/{repo}/manifests/missing")
        request(base, "GET", "/v2/_catalog")
        if i == 2:
            must(request(base, "DELETE", f"/v2/{repo}/manifests/{md}")[0], (202,), "delete")

    pack = os.path.join(os.path.dirname(__file__), "..", "examples", "packs", "publish.sh")
    if os.path.exists(pack):
        subprocess.run(["bash", pack, base], check=False, capture_output=True, timeout=120)
    for path in ("/packs", "/packs?q=policy", "/healthz", "/readyz", "/metrics", "/v2/",
                 "/ui/", "/ui/status", "/ui/assets/style.css"):
        request(base, "GET", path)
    s, _, body = request(base, "GET", "/packs")
    must(s, (200,), "pack list")
    for item in json.loads(body)["packs"][:4]:
        pid = item["packId"]
        request(base, "GET", f"/packs/{pid}")
        s, _, vb = request(base, "GET", f"/packs/{pid}/versions")
        for v in json.loads(vb)["versions"][:1] if s == 200 else []:
            request(base, "GET", f"/packs/{pid}/{v['version']}")
            request(base, "GET", f"/packs/{pid}/{v['version']}", headers={"Range": "bytes=0-99"})


def resident_pages(pid, binary):
    """File offsets of the binary's executable pages that the process has mapped."""
    real = os.path.realpath(binary)
    spans = []
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            parts = line.split()
            if len(parts) >= 6 and parts[5] == real and "x" in parts[1]:
                start, end = (int(x, 16) for x in parts[0].split("-"))
                spans.append((start, end, int(parts[2], 16)))
    pages = set()
    with open(f"/proc/{pid}/pagemap", "rb") as pm:
        for start, end, off in spans:
            pm.seek(start // PAGE * 8)
            raw = pm.read((end - start) // PAGE * 8)
            for i in range(len(raw) // 8):
                if int.from_bytes(raw[i * 8:i * 8 + 8], "little") >> 63:
                    pages.add(off + i * PAGE)
    return pages


def text_segments(binary):
    """(file offset, virtual address, size) of each executable PT_LOAD."""
    out = subprocess.run(["readelf", "-lW", binary], check=True, capture_output=True, text=True)
    segs = []
    for line in out.stdout.splitlines():
        f = line.split()
        if f and f[0] == "LOAD" and "E" in "".join(f[6:-1]):
            segs.append((int(f[1], 16), int(f[2], 16), int(f[4], 16)))
    return segs


def functions(binary):
    """{address: (size, [names])} of the functions in the executable segments."""
    out = subprocess.run(["nm", "-S", "--defined-only", binary], check=True,
                         capture_output=True, text=True)
    funcs = {}
    for line in out.stdout.splitlines():
        f = line.split(maxsplit=3)
        if len(f) == 4 and f[2] in "tTWw":
            size, names = funcs.setdefault(int(f[0], 16), (int(f[1], 16), []))
            names.append(f[3])
    return funcs


def on_pages(pages, segs, funcs):
    """Addresses of the functions that lie on one of the resident pages (file offsets)."""
    addrs = set()
    for off in pages:
        for soff, vaddr, size in segs:
            # The segment's first page may start before it (its file offset is not
            # page-aligned: the page is shared with the segment before).
            if off < soff + size and off + PAGE > soff:
                addrs.add((vaddr + off - soff) // PAGE)
    return {
        addr for addr, (size, _) in funcs.items()
        if any(p in addrs for p in range(addr // PAGE, (addr + max(size, 1) - 1) // PAGE + 1))
    }


class Server:
    """`serve` on a fresh data folder, ready when constructed."""

    def __init__(self, binary, work, name):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [binary, "serve", "--data-dir", os.path.join(work, name),
             "--listen", f"127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for _ in range(600):
            try:
                if request(self.base, "GET", "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            self.stop()
            sys.exit("the server did not become ready")
        time.sleep(2)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


def candidates(binary, work, idle, segs, funcs):
    """Run 1: functions on the code pages the process made resident."""
    with open(binary, "rb") as f:
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    ra = read_ahead_path(binary)
    with open(ra) as f:
        ra_before = f.read().strip()
    try:
        with open(ra, "w") as f:
            f.write("0")
        server = Server(binary, work, "data1")
        try:
            pages = resident_pages(server.proc.pid, binary)
            workload(server.base)
            time.sleep(idle)
            pages |= resident_pages(server.proc.pid, binary)
        finally:
            server.stop()
    finally:
        with open(ra, "w") as f:
            f.write(ra_before)
    return on_pages(pages, segs, funcs)


TRACEFS = "/sys/kernel/tracing"
GROUP = "packs_code_order"


def probe_hits():
    hits = set()
    with open(f"{TRACEFS}/uprobe_profile") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[1].startswith("f") and int(parts[2]) > 0:
                hits.add(parts[1])
    return hits


def run_functions(binary, work, idle, segs, funcs, addrs):
    """Run 2: which candidates run, at start-up and then during the workload."""
    if not os.path.exists(f"{TRACEFS}/uprobe_events"):
        subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], check=True)
    soff, vaddr, _ = segs[0]
    probes = {}
    # Appended one definition per write (Python's "a" mode seeks to the end, which
    # tracefs refuses).
    events = os.open(f"{TRACEFS}/uprobe_events", os.O_WRONLY | os.O_APPEND)
    try:
        for i, addr in enumerate(sorted(addrs)):
            try:
                os.write(events, f"p:{GROUP}/f{i} {binary}:0x{addr - vaddr + soff:x}\n".encode())
                probes[f"f{i}"] = addr
            except OSError as e:
                print(f"no probe at {addr:#x} ({funcs[addr][1][0]}): {e}", file=sys.stderr)
        with open(f"{TRACEFS}/events/{GROUP}/enable", "w") as f:
            f.write("1")
        server = Server(binary, work, "data2")
        try:
            at_start = probe_hits()
            workload(server.base)
            time.sleep(idle)
            after = probe_hits()
        finally:
            server.stop()
    finally:
        print(f"removing {len(probes)} uprobes...", file=sys.stderr)
        if os.path.exists(f"{TRACEFS}/events/{GROUP}/enable"):
            with open(f"{TRACEFS}/events/{GROUP}/enable", "w") as f:
                f.write("0")
        for name in probes:
            try:
                os.write(events, f"-:{GROUP}/{name}\n".encode())
            except OSError:
                pass
        os.close(events)
    return ({probes[n] for n in at_start},
            {probes[n] for n in after - at_start})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "code-order.txt"))
    ap.add_argument("--idle", type=float, default=25.0,
                    help="seconds to idle after the workload (the memory trim runs then)")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="code-order-")
    try:
        binary = os.path.join(work, "packs-registry")
        shutil.copy(args.binary, binary)
        segs, funcs = text_segments(binary), functions(binary)
        addrs = candidates(binary, work, args.idle, segs, funcs)
        print(f"{len(addrs)} functions on resident code pages", file=sys.stderr)
        at_start, later = run_functions(binary, work, args.idle, segs, funcs, addrs)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    mib = lambda group: sum(funcs[a][0] for a in group) / 2**20
    with open(args.out, "w") as f:
        for group in (at_start, later):
            for addr in sorted(group):
                for name in funcs[addr][1]:
                    f.write(name + "\n")
    print(
        f"{len(at_start)} functions ({mib(at_start):.1f} MiB) run at start-up, "
        f"{len(later)} more ({mib(later):.1f} MiB) while serving -> {args.out}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
