#!/usr/bin/env bash
# Makes a base image for docker/Dockerfile where no image registry is reachable (the project's
# CI): this machine's node and the shared libraries it needs (ldd), busybox as /bin/sh and the
# usual tools, tini, redis-server and redis-cli with their libraries, the CA certificates, and a `node` user
# (uid 1000) like the official node image's. Then:
#   docker build -f docker/Dockerfile --build-arg NODE_IMAGE=gpu-sidecar-base:node20 ...
# It stands in for node:20-bookworm-slim; production builds use the real one (docs/DEPLOY.md,
# "Building with no registry").
# Usage: scripts/make-base-image.sh [IMAGE]   (DOCKER_HOST selects the engine; default gpu-sidecar-base:node20)
set -euo pipefail
image=${1:-gpu-sidecar-base:node20}

die() { echo "make-base-image: $*" >&2; exit 1; }
find_tool() { command -v "$1" 2>/dev/null || die "$1 not found: $2"; }
node=$(find_tool node 'install Node.js 20')
redis=$(find_tool redis-server 'apt-get install redis-server')
tini=$(command -v tini-static || command -v tini || die 'tini not found: apt-get install tini')
busybox=/bin/busybox
file -L "$busybox" 2>/dev/null | grep -q 'statically linked' || die 'no static /bin/busybox: apt-get install busybox-static'
certs=/etc/ssl/certs/ca-certificates.crt
[[ -s $certs ]] || die "$certs missing: apt-get install ca-certificates"

root=$(mktemp -d)
trap 'rm -rf "$root" "$root.tar"' EXIT
# Debian's merged /usr: /bin, /lib and /lib64 are links into /usr.
mkdir -p "$root"/usr/{bin,lib,lib64} "$root"/etc/ssl/certs "$root"/{tmp,root,home/node}
for d in bin lib lib64; do ln -s "usr/$d" "$root/$d"; done
ln -s bin "$root/usr/sbin"
ln -s usr/bin "$root/sbin"

# Copies a file to the same path under /usr in the image (/lib/x/y → /usr/lib/x/y).
put() {
  local dest=$root/usr/${1#/usr/}
  mkdir -p "$(dirname "$dest")"
  cp -L "$1" "$dest"
}
# A binary into /usr/bin as NAME, with every shared library ldd names (and the loader).
put_binary() {
  cp -L "$1" "$root/usr/bin/$2"
  ldd "$1" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
    while read -r lib; do put "$lib"; done
}
put_binary "$node" node
put_binary "$redis" redis-server
# redis-cli too (Debian's redis-tools, which redis-server depends on): the base then also
# serves as a Redis image (`docker.sh status` asks Redis with redis-cli).
put_binary "$(find_tool redis-cli 'apt-get install redis-tools')" redis-cli
cp "$tini" "$root/usr/bin/tini"
cp "$busybox" "$root/usr/bin/busybox"
for applet in $("$busybox" --list); do
  [[ -e $root/usr/bin/$applet ]] || ln -s busybox "$root/usr/bin/$applet"
done
cp -L "$certs" "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnode:x:1000:\nnogroup:x:65534:\n' >"$root/etc/group"
chmod 1777 "$root/tmp"
chmod 700 "$root/root"
chown 1000:1000 "$root/home/node"

tar -C "$root" --numeric-owner -cf "$root.tar" .
docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change "LABEL org.gpu-sidecar.node-version=$("$node" --version)" \
  --change 'LABEL org.gpu-sidecar.base-parts=node,tini,redis-server,redis-cli' \
  --change 'CMD ["node"]' \
  "$root.tar" "$image" >/dev/null
echo "made $image (node $("$node" --version))"
