import { defineConfig } from "vite";

// The page is embedded in the skein binary and served by `skein dashboard-server`; `npm run
// dev` proxies the API to a running dashboard (SKEIN_DASHBOARD=http://127.0.0.x:20001).
const target = process.env.SKEIN_DASHBOARD ?? "http://127.0.0.1:20001";

export default defineConfig({
  base: "/",
  build: {
    outDir: "dist",
    assetsDir: "assets",
    emptyOutDir: true,
    sourcemap: false,
    chunkSizeWarningLimit: 1200,
  },
  server: {
    host: "127.0.0.1",
    proxy: { "/api": target, "/jaeger": target, "/healthz": target },
  },
});
