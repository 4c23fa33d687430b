#!/usr/bin/env bash
# Sets up gpunix on a fresh machine: npm dependencies, the build, and — only where Dawn finds no
# usable Vulkan device — Mesa's CPU Vulkan driver (lavapipe >= 23), and — only where Dawn opens no
# OpenGL ES device — Mesa's EGL/GLES/GL libraries (the opengles and opengl backends). On Debian 12
# Mesa comes from the bookworm-backports suite (the GL drivers from the same suite as the Vulkan
# one), whose mirror is derived from the machine's own apt sources.
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

# Installs Mesa packages "$@" with apt, from bookworm-backports on Debian 12.
install_mesa() {
  command -v apt-get >/dev/null || { log "no apt-get: install Mesa's $* (>= 23) by hand"; exit 1; }
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
  log "installing $* ${target[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${target[@]}" "$@" >/dev/null
}

# etcd (etcd-server, etcd-client) from the distribution's own suite (no backports): the fleet's store
# (docs/fleet.md); the fleet tests start their own etcd processes from PATH on free ports. Debian's
# etcd-server would start a system etcd on 2379/2380 as it installs: a policy-rc.d that denies every
# service start keeps it from running (invoke-rc.d and deb-systemd-invoke both obey it), and on a
# systemd machine the unit is disabled, so nothing is left running or starting at boot.
install_etcd() {
  command -v apt-get >/dev/null || { log "no apt-get: install etcd >= 3.4 (etcd and etcdctl) by hand"; exit 1; }
  log "installing etcd-server etcd-client"
  local policy=/usr/sbin/policy-rc.d saved="" status=0
  if [ -e "$policy" ]; then saved=$(mktemp); sudo_if_needed cp -p "$policy" "$saved"; fi
  printf '#!/bin/sh\nexit 101\n' | sudo_if_needed tee "$policy" >/dev/null
  sudo_if_needed chmod 0755 "$policy"
  { sudo_if_needed apt-get update -qq &&
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server etcd-client >/dev/null; } || status=$?
  if [ -n "$saved" ]; then sudo_if_needed mv "$saved" "$policy"; else sudo_if_needed rm -f "$policy"; fi
  [ "$status" -eq 0 ] || { log "installing etcd-server etcd-client failed"; exit "$status"; }
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    sudo_if_needed systemctl disable --now etcd.service >/dev/null 2>&1 || true
  fi
}

log "installing npm dependencies"
if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi

if node scripts/probe-vulkan.mjs; then
  log "a Vulkan device is present; not installing lavapipe"
else
  install_mesa mesa-vulkan-drivers libvulkan1
  node scripts/probe-vulkan.mjs || { log "still no usable Vulkan device after installing lavapipe"; exit 1; }
fi

# The opengles and opengl backends (createKernel({ backends }), $GPUNIX_BACKENDS): Dawn reaches them
# through EGL (Mesa's, on Linux only). Dawn prints driver warnings on stderr; only the probe's
# verdict line matters here.
if [ "$(uname -s)" = Linux ]; then
  if node scripts/probe-egl.mjs opengles 2>/dev/null; then
    log "an OpenGL ES device is present; not installing Mesa's EGL/GL libraries"
  else
    install_mesa libegl1 libegl-mesa0 libgles2 libgl1-mesa-dri
    node scripts/probe-egl.mjs opengles 2>/dev/null || { log "still no usable OpenGL ES device after installing Mesa's EGL/GL libraries"; exit 1; }
  fi
  node scripts/probe-egl.mjs opengl 2>/dev/null || log "no OpenGL device: the opengl backend will be unavailable"
fi

if command -v etcd >/dev/null; then
  log "etcd is installed ($(etcd --version | head -n 1)); not installing it"
else
  install_etcd
  command -v etcd >/dev/null || { log "still no etcd on PATH after installing etcd-server"; exit 1; }
fi

log "building"
npm run build --silent
log "ready"
