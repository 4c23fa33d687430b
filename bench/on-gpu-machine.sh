#!/usr/bin/env bash
# The GPU machine's figures in one call: the adapter, bench/overhead, bench/callPathProfile (where the
# call path's CPU goes), bench/preemption and bench/wire,
# each under its own time limit, their JSON and tables written to $OUT (docs/benchmarks.md, "On a real
# GPU", has the first run's figures and what they mean).
#
# Here, once, after `npm ci && npm run build`:
#   bash ../shared/device/bundle.sh          # .devbundle: Node, the Vulkan loader, node_modules
#   bash bench/on-gpu-machine.sh --pack      # adds the glvnd libraries NVIDIA's Vulkan ICD links against
# Then on the GPU machine (the device tool's `run`, carry [".devbundle", "dist"]):
#   bash bench/on-gpu-machine.sh [--quick]
# --quick: fewer repetitions (about 2 minutes instead of 4).
set -u
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

if [ "${1:-}" = "--pack" ]; then
  # Without libGLX/libGLdispatch, the NVIDIA ICD (libGLX_nvidia.so.0) fails to load and Vulkan
  # reports "no drivers". The packages come from this machine's own apt sources, for amd64.
  set -e
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  mkdir -p /tmp/amd64/partial .devbundle
  apt-get $o update >/dev/null
  (cd .devbundle && apt-get $o download libglvnd0 libglx0 libgl1 libegl1 libopengl0 libgles2 >/dev/null)
  ls .devbundle/*.deb
  exit 0
fi

: "${OUT:?OUT must name the folder for the results (the device tool sets it)}"
[ -f .devbundle/activate.sh ] || { echo "no .devbundle: run ../shared/device/bundle.sh here first and carry it" >&2; exit 2; }
[ -f dist/bench/overhead.js ] || { echo "no dist: run npm run build here first and carry it" >&2; exit 2; }
reps=21 rounds=3 wireReps=3 profileReps=4
[ "${1:-}" = "--quick" ] && reps=7 rounds=1 wireReps=1 profileReps=2

for deb in .devbundle/*.deb; do dpkg -x "$deb" /; done
ldconfig
# shellcheck disable=SC1091
source .devbundle/activate.sh

node --input-type=module -e "
import { create } from 'webgpu';
const gpu = create([]);
const info = (await gpu.requestAdapter())?.info;
console.log(JSON.stringify(info ? { vendor: info.vendor, device: info.device, description: info.description, fallback: info.isFallbackAdapter } : null));
process.exit(0);" 2>/dev/null | tee "$OUT/adapter.json"
grep -q '"vendor"' "$OUT/adapter.json" || { echo "no WebGPU adapter: is the GPU's Vulkan driver there?" >&2; exit 3; }

# One benchmark: its JSON to $OUT/AS.json, its table to $OUT/AS.txt (AS: NAME unless given), at most LIMIT seconds.
benchAs() {
  local as=$1 name=$2 limit=$3
  shift 3
  local start=$SECONDS
  timeout "$limit" node "dist/bench/$name.js" "$@" >"$OUT/$as.json" 2> >(grep -v '^Warning: ' >"$OUT/$as.txt")
  echo "$as: exit $? after $((SECONDS - start)) s"
}
bench() { benchAs "$1" "$@"; }
bench overhead 150 --reps "$reps"
# The same call path with every submit given to Dawn in its own call (docs/kernel.md, "Submits held for a burst").
benchAs overhead-unheld overhead 60 --reps "$reps" --only dispatch-single,dispatch-loop --coalesce-within 0
bench callPathProfile 60 --reps "$profileReps"
bench preemption 120 --rounds "$rounds" --configs a,ap,c
bench wire 90 --reps "$wireReps" --only dispatch-batched,bandwidth-4MiB,bandwidth-64MiB,round-trip
sleep 1
tail -n 8 "$OUT/overhead.txt" "$OUT/overhead-unheld.txt" "$OUT/callPathProfile.txt" "$OUT/preemption.txt" "$OUT/wire.txt"
