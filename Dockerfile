# syntax=docker/dockerfile:1
# gpunixd in a container, on the host's GPU through Vulkan. Build and run (docs/daemon.md, "In a
# container", has the variants):
#   docker build -t gpunix .
#   docker run -d --name gpunixd --gpus all -v gpunix-run:/run/gpunix gpunix        # NVIDIA
#   docker run -d --name gpunixd --device /dev/dri -v gpunix-run:/run/gpunix gpunix  # AMD, Intel
#   docker run -d --name gpunixd -v gpunix-run:/run/gpunix gpunix                    # CPU (lavapipe)
# The base image comes from Docker's default registry and its packages from the base image's own
# apt sources: no registry or mirror is named here.
ARG NODE_IMAGE=node:20-bookworm-slim

# The build: every dependency (TypeScript included), the compile, then only what runs is kept.
FROM ${NODE_IMAGE} AS build
WORKDIR /opt/gpunix
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
# The whole tree (less .dockerignore's): tsconfig.json compiles src, test and bench together.
COPY . .
RUN npx tsc -p . && npm prune --omit=dev --no-audit --no-fund

FROM ${NODE_IMAGE}
# Vulkan: the loader, and Mesa's drivers: radv (AMD) and anv (Intel) for a host's /dev/dri, and
# lavapipe for a host with no GPU. gpunix needs Mesa 23 or newer; Debian 12 (bookworm) has it in
# bookworm-backports, whose mirror is taken from the image's own apt sources, as scripts/setup.sh
# does. NVIDIA's driver is not installed: the NVIDIA Container Toolkit mounts the host's (its
# Vulkan ICD needs glvnd's dispatch library, libglvnd0, and X11's client libraries, loaded even
# without a display). Mesa's EGL, GLES and GL libraries (libegl-mesa0, libgles2, libgl1-mesa-dri)
# are there so that `backends: ["vulkan", "opengles", "opengl"]` can open Dawn's GL backends too
# (docs/configuration.md); the default opens Vulkan only. etcd (etcd-server, etcd-client: Debian's
# own suite, not backports) is the fleet's store (docs/fleet.md): etcdctl for operators, and an etcd
# a small fleet can run from this image (`--entrypoint etcd`); nothing starts it by default.
RUN set -eu; \
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}"); \
    target=""; \
    if [ "$codename" = bookworm ]; then \
      mirror=""; \
      for f in /etc/apt/sources.list.d/*.sources; do \
        [ -f "$f" ] || continue; \
        mirror=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$f"); \
        [ -n "$mirror" ] && break; \
      done; \
      if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then \
        mirror=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; exit } }' /etc/apt/sources.list); \
      fi; \
      [ -n "$mirror" ] || { echo "no Debian mirror in the image's apt sources" >&2; exit 1; }; \
      printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$mirror" > /etc/apt/sources.list.d/gpunix-backports.sources; \
      target="-t bookworm-backports"; \
    fi; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $target \
      mesa-vulkan-drivers libvulkan1 libglvnd0 libegl1 libx11-6 libxext6 \
      libegl-mesa0 libgles2 libgl1-mesa-dri; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends etcd-server etcd-client; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --system gpunix; \
    useradd --system --gid gpunix --home-dir /var/lib/gpunix --shell /usr/sbin/nologin gpunix; \
    install -d -m 0750 -o gpunix -g gpunix /run/gpunix /var/lib/gpunix /var/lib/gpunix/images /var/cache/gpunix; \
    install -d -m 0755 /etc/gpunix

# The NVIDIA Container Toolkit mounts the driver's Vulkan ICD only with the `graphics` capability.
# (/dev/nvidia* are usually open to all; /dev/dri/renderD* belong to the host's `render` group,
# which the container's user joins with `--group-add` and that group's number: docs/daemon.md.)
# GPUNIX_SOCKET: the clients' default (`docker exec gpunixd gpunix ps`). The caches: Mesa's and
# NVIDIA's compiled shaders.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,graphics,utility \
    GPUNIX_SOCKET=/run/gpunix/gpunixd.sock \
    XDG_CACHE_HOME=/var/cache/gpunix \
    __GL_SHADER_DISK_CACHE_PATH=/var/cache/gpunix \
    NODE_ENV=production

WORKDIR /opt/gpunix
COPY --from=build /opt/gpunix/package.json ./
COPY --from=build /opt/gpunix/node_modules ./node_modules
COPY --from=build /opt/gpunix/dist/src ./dist/src
COPY --from=build /opt/gpunix/bin ./bin
COPY examples ./examples
COPY scripts/probe-vulkan.mjs scripts/probe-egl.mjs ./scripts/
# The default configuration: the socket (0660, the gpunix group) in the /run/gpunix volume, and
# sessions without a token act as the `default` tenant. Mount your own at /etc/gpunix/gpunixd.json
# for tokens, tenants, TLS and metrics.
COPY contrib/gpunixd.container.json /etc/gpunix/gpunixd.json
RUN ln -s /opt/gpunix/bin/gpunix.js /usr/local/bin/gpunix

# The socket, the state file and checkpoint images outlive the container.
VOLUME ["/run/gpunix", "/var/lib/gpunix"]
USER gpunix
# SIGTERM drains (give `docker stop` the drain's time: --stop-timeout 45); SIGINT kills all.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "/opt/gpunix/bin/gpunix.js", "daemon"]
CMD ["--config", "/etc/gpunix/gpunixd.json"]
