#!/usr/bin/env bash
# Real clients against a real server in token mode over TLS: skopeo and oras-py log
# in through the Docker token flow (they follow the server's WWW-Authenticate
# challenge to its /token endpoint), push and pull, and are refused what their grants
# do not allow.
#
#   bash conformance/clients/install.sh              # once: skopeo (Debian) + oras (PyPI)
#   bash conformance/clients/run_auth.sh [BINARY]    # default target/release/packs-registry
#
# The run makes its own test CA and a server certificate for 127.0.0.1 and localhost
# (openssl), a root key (`token keygen`), password hashes (`user hash`) and this
# configuration, then starts BINARY on a free loopback port with HTTPS:
#   auth.mode = "token", [server.tls] with the certificate,
#   user  alice   pull,push on packs/ and public/        (inline [[auth.users]])
#   robot runner  pull on packs/                         (auth.users_file)
#   anyone        pull on public/                        (auth.anonymous_pull)
# Clients trust the CA only where told to (skopeo --cert-dir, oras-py's CA bundle).
# Prints `PASS  <check>` / `FAIL  <check>` per check and `N passed, M failed` last;
# exits non-zero if anything failed. Knobs: CLIENTS_COMMAND_TIMEOUT (seconds per
# skopeo command, 120), CLIENTS_ORAS_TIMEOUT (600), CLIENTS_KEEP=1 (keep the work
# dir; always kept on failure), CLIENTS_STARTUP_TIMEOUT (60).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="${PYTHON:-python3}"

BIN="${1:-}"
if [ -z "$BIN" ]; then
  for b in "$ROOT/target/release/packs-registry" "$ROOT/target/debug/packs-registry"; do
    if [ -x "$b" ]; then BIN="$b"; break; fi
  done
fi
if [ -z "$BIN" ] || [ ! -x "$BIN" ]; then
  echo "run_auth.sh: no registry binary (got '${BIN}'); build it or pass its path" >&2
  exit 2
fi

missing=()
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
"$PY" -c 'import oras.client' >/dev/null 2>&1 || missing+=("oras (python)")
if [ "${#missing[@]}" -gt 0 ]; then
  echo "run_auth.sh: missing ${missing[*]}: run 'bash conformance/clients/install.sh' first" >&2
  exit 2
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/packs-clients-auth.XXXXXX")"
mkdir -p "$WORK/logs" "$WORK/certs" "$WORK/data"
SERVER_PID=""
SUMMARY_PRINTED=""
PASSED=0
FAILED=0

cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ "$FAILED" -gt 0 ] || [ "$rc" -ne 0 ] || [ "${CLIENTS_KEEP:-0}" = "1" ]; then
    [ -n "$SUMMARY_PRINTED" ] || echo "run_auth.sh: work dir kept at $WORK (server log: $WORK/server.log)" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() { PASSED=$((PASSED + 1)); echo "PASS  $1"; }
