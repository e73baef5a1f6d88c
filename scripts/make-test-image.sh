#!/usr/bin/env bash
# Makes the busybox test image: no registry is reachable, so the image is imported
# from a folder holding Debian's static busybox and a few links to it.
# Usage: scripts/make-test-image.sh [IMAGE]   (DOCKER_HOST selects the engine; default gpu-sidecar-test:latest)
set -euo pipefail
image=${1:-gpu-sidecar-test:latest}
busybox=$(command -v busybox || true)
if [[ -z $busybox ]] || ! file -L "$busybox" 2>/dev/null | grep -q 'statically linked'; then
  busybox=/bin/busybox
fi
[[ -x $busybox ]] || { echo "make-test-image: busybox not found: apt-get install busybox-static" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/bin" "$dir/tmp" "$dir/job"
cp "$busybox" "$dir/bin/busybox"
for cmd in sh echo sleep cat ls mkdir rm touch id env dd wc head tail true false kill ps stat yes seq; do
  ln -s busybox "$dir/bin/$cmd"
done
chmod 1777 "$dir/tmp"
tar -C "$dir" -cf "$dir.tar" .
docker import -c 'ENV PATH=/bin' "$dir.tar" "$image" >/dev/null
rm -f "$dir.tar"
echo "made $image"
