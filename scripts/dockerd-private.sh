#!/usr/bin/env bash
# Starts a private Docker Engine in folder DIR (never the machine's shared one), for tests:
# socket DIR/docker.sock, data DIR/data, no iptables, no bridge. Waits until it answers.
# Usage: scripts/dockerd-private.sh DIR    prints the DOCKER_HOST to use
set -euo pipefail
dir=${1:?usage: dockerd-private.sh DIR}
mkdir -p "$dir"
command -v dockerd >/dev/null || { echo "dockerd not found: apt-get install docker.io" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "dockerd needs root" >&2; exit 1; }
dockerd --host "unix://$dir/docker.sock" --data-root "$dir/data" --exec-root "$dir/exec" \
  --pidfile "$dir/dockerd.pid" --iptables=false --ip6tables=false --bridge=none \
  >"$dir/dockerd.log" 2>&1 &
for _ in $(seq 1 150); do
  if DOCKER_HOST="unix://$dir/docker.sock" docker version >/dev/null 2>&1; then
    echo "unix://$dir/docker.sock"
    exit 0
  fi
  sleep 0.2
done
echo "dockerd did not answer within 30 s; its log:" >&2
tail -20 "$dir/dockerd.log" >&2
exit 1
