#!/usr/bin/env bash
# Sets up gpunix on a fresh machine: npm dependencies, the build, and — only where Dawn finds no
# usable Vulkan device — Mesa's CPU Vulkan driver (lavapipe >= 23). On Debian 12 that driver comes
# from the bookworm-backports suite, whose mirror is derived from the machine's own apt sources.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*"; }
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Prints the first Debian mirror URI configured on this machine (deb822 .sources files first,
# then one-line sources.list entries), so we never hard-code a mirror's host name.
debian_mirror() {
  local uri=""
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  if [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; exit } }' /etc/apt/sources.list)
  fi
  echo "$uri"
}

install_lavapipe() {
  command -v apt-get >/dev/null || { log "no apt-get: install Mesa's Vulkan drivers (>= 23) by hand"; exit 1; }
  local codename; codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  local target=()
  if [ "$codename" = "bookworm" ]; then
    local mirror; mirror=$(debian_mirror)
    [ -n "$mirror" ] || { log "cannot find a Debian mirror in /etc/apt/sources*"; exit 1; }
    if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
      log "adding bookworm-backports from $mirror"
      printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$mirror" | sudo_if_needed tee /etc/apt/sources.list.d/gpunix-backports.sources >/dev/null
    fi
    target=(-t bookworm-backports)
  fi
  log "installing mesa-vulkan-drivers ${target[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${target[@]}" mesa-vulkan-drivers libvulkan1 >/dev/null
}

log "installing npm dependencies"
if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi

if node scripts/probe-vulkan.mjs; then
  log "a Vulkan device is present; not installing lavapipe"
else
  install_lavapipe
  node scripts/probe-vulkan.mjs || { log "still no usable Vulkan device after installing lavapipe"; exit 1; }
fi

log "building"
npm run build --silent
log "ready"