fail() {
  FAILED=$((FAILED + 1))
  echo "FAIL  $1"
  if [ -n "${2:-}" ] && [ -f "$2" ]; then
    tail -n 25 "$2" | sed 's/^/      | /'
  fi
}
run_check() {
  local name="$1" fn="$2" log="$WORK/logs/$2.log" rc
  set +e
  ( set -euo pipefail; "$fn" ) >"$log" 2>&1
  rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then pass "$name"; else fail "$name (exit $rc)" "$log"; fi
}
die() { echo "check failed: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# The test CA, the server's certificate, the root key, the accounts.
# ---------------------------------------------------------------------------------------
CERTS="$WORK/certs"   # what clients trust: ca.crt only (skopeo --cert-dir reads *.crt)
TLS="$WORK/tls"
mkdir -p "$TLS"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=PacksRegistry conformance test CA" -keyout "$TLS/ca.key" -out "$CERTS/ca.crt" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  2>"$WORK/logs/openssl.log"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
  -keyout "$TLS/server.key" -out "$TLS/server.csr" 2>>"$WORK/logs/openssl.log"
printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
  "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$TLS/server.ext"
openssl x509 -req -in "$TLS/server.csr" -CA "$CERTS/ca.crt" -CAkey "$TLS/ca.key" \
  -CAcreateserial -days 2 -extfile "$TLS/server.ext" -out "$TLS/server.crt" 2>>"$WORK/logs/openssl.log"

ALICE_PASSWORD="alice-$RANDOM$RANDOM"
RUNNER_PASSWORD="runner-$RANDOM$RANDOM"
"$BIN" token keygen >"$TLS/root.key"
ALICE_HASH="$(printf '%s\n' "$ALICE_PASSWORD" | "$BIN" user hash)"
RUNNER_HASH="$(printf '%s\n' "$RUNNER_PASSWORD" | "$BIN" user hash)"
cat >"$WORK/users.toml" <<EOF
[[robots]]
name = "runner"
password_hash = "$RUNNER_HASH"
grants = ["packs/:pull"]
EOF

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

write_config() {
  cat >"$WORK/registry.toml" <<EOF
[server]
listen = "$REG"
data_dir = "$WORK/data"

[server.tls]
cert = "$TLS/server.crt"
key = "$TLS/server.key"

[auth]
mode = "token"
service = "packs-registry.test"
root_key_file = "$TLS/root.key"
users_file = "$WORK/users.toml"
anonymous_pull = ["public/"]

[[auth.users]]
name = "alice"
password_hash = "$ALICE_HASH"
grants = ["packs/:pull,push", "public/:pull,push"]
EOF
}

CURL=(curl -sS --cacert "$CERTS/ca.crt")
wait_ready() {
  local deadline=$((SECONDS + ${CLIENTS_STARTUP_TIMEOUT:-60}))
  while [ "$SECONDS" -lt "$deadline" ]; do
    kill -0 "$SERVER_PID" 2>/dev/null || return 1
    if "${CURL[@]}" -f -o /dev/null "https://$REG/healthz" 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  return 1
}

started=0
for attempt in 1 2 3; do  # a free port can be taken between the probe and the bind
  REG="127.0.0.1:$(free_port)"
  write_config
  # Hermetic: no PACKS__ setting of the caller's environment reaches the server.
  env $(env | grep -oE '^PACKS__[^=]*' | sed 's/^/-u /') \
    "$BIN" serve --config "$WORK/registry.toml" >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  if wait_ready; then started=1; break; fi
  echo "run_auth.sh: server did not come up on $REG (attempt $attempt); log:" >&2
  tail -n 30 "$WORK/server.log" >&2 || true
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
done
[ "$started" = 1 ] || { echo "run_auth.sh: could not start $BIN" >&2; exit 1; }
echo "run_auth.sh: $BIN serving on https://$REG in token mode (data dir $WORK/data)"

# ---------------------------------------------------------------------------------------
# The endpoint itself (curl)
# ---------------------------------------------------------------------------------------
tls_challenge() {
  local status
  status="$("${CURL[@]}" -D "$WORK/v2.headers" -o "$WORK/v2.body" -w '%{http_code}' "https://$REG/v2/")"
  cat "$WORK/v2.headers" "$WORK/v2.body"; echo
  [ "$status" = 401 ] || die "GET /v2/ answered $status, expected 401"
  grep -qi "^www-authenticate: Bearer realm=\"https://$REG/token\",service=\"packs-registry.test\"" \
    "$WORK/v2.headers" || die "no Bearer challenge naming https://$REG/token"
  grep -q '"code":"UNAUTHORIZED"' "$WORK/v2.body" || die "not the OCI UNAUTHORIZED body"
  # The token endpoint hands alice a token over the same TLS connection setup.
  "${CURL[@]}" -f -u "alice:$ALICE_PASSWORD" \
    "https://$REG/token?service=packs-registry.test&scope=repository:packs/x:pull" >"$WORK/token.json"
  "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["token"] == d["access_token"] and d["expires_in"] > 0' \
    "$WORK/token.json"
}

tls_only() {
  # Without the CA the certificate is refused; in clear text nothing is served.
  if curl -sS -o /dev/null "https://$REG/healthz" 2>"$WORK/untrusted.txt"; then
    die "curl without the CA accepted the certificate"
  fi
  cat "$WORK/untrusted.txt"
  grep -qi "certificate" "$WORK/untrusted.txt" || die "expected a certificate error"
  local status
  status="$(curl -sS -o /dev/null -w '%{http_code}' "http://$REG/v2/" 2>&1 || true)"
  echo "plain HTTP: $status"
  case "$status" in 2*|401*|403*|404*) die "plain HTTP got an HTTP answer ($status)";; esac
}

echo "== curl ($(curl --version | head -n 1 | cut -d' ' -f1-2))"
run_check "TLS: GET /v2/ is 401 with a Bearer challenge naming https://…/token; /token issues a token" tls_challenge
run_check "TLS: a client without the test CA refuses the certificate; plain HTTP gets no answer" tls_only

# ---------------------------------------------------------------------------------------
# skopeo
# ---------------------------------------------------------------------------------------
POLICY="$WORK/policy.json"
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$POLICY"
export REGISTRY_AUTH_FILE="$WORK/auth.json"  # no credentials from the machine
echo '{"auths":{}}' >"$REGISTRY_AUTH_FILE"
SK=(skopeo --policy "$POLICY" --tmpdir "$WORK" --command-timeout "${CLIENTS_COMMAND_TIMEOUT:-120}s")
LAYOUT="$WORK/layout"
REPO="$REG/packs/team/auth-image"
"$PY" "$HERE/oci_layout.py" make "$LAYOUT"
WANT="$("$PY" "$HERE/oci_layout.py" digest "$LAYOUT" v1)"

