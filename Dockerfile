# The router, agent and browser images, one recipe. From the repo root:
#   docker build -t bso/router:0.1.0 .                                # the router (the default, last stage)
#   docker build --target agent -t bso/agent:0.1.0 .
#   docker build --target browser-api -t bso/browser-api:0.1.0 .     # the chromium profile's browser
#   docker build --target browser-ui -t bso/browser-ui:0.1.0 .       # and its UI container
# All run the same `npm run build` output as non-root users. Without Docker, `npm run images` builds the
# same four from Debian's packages (infra/images/recipes.ts says what each is; a test checks they agree).
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
# The command runs as it is (node's image would wrap it in its docker-entrypoint.sh).
ENTRYPOINT []

# Chromium is in the agent image so it can run the `local` runtime (the `kubernetes` runtime does not
# need it: its browsers run in pods of their own), and it is the browser image's browser. Installed
# before the app, so a code change does not reinstall it.
FROM base AS chromium
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates chromium fonts-liberation \
 && rm -rf /var/lib/apt/lists/*

FROM chromium AS agent
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
USER 10001:10001
EXPOSE 9464
CMD ["node", "dist/agent/main.js"]

# The chromium profile's browser (BROWSER_API_IMAGE): DevTools on PORT, run by the Job as its pod's
# unprivileged user with a read-only root.
FROM chromium AS browser-api
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
USER 1000:1000
EXPOSE 9222
CMD ["node", "dist/agent/image/browser-main.js"]

# The chromium profile's UI container (BROWSER_UI_IMAGE): one page pointing at DevTools.
FROM base AS browser-ui
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
USER 1000:1000
EXPOSE 8080
CMD ["node", "dist/agent/image/ui-main.js"]

FROM base AS router
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
USER 10001:10001
EXPOSE 3000
CMD ["node", "dist/router/node.js"]
