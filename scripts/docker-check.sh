#!/usr/bin/env bash
# CI's check of the image (.ci/run runs it): builds the base image and the image, then runs them
# as the README's Docker section does:
#   - the server, published on 127.0.0.1 with a volume at /data: /healthz answers, Docker's own
#     HEALTHCHECK says healthy, one RPC (ListWorkspaces) answers over Connect's JSON;
#   - a worker container (`foreman worker --server …`, --network host) registers with it and
#     runs a task end to end: the server's git http-backend serves the task branch, the worker
#     clones it with git, the command agent (`sh -s`) writes a file, the push reaches the diff;
#   - both stop gracefully (exit 0) on `docker stop`.
#
#   bash scripts/docker-check.sh
#
# The engine: the one `docker` reaches (DOCKER_HOST, or the default socket); where none answers,
# a private dockerd on a socket in a temporary folder, started here and stopped at the end
# (docker.io installed with apt-get first if there is no dockerd). It prints each phase's time.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
phase() { echo "docker-check: [$((SECONDS - started)) s] $*" >&2; }
fail() { echo "docker-check: FAILED: $*" >&2; exit 1; }

image=foreman-check
name=foreman-check-$$
tmp=$(mktemp -d "${TMPDIR:-/tmp}/foreman-docker-check-XXXXXX")
dockerd_pid=
cleanup() {
  local status=$?
  trap - EXIT
  if [ "$status" -ne 0 ] && docker info >/dev/null 2>&1; then
    for c in "$name" "$name-worker"; do
      docker inspect "$c" >/dev/null 2>&1 || continue
      echo "docker-check: the last lines of $c's log:" >&2
      docker logs --tail 30 "$c" 2>&1 | cut -c1-400 >&2 || true
    done
  fi
  docker rm -f "$name" "$name-worker" >/dev/null 2>&1 || true
  docker volume rm "$name-data" >/dev/null 2>&1 || true
  if [ -n "$dockerd_pid" ]; then
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
  fi
  # dockerd unmounts its layers when it exits, not its network namespace; then its folder goes.
  if [ -n "${engine:-}" ]; then
    awk -v dir="$engine/" 'index($2, dir) == 1 { print $2 }' /proc/mounts | sort -r | xargs -r umount 2>/dev/null || true
    rm -rf "$engine" 2>/dev/null || true
  fi
  rm -rf "$tmp" 2>/dev/null || true
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the engine ----------------------------------------------------------------------------
command -v curl >/dev/null || fail "curl is needed"
if ! command -v docker >/dev/null || ! command -v dockerd >/dev/null; then
  if ! docker info >/dev/null 2>&1; then
    phase "no Docker engine here: installing docker.io with apt-get"
    [ "$(id -u)" = 0 ] || fail "no Docker engine answers and dockerd is missing; installing docker.io needs root"
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >"$tmp/apt.log" 2>&1 ||
      { apt-get update -q >>"$tmp/apt.log" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >>"$tmp/apt.log" 2>&1; }; } ||
      { tail -20 "$tmp/apt.log" >&2; fail "apt-get install docker.io failed"; }
  fi
fi
if docker info >/dev/null 2>&1; then
  phase "using the Docker engine at ${DOCKER_HOST:-the default socket}"
else
  # A short path: the daemon's sockets must fit in 108 bytes.
  engine=$(mktemp -d /tmp/foreman-dockerd-XXXXXX)
  export DOCKER_HOST=unix://$engine/docker.sock
  phase "no engine answers: starting dockerd on $DOCKER_HOST"
  dockerd --host "$DOCKER_HOST" --data-root "$engine/data" --exec-root "$engine/exec" --pidfile "$engine/dockerd.pid" >"$engine/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 1 150); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || { tail -20 "$engine/dockerd.log" >&2; fail "dockerd exited at its start (its log above)"; }
    sleep 0.2
  done
  docker info >/dev/null 2>&1 || { tail -20 "$engine/dockerd.log" >&2; fail "dockerd did not answer within 30 s (its log above)"; }
fi

# --- the images ----------------------------------------------------------------------------
phase "base image (scripts/docker-base-image.sh)"
bash scripts/docker-base-image.sh || fail "scripts/docker-base-image.sh failed"
phase "image (scripts/docker-build.sh)"
FOREMAN_IMAGE=$image bash scripts/docker-build.sh >"$tmp/build.log" 2>&1 || { tail -30 "$tmp/build.log" >&2; fail "scripts/docker-build.sh failed (its last lines above)"; }
grep '^docker-build:' "$tmp/build.log" >&2 || true
[ "$(docker run --rm --entrypoint id "$image" -u)" = 1000 ] || fail "the image does not run as uid 1000"

