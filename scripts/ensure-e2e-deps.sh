#!/usr/bin/env bash
# Install the Debian packages the end-to-end tier (test/e2e) runs for real when they are missing:
# the Distribution registry as the origin, and the engines that pull through Gantry: dockerd and
# its CLI (docker.io), containerd and ctr (containerd), podman, skopeo. Idempotent; needs root to
# install (the engines need root to run anyway).
set -euo pipefail
need=()
# file:package, by path: a docker CLI elsewhere on PATH (e.g. /usr/local/bin) is not the daemon.
for pair in \
  /usr/bin/docker-registry:docker-registry \
  /usr/bin/skopeo:skopeo \
  /usr/sbin/dockerd:docker.io \
  /usr/bin/docker:docker.io \
  /usr/bin/containerd:containerd \
  /usr/bin/ctr:containerd \
  /usr/bin/podman:podman; do
  file=${pair%%:*} pkg=${pair#*:}
  if [ ! -x "$file" ] && [[ " ${need[*]-} " != *" $pkg "* ]]; then need+=("$pkg"); fi
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${need[*]} (run as root, or: sudo apt-get install -y --no-install-recommends ${need[*]})" >&2
  exit 1
fi
echo "installing system packages: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Another apt may be running (the unit/integration tiers' ensure script): wait for its lock.
apt-get -o DPkg::Lock::Timeout=300 update -qq
apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
