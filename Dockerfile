# Foreman server image.
#
#   docker build -t foreman .
#
# Running it: single-user mode (the default without DATABASE_URL) checks no login, so the server
# binds only loopback unless told otherwise, which inside a container is unreachable from outside.
# Choose one:
#   - multi-user: set DATABASE_URL=postgres://... and the login settings (README); the server
#     then listens on 0.0.0.0, so it needs FOREMAN_REPLICA_URL too: where other replicas reach it.
#       docker run -e DATABASE_URL=postgres://user:pass@db:5432/foreman \
#         -e FOREMAN_OIDC_ISSUER=https://login.example.com -e FOREMAN_OIDC_CLIENT_ID=foreman \
#         -e FOREMAN_OIDC_REDIRECT_URIS=https://foreman.example.com/auth/callback \
#         -e FOREMAN_JWT_SECRET=<32+ random characters> -e FOREMAN_SECRET_KEY=<openssl rand -base64 32> \
#         -e FOREMAN_REPLICA_URL=http://<this container's address>:54871 \
#         -p 54871:54871 foreman
#   - single-user: set FOREMAN_SINGLE_USER_ALLOW_REMOTE=true and FOREMAN_HOST=0.0.0.0, and publish
#     the port on the host's loopback only, so no one else can reach the unauthenticated server:
#       docker run -e FOREMAN_SINGLE_USER_ALLOW_REMOTE=true -e FOREMAN_HOST=0.0.0.0 \
#         -p 127.0.0.1:54871:54871 -v foreman-data:/data foreman
# The SQLite database (single-user) lives in /data, with the key that encrypts stored secrets
# (secret.key, made on the first start); mount a volume there to keep both.

# --- build: compile TypeScript, then drop dev dependencies -----------------------------------
FROM node:20-bookworm-slim AS build
# better-sqlite3 compiles its native addon when no prebuilt binary can be fetched.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# Dependencies first, so a source change does not reinstall them.
COPY package.json package-lock.json ./
RUN npm ci
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY gen ./gen
COPY migrations ./migrations
RUN npm run build && npm prune --omit=dev

# --- runtime: compiled code and production dependencies only ---------------------------------
FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    FOREMAN_DATA_DIR=/data \
    FOREMAN_PORT=54871
WORKDIR /app
# Code stays root-owned (read-only to the server); only /data is writable by it. The native
# addon in node_modules was built on this same base image, so it matches this glibc and Node.
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
RUN mkdir -p /data && chown node:node /data
VOLUME /data
USER node
EXPOSE 54871
# The slim image has no curl; node does the check. It runs inside the container, so loopback
# works whichever of the setups above is used.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "require('node:http').get({ host: '127.0.0.1', port: process.env.FOREMAN_PORT || 54871, path: '/healthz', timeout: 4000 }, (res) => process.exit(res.statusCode === 200 ? 0 : 1)).on('timeout', () => process.exit(1)).on('error', () => process.exit(1))"]
# node is PID 1: the server handles SIGTERM itself (graceful shutdown, up to
# FOREMAN_SHUTDOWN_TIMEOUT_SECONDS, default 10 s: give `docker stop` a longer -t than that).
ENTRYPOINT ["node", "dist/src/cli/main.js"]
CMD ["serve"]
