# syntax=docker/dockerfile:1.7
# tunnel-broker: multi-stage build, production dependencies only, runs as a non-root user.

# Node 24 LTS (Node 20 reached end of life in April 2026).
ARG NODE_VERSION=24

# --- build: install everything, generate the Prisma client, compile TypeScript ---
FROM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
COPY scripts ./scripts
COPY prisma ./prisma
COPY prisma.config.ts ./
# Scripts are skipped here; generate runs explicitly below (scripts/prisma-generate.mjs).
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run generate && npm run build

# --- prod-deps: runtime dependencies only ---
FROM node:${NODE_VERSION}-bookworm-slim AS prod-deps
WORKDIR /app
COPY package.json package-lock.json ./
COPY scripts ./scripts
RUN npm ci --omit=dev --no-audit --no-fund --ignore-scripts && npm cache clean --force

# --- runtime ---
FROM node:${NODE_VERSION}-bookworm-slim AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000
WORKDIR /app
COPY --from=prod-deps --chown=node:node /app/node_modules ./node_modules
COPY --from=build --chown=node:node /app/dist ./dist
COPY --chown=node:node package.json ./
# The migration runner reads these at start (and in the compose `migrate` service).
COPY --chown=node:node prisma/migrations ./prisma/migrations
# The operator CLI: `docker compose run --rm api tunnel-broker doctor` runs dist/cli/main.js.
COPY --chown=node:node bin ./bin
RUN ln -s /app/bin/tunnel-broker.mjs /usr/local/bin/tunnel-broker
USER node
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# node directly (not npm) so SIGTERM reaches the broker and shutdown is graceful.
CMD ["node", "dist/server.js"]
