#!/usr/bin/env python3
"""oras-py (PyPI `oras`) against a PacksRegistry in token mode over TLS.

Usage: ORAS_AUTH_ALICE=… ORAS_AUTH_RUNNER=… oras_auth_check.py HOST:PORT CA_FILE WORKDIR

The registry is the one conformance/clients/run_auth.sh starts: `alice` may pull and
push under packs/ and public/, the robot `runner` may only pull under packs/, and
anyone may pull under public/. Every client verifies the server's certificate against
CA_FILE (oras-py's `tls_verify`) and authenticates through oras-py's own token flow:
it follows the WWW-Authenticate challenge to /token with the credentials of its
login. Prints `PASS  <name>` or `FAIL  <name>: <reason>` per check and exits non-zero
if any failed.
"""

import hashlib
import json
import os
import shutil
import sys
import traceback
import types

import oras.client
import oras.decorator

# oras-py retries a failed request five times, sleeping 3 s to 83 s in between; the
# refusals checked here would cost two minutes each. The retries still happen.
oras.decorator.time = types.SimpleNamespace(sleep=lambda _seconds: None)

ARTIFACT_TYPE = "application/vnd.stellaops.pack.policy.v1"
RESULTS = []


def check(name):
    def wrap(fn):
        def run(*a, **kw):
            try:
                fn(*a, **kw)
            except Exception as e:  # noqa: BLE001 - every failure is reported
                detail = "".join(traceback.format_exception_only(type(e), e)).strip()
                traceback.print_exc(file=sys.stderr)
                print(f"FAIL  oras: {name}: {detail}", flush=True)
                RESULTS.append(False)
                return
            print(f"PASS  oras: {name}", flush=True)
            RESULTS.append(True)

        return run

    return wrap


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def sha256(path):
    with open(path, "rb") as f:
        return "sha256:" + hashlib.sha256(f.read()).hexdigest()


