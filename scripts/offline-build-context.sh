#!/usr/bin/env bash
# Assembles a build context for `docker build --build-arg APP_FROM=prebuilt` where the build
# cannot reach the npm registry: the files docker/Dockerfile copies, plus prebuilt/dist (this
# checkout's `npm run build`) and prebuilt/node_modules (the packages of this checkout's
# node_modules that `npm ls --omit=dev` lists: production dependencies only; no network).
# Run `npm run build` first.
# Usage: scripts/offline-build-context.sh DIR   (DIR is created; it must not exist)
set -euo pipefail
die() { echo "offline-build-context: $*" >&2; exit 1; }
[[ $# -eq 1 ]] || die 'usage: scripts/offline-build-context.sh DIR'
dir=$1
repo=$(cd "$(dirname "$0")/.." && pwd)
[[ ! -e $dir ]] || die "$dir exists"
[[ -f $repo/dist/apps/cli/src/main.js ]] || die 'no dist/: run npm run build first'
[[ -d $repo/node_modules ]] || die 'no node_modules/: run npm ci first'

mkdir -p "$dir/prebuilt"
cp -a "$repo"/{package.json,package-lock.json,tsconfig.json,tsconfig.build.json,nest-cli.json,apps,libs,bin} "$dir/"
cp -a "$repo/dist" "$dir/prebuilt/dist"
mkdir -p "$dir/scripts"
cp -a "$repo/native" "$dir/"
cp -a "$repo/scripts/build-native.js" "$dir/scripts/"
rm -rf "$dir"/native/*/build
# The native frame cipher as this checkout built it (npm ci), if it did: the image uses it if it
# loads there, else node:crypto (the daemons log which).
if [[ -d $repo/native/frame-cipher/build/Release ]]; then
  mkdir -p "$dir/prebuilt/native-build"
  cp -a "$repo/native/frame-cipher/build/Release" "$dir/prebuilt/native-build/Release"
fi
# Each production package's top-level folder (its own nested node_modules come with it).
mapfile -t packages < <(
  cd "$repo" && { npm ls --omit=dev --all --parseable 2>/dev/null || true; } |
    sed -n "s|^$repo/node_modules/||p" | awk -F/ '{ print ($1 ~ /^@/) ? $1 "/" $2 : $1 }' | sort -u
)
((${#packages[@]} > 0)) || die 'npm ls --omit=dev listed no package'
for p in "${packages[@]}"; do
  mkdir -p "$(dirname "$dir/prebuilt/node_modules/$p")"
  cp -a "$repo/node_modules/$p" "$dir/prebuilt/node_modules/$p"
done
echo "$dir: $(du -sh "$dir" | cut -f1)"
