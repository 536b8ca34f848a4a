# The router and agent images, one recipe. From the repo root:
#   docker build -t browser-session-orchestrator .                    # the router (the default, last stage)
#   docker build --target agent -t browser-session-orchestrator-agent .
# Both run the same `npm run build` output as a non-root user (10001).
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY shared ./shared
COPY router ./router
COPY agent ./agent
COPY scripts ./scripts
COPY client ./client
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim AS base
ENV NODE_ENV=production
WORKDIR /app

# Chromium is included so the same image can run the `local` runtime; the `kubernetes` runtime does
# not need it (its browsers run in pods of their own). Installed before the app, so a code change
# does not reinstall it.
FROM base AS agent
RUN apt-get update \
 && apt-get install -y --no-install-recommends chromium \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
USER 10001:10001
EXPOSE 9464
CMD ["node", "dist/agent/main.js"]

FROM base AS router
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
USER 10001:10001
EXPOSE 3000
CMD ["node", "dist/router/node.js"]
