#!/usr/bin/env bash
# Installs dnsmasq for the DNS SRV tests, which start their own instance on a free
# loopback port. Debian's dnsmasq-base ships the binary without the system service, so
# nothing starts on port 53. Quick and silent when it is there already.
set -euo pipefail

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

if ! command -v dnsmasq >/dev/null 2>&1 && [ ! -x /usr/sbin/dnsmasq ]; then
  echo "installing dnsmasq-base for the DNS SRV tests" >&2
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq >&2
  as_root apt-get install -y -qq --no-install-recommends dnsmasq-base >&2
fi
