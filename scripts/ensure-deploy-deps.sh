#!/usr/bin/env bash
# Install what the deploy tests (test/unit/deploy) run for real when it is missing:
# promtool, from Debian's `prometheus` package, to check deploy/prometheus/*.yml.
# Idempotent: does nothing when promtool is already on PATH.
set -euo pipefail
command -v promtool >/dev/null 2>&1 && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing promtool (run as root, or: sudo apt-get install -y prometheus)" >&2
  exit 1
fi
echo "installing system packages: prometheus (for promtool)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The package's own prometheus service is not wanted here: never start it on install.
# policy-rc.d is only created (and removed) when it did not exist already.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  created_policy=1
fi
trap 'if [ "$created_policy" -eq 1 ]; then rm -f "$policy"; fi' EXIT
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v promtool >/dev/null 2>&1 || { echo "prometheus installed but promtool is not on PATH" >&2; exit 1; }
