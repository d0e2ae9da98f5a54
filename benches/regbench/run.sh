#!/usr/bin/env bash
# The one command of the benchmark: PacksRegistry vs CNCF Distribution 2.8.
#
#   benches/regbench/run.sh [REGBENCH OPTIONS]       e.g. --quick, --rounds 5,
#                                                    --sizes 1M,64M,1G, --huge 5G
#
# Installs Debian's docker-registry (Distribution 2.8) when missing, without starting
# its service (the tool starts its own instance on loopback with a generated
# filesystem configuration), builds our release binary, then runs the tool
# (benches/regbench/main.rs) with optimizations. The production configuration needs
# PostgreSQL on 127.0.0.1:5432 (or PACKS_TEST_POSTGRES_URL) and `moto_server` on the
# PATH; without them it is skipped with a note. The report (markdown) goes to stdout;
# progress to stderr. `benches/regbench/run.sh --help` lists the options.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v docker-registry >/dev/null 2>&1; then
  echo "installing Debian docker-registry (CNCF Distribution 2.8)" >&2
  # Keep the package's service from starting: we run our own instance.
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  apt-get update >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y docker-registry >&2
  if [ "$created_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# PostgreSQL for the production configuration (CI's convention); best effort.
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null \
   && [ -d /etc/postgresql ]; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start >&2 || true
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi

cargo build --release --locked --bin packs-registry >&2
exec cargo bench --locked --bench regbench -- --ours target/release/packs-registry "$@"