# --- the server ----------------------------------------------------------------------------
port=$(node -e 'const s = require("node:net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')
url=http://127.0.0.1:$port
phase "server: docker run -p 127.0.0.1:$port:54871 -v $name-data:/data $image (no local workers)"
docker run -d --name "$name" -p "127.0.0.1:$port:54871" -v "$name-data:/data" -e FOREMAN_LOCAL_WORKERS=0 \
  --health-interval 1s --health-start-period 30s "$image" >/dev/null || fail "docker run of the server failed"
for _ in $(seq 1 150); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/healthz" 2>/dev/null)" = 200 ] && break
  [ "$(docker inspect -f '{{.State.Running}}' "$name")" = true ] || fail "the server container exited (its log below)"
  sleep 0.2
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "$url/healthz")" = 200 ] || fail "$url/healthz did not answer 200 within 30 s"
phase "server: /healthz answers 200"
answer=$(curl -s -X POST -H 'content-type: application/json' -d '{}' "$url/foreman.v1.WorkspaceService/ListWorkspaces")
[ "${answer:0:1}" = "{" ] || fail "ListWorkspaces answered '$answer', not a JSON message"
phase "server: ListWorkspaces answers $answer"
for _ in $(seq 1 50); do
  [ "$(docker inspect -f '{{.State.Health.Status}}' "$name")" = healthy ] && break
  sleep 0.2
done
[ "$(docker inspect -f '{{.State.Health.Status}}' "$name")" = healthy ] || fail "Docker's HEALTHCHECK says $(docker inspect -f '{{.State.Health.Status}}' "$name"), not healthy"
phase "server: HEALTHCHECK says healthy"

# --- a worker container and a task ---------------------------------------------------------
foreman() { docker exec "$name" node /app/dist/src/cli/main.js "$@"; }
token=$(foreman worker-token create --name docker-check | sed -n 's/^secret *//p')
[ -n "$token" ] || fail "foreman worker-token create printed no secret"
phase "worker: docker run --network host $image worker --server $url --agents command"
docker run -d --name "$name-worker" --network host "$image" worker --server "$url" --token "$token" --agents command >/dev/null ||
  fail "docker run of the worker failed"
docker exec "$name" sh -c 'git init -q -b main /tmp/demo && git -C /tmp/demo -c user.name=check -c user.email=check@example.com commit -q --allow-empty -m start' ||
  fail "git init in the server container failed"
foreman workspace add demo >/dev/null || fail "workspace add failed"
foreman repository add /tmp/demo >/dev/null || fail "repository add failed"
id=$(foreman task create --agent command --json 'echo hello from the worker container > hello.txt' | node -p 'JSON.parse(require("fs").readFileSync(0, "utf8")).id') ||
  fail "task create failed"
timeout 90 docker exec "$name" node /app/dist/src/cli/main.js logs -f "$id" >"$tmp/task.log" 2>&1 ||
  { cat "$tmp/task.log" >&2; fail "task $id did not end well through the worker container (its log above)"; }
foreman diff "$id" --stat >"$tmp/diff.log" 2>&1 && grep -q 'hello.txt' "$tmp/diff.log" ||
  { cat "$tmp/task.log" "$tmp/diff.log" >&2; fail "task $id's diff has no hello.txt (the log and diff above)"; }
docker logs "$name-worker" 2>&1 | grep -q '"worker registered"' || fail "the worker container's log has no 'worker registered'"
phase "worker: registered, ran task $id, its diff has hello.txt"

# --- stops ----------------------------------------------------------------------------------
docker stop -t 30 "$name-worker" >/dev/null
docker stop -t 30 "$name" >/dev/null
worker_exit=$(docker inspect -f '{{.State.ExitCode}}' "$name-worker")
server_exit=$(docker inspect -f '{{.State.ExitCode}}' "$name")
[ "$server_exit" = 0 ] || fail "the server exited $server_exit on docker stop, not 0"
[ "$worker_exit" = 0 ] || fail "the worker exited $worker_exit on docker stop, not 0"
phase "both stopped on docker stop (exit 0); the image check passed"
