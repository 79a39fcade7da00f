# Foreman's image: `foreman serve` by default, `foreman worker …` (or any foreman verb) as the
# command. Node.js 24 LTS. Build it with the script, not `docker build .` in the checkout:
#
#   bash scripts/docker-base-image.sh && bash scripts/docker-build.sh      # no registry needed
#   FOREMAN_BASE_IMAGE=node:24-bookworm-slim bash scripts/docker-build.sh  # base from a registry
#
# scripts/docker-build.sh prepares the build context outside Docker (no build image, hence no
# registry, is needed): dist/ compiled from the checkout, the production node_modules with
# better-sqlite3 built for Node 24's ABI, package.json. This file only lays them on a base image:
#   - foreman-node24-base (default): made locally by scripts/docker-base-image.sh with
#     `docker import` (Node 24, git with git-http-backend, sh, coreutils; about 185 MB);
#   - node:24-bookworm-slim, or any Debian-like Node 24 image: git is installed with apt-get
#     when the base has none (the server runs git http-backend, the worker runs git).
#
#   docker run -p 127.0.0.1:54871:54871 -v foreman-data:/data foreman
#
# The server listens on every address of the container (FOREMAN_HOST=0.0.0.0) so that a
# published port reaches it. Single-user mode checks no login, so it refuses that unless
# FOREMAN_SINGLE_USER_ALLOW_REMOTE=true, which this image sets: publishing the port on the host's
# 127.0.0.1 (as above) is what keeps it private. `-p 54871:54871` would open it to the network:
# use multi-user mode (DATABASE_URL and the login settings, README) for that.
ARG BASE_IMAGE=foreman-node24-base
FROM ${BASE_IMAGE}

# git where the base has none (node:24-bookworm-slim); /data writable by the user, nothing else.
RUN if ! command -v git >/dev/null 2>&1; then \
      apt-get update && apt-get install -y --no-install-recommends git ca-certificates && rm -rf /var/lib/apt/lists/*; \
    fi \
 && mkdir -p /data \
 && chown 1000:1000 /data

ENV NODE_ENV=production \
    FOREMAN_DATA_DIR=/data \
    FOREMAN_PORT=54871 \
    FOREMAN_HOST=0.0.0.0 \
    FOREMAN_SINGLE_USER_ALLOW_REMOTE=true \
    FOREMAN_WORKER_STATE_DIR=/data/worker
WORKDIR /app
# The code stays root-owned, read-only to the server.
COPY package.json ./
COPY node_modules ./node_modules
COPY dist ./dist
# uid 1000: foreman in foreman-node24-base, node in the node images.
USER 1000:1000
VOLUME /data
EXPOSE 54871
# No curl in the image: node asks /healthz from inside the container (loopback works whatever is
# published). A worker container (`foreman worker …`) serves nothing: it counts as healthy while
# it runs.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "if (require('node:fs').readFileSync('/proc/1/cmdline', 'utf8').split('\\0').includes('worker')) process.exit(0); const h = process.env.FOREMAN_HOST; require('node:http').get({ host: !h || h === '0.0.0.0' || h === '::' ? '127.0.0.1' : h, port: process.env.FOREMAN_PORT || 54871, path: '/healthz', timeout: 4000 }, (res) => process.exit(res.statusCode === 200 ? 0 : 1)).on('timeout', () => process.exit(1)).on('error', () => process.exit(1))"]
# node is PID 1 and handles SIGTERM itself: the server drains for up to
# FOREMAN_SHUTDOWN_TIMEOUT_SECONDS (10 s) after stopping its local workers, so give `docker stop`
# more than that (-t 30).
ENTRYPOINT ["node", "/app/dist/src/cli/main.js"]
CMD ["serve"]