digest_of() {  # digest_of IMAGE [skopeo inspect flags…]
  local image="$1"; shift
  "${SK[@]}" inspect --cert-dir "$CERTS" "$@" --format '{{.Digest}}' "docker://$image"
}

# expect_refused LOG PATTERN COMMAND…: the command fails, and its output matches.
expect_refused() {
  local log="$1" pattern="$2"; shift 2
  if "$@" >"$log" 2>&1; then
    cat "$log"; die "succeeded: $*"
  fi
  cat "$log"
  grep -qiE "$pattern" "$log" || die "failed, but not with /$pattern/"
}

sk_push_creds() {
  "${SK[@]}" copy --preserve-digests --dest-cert-dir "$CERTS" --dest-creds "alice:$ALICE_PASSWORD" \
    "oci:$LAYOUT:v1" "docker://$REPO:v1"
  local got
  got="$(digest_of "$REPO:v1" --creds "alice:$ALICE_PASSWORD")"
  echo "layout $WANT, registry $got"
  [ "$got" = "$WANT" ] || die "manifest digest changed"
}

sk_login_pull() {
  printf '%s\n' "$ALICE_PASSWORD" | "${SK[@]}" login --cert-dir "$CERTS" -u alice --password-stdin "$REG"
  grep -q "\"$REG\"" "$REGISTRY_AUTH_FILE" || die "login stored no credentials"
  # No --creds: the credentials of the login.
  "${SK[@]}" copy --src-cert-dir "$CERTS" "docker://$REPO:v1" "oci:$WORK/out-login:v1"
  "$PY" "$HERE/oci_layout.py" compare "$LAYOUT" v1 "$WORK/out-login" v1
  "${SK[@]}" list-tags --cert-dir "$CERTS" "docker://$REPO" | grep -q '"v1"' || die "list-tags"
  "${SK[@]}" logout "$REG"
  expect_refused "$WORK/after-logout.txt" "unauthorized|authentication required" \
    "${SK[@]}" inspect --cert-dir "$CERTS" --raw "docker://$REPO:v1"
}

sk_robot_pulls() {
  "${SK[@]}" copy --src-cert-dir "$CERTS" --src-creds "runner:$RUNNER_PASSWORD" \
    "docker://$REPO:v1" "oci:$WORK/out-runner:v1"
  "$PY" "$HERE/oci_layout.py" compare "$LAYOUT" v1 "$WORK/out-runner" v1
}

sk_robot_cannot_push() {
  expect_refused "$WORK/runner-push.txt" "denied" \
    "${SK[@]}" copy --dest-cert-dir "$CERTS" --dest-creds "runner:$RUNNER_PASSWORD" \
    "oci:$LAYOUT:v1" "docker://$REG/packs/team/runner-push:v1"
  # Nothing was stored: alice (who may pull there) finds no such manifest.
  expect_refused "$WORK/runner-push-after.txt" "manifest unknown|not found" \
    "${SK[@]}" inspect --cert-dir "$CERTS" --creds "alice:$ALICE_PASSWORD" --raw \
    "docker://$REG/packs/team/runner-push:v1"
}

sk_wrong_password() {
  expect_refused "$WORK/wrong-pull.txt" "unauthorized|invalid username|401" \
    "${SK[@]}" inspect --cert-dir "$CERTS" --creds "alice:not-$ALICE_PASSWORD" --raw "docker://$REPO:v1"
  expect_refused "$WORK/wrong-push.txt" "unauthorized|invalid username|401" \
    "${SK[@]}" copy --dest-cert-dir "$CERTS" --dest-creds "alice:not-$ALICE_PASSWORD" \
    "oci:$LAYOUT:v1" "docker://$REG/packs/team/wrong-password:v1"
  expect_refused "$WORK/wrong-login.txt" "unauthorized|invalid username|401" \
    sh -c "printf '%s\n' 'not-$ALICE_PASSWORD' | $(printf '%q ' "${SK[@]}") login --cert-dir '$CERTS' -u alice --password-stdin '$REG'"
  expect_refused "$WORK/unknown-user.txt" "unauthorized|invalid username|401" \
    "${SK[@]}" inspect --cert-dir "$CERTS" --creds "mallory:$ALICE_PASSWORD" --raw "docker://$REPO:v1"
}