class Checks:
    def __init__(self, host, ca, work):
        self.host = host
        self.ca = ca
        self.work = work
        self.alice = os.environ["ORAS_AUTH_ALICE"]
        self.runner = os.environ["ORAS_AUTH_RUNNER"]
        os.makedirs(work, exist_ok=True)
        os.chdir(work)  # oras-py pushes files under the working directory only
        self.files = []
        for name, size in (("rules.tar.gz", 300_000), ("README.md", 200)):
            with open(name, "wb") as f:
                f.write(os.urandom(size))
            self.files.append(name)
        self.docker_config = os.path.join(work, "docker-config.json")

    def client(self, user=None, password=None):
        """A fresh client trusting the test CA; logged in when a user is given."""
        c = oras.client.OrasClient(hostname=self.host, tls_verify=self.ca)
        if user:
            c.login(username=user, password=password, hostname=self.host,
                    config_path=self.docker_config)
        return c

    def ref(self, repo, tag="v1"):
        return f"{self.host}/{repo}:{tag}"

    def push(self, c, repo, tag="v1"):
        r = c.push(target=self.ref(repo, tag), files=self.files,
                   manifest_annotations={"org.opencontainers.image.version": "1.0.0"})
        expect(r.status_code == 201, f"manifest PUT answered {r.status_code}: {r.text}")

    def pull_and_compare(self, c, repo, out, tag="v1", **kw):
        shutil.rmtree(out, ignore_errors=True)
        pulled = c.pull(target=self.ref(repo, tag), outdir=out, **kw)
        names = sorted(os.path.basename(p) for p in pulled)
        expect(names == sorted(self.files), f"pulled {names}")
        for name in self.files:
            expect(sha256(os.path.join(out, name)) == sha256(name), f"{name} differs")

    def refused(self, what, fn):
        """`fn` must fail; returns the error text."""
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - any refusal will do, it is returned
            return f"{type(e).__name__}: {e}"
        status = getattr(result, "status_code", None)
        if status is not None and status >= 400:
            return f"HTTP {status}: {result.text}"
        raise AssertionError(f"{what} succeeded: {result!r}")

    def absent(self, repo, tag="v1"):
        """alice, who may pull there, finds no manifest under the tag."""
        c = self.client("alice", self.alice)
        error = self.refused("reading the manifest", lambda: c.get_manifest(self.ref(repo, tag)))
        expect("Not Found" in error or "404" in error, error)

    @check("login alice, push two layers over TLS through the token flow (201)")
    def login_push(self):
        self.push(self.client("alice", self.alice), "packs/team/oras-auth")

    @check("a new client with the login's stored credentials pulls, every file byte for byte")
    def stored_credentials_pull(self):
        with open(self.docker_config) as f:
            expect(self.host in json.load(f)["auths"], "login stored no credentials")
        c = self.client()
        self.pull_and_compare(c, "packs/team/oras-auth", "out-stored", config_path=self.docker_config)

    @check("one client, several repositories: pushes to one, then pulls another")
    def scope_switch(self):
        c = self.client("alice", self.alice)
        self.push(c, "packs/team/oras-second")
        self.pull_and_compare(c, "packs/team/oras-auth", "out-switch")
        self.pull_and_compare(c, "packs/team/oras-second", "out-second")

    @check("pull-only robot pulls, and cannot push (refused, nothing stored)")
    def robot(self):
        c = self.client("runner", self.runner)
        self.pull_and_compare(c, "packs/team/oras-auth", "out-runner")
        error = self.refused("the robot's push",
                             lambda: self.push(c, "packs/team/oras-runner"))
        print(f"robot push: {error}", file=sys.stderr)
        expect("403" in error or "denied" in error.lower(), error)
        self.absent("packs/team/oras-runner")

    @check("a wrong password or an unknown user pulls nothing and pushes nothing")
    def wrong_password(self):
        for user, password in (("alice", "not-" + self.alice), ("mallory", self.alice)):
            c = self.client(user, password)
            error = self.refused("a pull", lambda: c.pull(
                target=self.ref("packs/team/oras-auth"), outdir="out-wrong"))
            print(f"{user} pull: {error}", file=sys.stderr)
            c = self.client(user, password)
            error = self.refused("a push", lambda: self.push(c, "packs/team/oras-wrong"))
            print(f"{user} push: {error}", file=sys.stderr)
        self.absent("packs/team/oras-wrong")

    @check("anonymous pull under public/ only; anonymous push refused")
    def anonymous(self):
        self.push(self.client("alice", self.alice), "public/team/oras-auth")
        self.pull_and_compare(self.client(), "public/team/oras-auth", "out-anon")
        anon = self.client()
        error = self.refused("an anonymous pull under packs/", lambda: anon.pull(
            target=self.ref("packs/team/oras-auth"), outdir="out-anon-packs"))
        print(f"anonymous pull: {error}", file=sys.stderr)
        anon = self.client()
        error = self.refused("an anonymous push",
                             lambda: self.push(anon, "public/team/oras-auth", "v2"))
        print(f"anonymous push: {error}", file=sys.stderr)
        self.absent("public/team/oras-auth", "v2")

    @check("without the test CA the certificate is refused")
    def untrusted(self):
        c = oras.client.OrasClient(hostname=self.host)  # the system's trust store
        c.login(username="alice", password=self.alice, hostname=self.host,
                config_path=self.docker_config)
        error = self.refused("a pull", lambda: c.pull(
            target=self.ref("packs/team/oras-auth"), outdir="out-untrusted"))
        expect("certificate" in error.lower() or "ssl" in error.lower(), error)


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    checks = Checks(*sys.argv[1:])
    checks.login_push()
    checks.stored_credentials_pull()
    checks.scope_switch()
    checks.robot()
    checks.wrong_password()
    checks.anonymous()
    checks.untrusted()
    return 0 if RESULTS and all(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
