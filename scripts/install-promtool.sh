#!/usr/bin/env bash
# Puts Prometheus's promtool at .tools/bin/promtool, for test/metrics.test.ts's
# `promtool check metrics` of a real scrape (the test skips that check, saying why, without it).
# Debian's `prometheus` package has promtool: a 19 MB download (94 MB installed, with the server
# and its web assets). Only the .deb is fetched (apt-get download: no root, nothing installed or
# started) and promtool alone is extracted from it. Elsewhere, put any promtool on PATH instead.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "install-promtool: $*" >&2; }

if [ -x .tools/bin/promtool ]; then log "already present: .tools/bin/promtool"; exit 0; fi
if command -v promtool >/dev/null; then log "promtool is on PATH: $(command -v promtool)"; exit 0; fi
command -v apt-get >/dev/null || { log "no apt-get: install promtool by hand (https://prometheus.io/download/)"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download prometheus >/dev/null 2>&1) || { log "apt-get download prometheus failed (run apt-get update first?)"; exit 1; }
dpkg-deb -x "$work"/prometheus_*.deb "$work/x"
mkdir -p .tools/bin
cp "$work/x/usr/bin/promtool" .tools/bin/promtool
chmod 755 .tools/bin/promtool
log "installed $(.tools/bin/promtool --version 2>&1 | head -1) at .tools/bin/promtool"