sk_anonymous() {
  local public="$REG/public/team/auth-image"
  "${SK[@]}" copy --preserve-digests --dest-cert-dir "$CERTS" --dest-creds "alice:$ALICE_PASSWORD" \
    "oci:$LAYOUT:v1" "docker://$public:v1"
  # No credentials at all: pulls under public/, ...
  [ "$(digest_of "$public:v1" --no-creds)" = "$WANT" ] || die "anonymous inspect of public/"
  "${SK[@]}" copy --src-cert-dir "$CERTS" --src-no-creds "docker://$public:v1" "oci:$WORK/out-anon:v1"
  "$PY" "$HERE/oci_layout.py" compare "$LAYOUT" v1 "$WORK/out-anon" v1
  # ... nowhere else, ...
  expect_refused "$WORK/anon-packs.txt" "unauthorized|authentication required|401" \
    "${SK[@]}" inspect --cert-dir "$CERTS" --no-creds --raw "docker://$REPO:v1"
  # ... and never a push, not even under public/.
  expect_refused "$WORK/anon-push.txt" "unauthorized|authentication required|401|denied" \
    "${SK[@]}" copy --dest-cert-dir "$CERTS" --dest-no-creds "oci:$LAYOUT:v1" "docker://$public:v2"
  expect_refused "$WORK/anon-push-after.txt" "manifest unknown|not found" \
    "${SK[@]}" inspect --cert-dir "$CERTS" --no-creds --raw "docker://$public:v2"
}

sk_untrusted() {
  # skopeo verifies TLS: without --cert-dir the test CA is unknown to it.
  expect_refused "$WORK/untrusted-skopeo.txt" "x509|certificate" \
    "${SK[@]}" inspect --creds "alice:$ALICE_PASSWORD" --raw "docker://$REPO:v1"
}

echo "== skopeo ($(skopeo --version))"
run_check "skopeo: copy --dest-creds alice --dest-cert-dir CA: push over TLS, digest kept" sk_push_creds
run_check "skopeo: login --password-stdin, pull with the stored credentials, logout" sk_login_pull
run_check "skopeo: pull-only robot pulls (--src-creds), every blob byte for byte" sk_robot_pulls
run_check "skopeo: pull-only robot cannot push (denied), nothing stored" sk_robot_cannot_push
run_check "skopeo: wrong password or unknown user is refused (inspect, copy, login)" sk_wrong_password
run_check "skopeo: anonymous pull under public/ only; anonymous push refused" sk_anonymous
run_check "skopeo: without --cert-dir the test CA is not trusted" sk_untrusted

# ---------------------------------------------------------------------------------------
# oras (oras-py)
# ---------------------------------------------------------------------------------------
echo "== oras (oras-py $("$PY" -c 'import importlib.metadata as m; print(m.version("oras"))'))"
set +e
ORAS_AUTH_ALICE="$ALICE_PASSWORD" ORAS_AUTH_RUNNER="$RUNNER_PASSWORD" \
  timeout "${CLIENTS_ORAS_TIMEOUT:-600}" "$PY" "$HERE/oras_auth_check.py" "$REG" "$CERTS/ca.crt" "$WORK/oras" \
  2>"$WORK/logs/oras.stderr" | tee "$WORK/logs/oras.out"
oras_rc=${PIPESTATUS[0]}
set -e
PASSED=$((PASSED + $(grep -c '^PASS ' "$WORK/logs/oras.out" || true)))
oras_fail="$(grep -c '^FAIL ' "$WORK/logs/oras.out" || true)"
FAILED=$((FAILED + oras_fail))
if [ "$oras_rc" -ne 0 ] && [ "$oras_fail" -eq 0 ]; then
  fail "oras: oras_auth_check.py exited $oras_rc without reporting a failure" "$WORK/logs/oras.stderr"
elif [ "$oras_fail" -gt 0 ]; then
  tail -n 40 "$WORK/logs/oras.stderr" | sed 's/^/      | /'
fi

# ---------------------------------------------------------------------------------------
no_secrets_logged() {
  local token
  token="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$WORK/token.json")"
  for secret in "$ALICE_PASSWORD" "$RUNNER_PASSWORD" "$token" "$(head -n 1 "$TLS/root.key")"; do
    if grep -qF -- "$secret" "$WORK/server.log"; then die "the server log holds a secret"; fi
  done
}
run_check "server: its log holds no password, token or key" no_secrets_logged
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  fail "server: still running after all checks" "$WORK/server.log"
fi
if [ "$FAILED" -gt 0 ]; then
  echo "---- server log (last 40 lines)"
  tail -n 40 "$WORK/server.log"
  echo "run_auth.sh: work dir kept at $WORK (server log: $WORK/server.log)"
fi
SUMMARY_PRINTED=1
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
