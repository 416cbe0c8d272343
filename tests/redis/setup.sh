#!/usr/bin/env bash
# Installs what the shared cache tier's tests run: Debian's redis-server. Quick and silent
# when it is there already. The tests start their own servers on free loopback ports; the
# package's own service, if the package starts one, is not used.
set -euo pipefail

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server for the shared cache tier tests" >&2
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq >&2
  as_root apt-get install -y -qq --no-install-recommends redis-server >&2
fi
