#!/usr/bin/env bash
# Install, when missing, every Debian package the test suite runs for real, with one apt run:
#   docker-registry (the upstream), skopeo, docker.io (dockerd + CLI), containerd (+ ctr), podman
#   (the clients), openssl (the test CAs; the README's certificate commands), prometheus (promtool,
#   for the deploy tests), nginx (runs the load balancer config of deploy/nginx/ in the deploy
#   tests), OpenStack Swift with memcached (the S3-compatible store of test/helpers/s3-server.ts)
#   and redis-server. Idempotent; needs root to install.
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
  /usr/bin/podman:podman \
  /usr/bin/openssl:openssl \
  /usr/bin/promtool:prometheus \
  /usr/sbin/nginx:nginx \
  /usr/bin/swift-proxy-server:swift-proxy \
  /usr/bin/swift-object-server:swift-object \
  /usr/bin/swift-container-server:swift-container \
  /usr/bin/swift-account-server:swift-account \
  /usr/bin/swift-ring-builder:swift \
  /usr/lib/python3/dist-packages/swift/common/middleware/s3api/s3api.py:python3-swift \
  /usr/bin/memcached:memcached \
  /usr/bin/redis-server:redis-server \
  /usr/bin/redis-cli:redis-tools; do
  file=${pair%%:*} pkg=${pair#*:}
  # A Python module is a plain file; everything else must be an executable.
  if [[ $file == *.py ]]; then test=-f; else test=-x; fi
  if [ ! "$test" "$file" ] && [[ " ${need[*]-} " != *" $pkg "* ]]; then need+=("$pkg"); fi
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${need[*]} (run as root, or: sudo apt-get install -y --no-install-recommends ${need[*]})" >&2
  exit 1
fi
echo "installing system packages: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Packages with services (prometheus, docker.io) must not start them here: policy-rc.d says no,
# and is only created (and removed) when it did not exist already.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  created_policy=1
fi
trap 'if [ "$created_policy" -eq 1 ]; then rm -f "$policy"; fi' EXIT
# Another apt may be running: wait for its lock rather than fail.
apt-get -o DPkg::Lock::Timeout=300 update -qq
apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
