#!/usr/bin/env bash
# Builds the Foreman image (default tag foreman) from this checkout:
#
#   bash scripts/docker-base-image.sh && bash scripts/docker-build.sh
#   FOREMAN_BASE_IMAGE=node:24-bookworm-slim bash scripts/docker-build.sh   # with a registry
#
# The Dockerfile copies a prepared folder, which this script makes outside Docker, so that no
# build image (and no registry) is needed:
#   - dist/: the TypeScript of the work tree (tracked and untracked files, as in
#     scripts/with-node24.sh) compiled with this checkout's tsc;
#   - node_modules/: the production dependencies only (`npm ci --omit=dev`, Node 24 first on
#     PATH), with better-sqlite3 built for Node 24's ABI against its headers
#     (npm_config_nodedir): from the cache scripts/with-node24.sh fills, else from source (about
#     60-90 s on 2 cores, then cached);
#   - package.json.
# Then `docker build` of that folder with this Dockerfile, passing BASE_IMAGE.
# Settings: FOREMAN_IMAGE (default foreman), FOREMAN_BASE_IMAGE (default foreman-node24-base),
# FOREMAN_NODE24_VERSION, FOREMAN_NODE24_CACHE. Needs node_modules here (npm ci), npm with the
# registry, python3, make and g++ (for a better-sqlite3 not yet cached), and docker.
set -euo pipefail
cd "$(dirname "$0")/.."
checkout=$(pwd)
. scripts/docker-lib.sh

image=${FOREMAN_IMAGE:-foreman}
base=${FOREMAN_BASE_IMAGE:-foreman-node24-base}
if [ ! -x node_modules/.bin/tsc ]; then
  echo "docker-build: no node_modules here (tsc compiles the image's code); run npm ci first" >&2
  exit 1
fi
fetch_node24

work=$(mktemp -d "${TMPDIR:-/tmp}/foreman-image-XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# dist/, compiled in a copy of the work tree's sources (the checkout's own dist/ is left alone).
mkdir "$work/src" "$work/context"
git ls-files -z --cached --others --exclude-standard -- package.json package-lock.json tsconfig.json tsconfig.build.json src gen migrations |
  tar --null --ignore-failed-read --warning=no-failed-read -T - -cf - | tar -xf - -C "$work/src"
ln -s "$checkout/node_modules" "$work/src/node_modules"
echo "docker-build: compiling TypeScript" >&2
(cd "$work/src" && node_modules/.bin/tsc -p tsconfig.build.json)
rm -f "$work/src/dist/tsconfig.build.tsbuildinfo"
mv "$work/src/dist" "$work/context/dist"
cp "$work/src/package.json" "$work/src/package-lock.json" "$work/context/"

# node_modules/: production dependencies for Node 24. Install scripts are skipped (better-sqlite3's
# is the only one among them, and it would try to download a binary first): its addon comes next.
echo "docker-build: installing production dependencies (npm ci --omit=dev) for Node $node24_version" >&2
export PATH="$node24_dir/bin:$PATH" npm_config_nodedir="$node24_dir"
(cd "$work/context" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
addon_path=node_modules/better-sqlite3/build/Release/better_sqlite3.node
sqlite_version=$(node -p 'require("./node_modules/better-sqlite3/package.json").version')
abi=$(node -p process.versions.modules)
cached_addon=$node24_cache/better-sqlite3-$sqlite_version-$node24_package-abi$abi.node
loads() { (cd "$work/context" && node -e 'new (require("better-sqlite3"))(":memory:").prepare("select 1").get()' 2>/dev/null); }
mkdir -p "$(dirname "$work/context/$addon_path")"
if [ -f "$cached_addon" ] && cp "$cached_addon" "$work/context/$addon_path" && loads; then
  echo "docker-build: better-sqlite3 $sqlite_version for ABI $abi from the cache" >&2
else
  echo "docker-build: building better-sqlite3 $sqlite_version for Node $node24_version (ABI $abi)" >&2
  (cd "$work/context" && npm rebuild better-sqlite3 --no-audit --no-fund >&2)
  if ! loads; then
    echo "docker-build: the built better-sqlite3 does not load under Node $node24_version" >&2
    exit 1
  fi
  mkdir -p "$node24_cache"
  cp "$work/context/$addon_path" "$cached_addon.partial.$$" && mv "$cached_addon.partial.$$" "$cached_addon"
fi
# Only the addon of better-sqlite3's build stays: its objects and its copy of SQLite's source go.
find "$work/context/node_modules/better-sqlite3" -mindepth 1 -maxdepth 1 -name deps -exec rm -rf {} +
find "$work/context/node_modules/better-sqlite3/build" -mindepth 1 -maxdepth 1 ! -name Release -exec rm -rf {} + 2>/dev/null || true
find "$work/context/node_modules/better-sqlite3/build/Release" -mindepth 1 -maxdepth 1 ! -name better_sqlite3.node -exec rm -rf {} + 2>/dev/null || true
loads || { echo "docker-build: better-sqlite3 does not load after trimming its build" >&2; exit 1; }
rm "$work/context/package-lock.json"
# The foreman command runs from the folder as it will in the image.
(cd "$work/context" && node dist/src/cli/main.js --help >/dev/null) || { echo "docker-build: the prepared foreman does not start under Node $node24_version" >&2; exit 1; }

echo "docker-build: building $image on $base ($(du -sh "$work/context" | cut -f1) of code and dependencies)" >&2
docker build --build-arg "BASE_IMAGE=$base" -f "$checkout/Dockerfile" -t "$image" "$work/context"
echo "docker-build: made $image" >&2
