#!/usr/bin/env bash
# Build the stockscale image, stockscale:<version> by default.
#
#   deploy/build-image.sh                     # from python:3.11-slim, torch from PyTorch's CPU wheel index
#   deploy/build-image.sh --offline           # no container registry needed (see below)
#   deploy/build-image.sh --tag me/stockscale:dev
#
# --offline works on a machine that reaches only a Python package index and Debian's archive:
#   1. a base image `stockscale-base:bookworm` is made once from Debian packages (debootstrap, then
#      `docker import`); Debian 12's Python is 3.11, as in python:3.11-slim;
#   2. a wheelhouse (deploy/wheelhouse/) is filled with every pinned wheel, through the host's own pip
#      configuration (its index, mirror or local wheel folders);
#   3. the image is built from those two with the network switched off.
#
# Options (environment variables in brackets):
#   --tag TAG         image tag [TAG, default stockscale:<version from pyproject.toml>]
#   --offline         build without any registry, as above
#   --base IMAGE      base image [BASE_IMAGE, default python:3.11-slim, or stockscale-base:bookworm offline]
#   --engine CMD      docker or podman [ENGINE, default: docker, else podman]
#   --mirror URL      Debian mirror for debootstrap [DEBIAN_MIRROR, default: the host's apt source, else
#                     http://deb.debian.org/debian]
#   --rebuild-base    make the debootstrap base again even if it exists
#
# Prints the image's size at the end.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/pyproject.toml" | head -n 1)"
TAG="${TAG:-stockscale:${VERSION}}"
OFFLINE=0
BASE_IMAGE="${BASE_IMAGE:-}"
ENGINE="${ENGINE:-}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-}"
OFFLINE_BASE="stockscale-base:bookworm"
REBUILD_BASE=0
# What the debootstrap base holds: Python 3.11 with venv (the builder makes a virtualenv) and CA roots.
BASE_PACKAGES="python3,python3-venv,ca-certificates"

say() { printf 'build-image: %s\n' "$*"; }
die() { printf 'build-image: error: %s\n' "$*" >&2; exit 2; }
usage() { sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --tag) TAG="${2:?--tag needs a value}"; shift 2 ;;
    --offline) OFFLINE=1; shift ;;
    --base) BASE_IMAGE="${2:?--base needs a value}"; shift 2 ;;
    --engine) ENGINE="${2:?--engine needs a value}"; shift 2 ;;
    --mirror) DEBIAN_MIRROR="${2:?--mirror needs a value}"; shift 2 ;;
    --rebuild-base) REBUILD_BASE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

[[ -n "$VERSION" ]] || die "cannot read the version from $REPO/pyproject.toml"
if [[ -z "$ENGINE" ]]; then
  if command -v docker >/dev/null 2>&1; then ENGINE=docker
  elif command -v podman >/dev/null 2>&1; then ENGINE=podman
  else die "no container engine: install docker (apt-get install docker.io, then start dockerd) or podman"
  fi
fi
command -v "$ENGINE" >/dev/null 2>&1 || die "$ENGINE is not installed"
"$ENGINE" info >/dev/null 2>&1 || die "$ENGINE is installed but its engine does not answer: start it (dockerd, systemctl start docker, or podman)"

WORK="$(mktemp -d -t stockscale-build-XXXXXX)"
cleanup() {
  # debootstrap leaves root-owned files and maybe mounts (/proc) in its target: unmount before removing.
  if [[ -d "$WORK/rootfs" ]]; then
    for mount in proc sys dev/pts dev; do
      if mountpoint -q "$WORK/rootfs/$mount" 2>/dev/null; then umount -l "$WORK/rootfs/$mount" || true; fi
    done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

host_mirror() {
  # The first Debian mirror the host's apt uses, so that debootstrap goes where apt already may go.
  local url
  url="$( { cat /etc/apt/sources.list 2>/dev/null; cat /etc/apt/sources.list.d/*.list 2>/dev/null; } \
          | awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }')"
  if [[ -z "$url" ]]; then
    url="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
           | awk '/^URIs:/ && $0 !~ /security/ { print $2; exit }')"
  fi
  printf '%s\n' "${url:-http://deb.debian.org/debian}"
}

make_offline_base() {
  if [[ "$REBUILD_BASE" == 0 ]] && "$ENGINE" image inspect "$OFFLINE_BASE" >/dev/null 2>&1; then
    say "base image $OFFLINE_BASE exists (--rebuild-base makes it again)"
    return
  fi
  command -v debootstrap >/dev/null 2>&1 || die "--offline needs debootstrap (apt-get install debootstrap)"
  [[ "$(id -u)" == 0 ]] || die "--offline makes its base with debootstrap, which needs root"
  local mirror="${DEBIAN_MIRROR:-$(host_mirror)}"
  say "making $OFFLINE_BASE with debootstrap from $mirror (a few minutes, once)"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$WORK/rootfs" "$mirror" \
    > "$WORK/debootstrap.log" 2>&1 || { tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
  # Nothing of apt's caches or lists ships; the image gets no package manager state it could use anyway.
  rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"* \
         "$WORK/rootfs/usr/share/doc" "$WORK/rootfs/usr/share/man" "$WORK/rootfs/usr/share/locale"
  tar --numeric-owner -C "$WORK/rootfs" -c . \
    | "$ENGINE" import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$OFFLINE_BASE" >/dev/null
  say "base image $OFFLINE_BASE made"
}

fill_wheelhouse() {
  local python="${PYTHON:-python3}" wheelhouse="$HERE/wheelhouse"
  say "filling $wheelhouse through the host's pip configuration"
  # Every pinned requirement (torch, the package's dependencies and the build backend), for Python 3.11 on
  # this platform: the image's Python is 3.11 too.
  grep -v '^#' "$HERE/constraints.txt" | grep -v '^$' > "$WORK/requirements.txt"
  # pip's output is kept for a failure only: a host's pip configuration may name index folders that do not
  # exist, and pip warns about each of them on every package.
  "$python" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
    --python-version 3.11 --dest "$wheelhouse" -r "$WORK/requirements.txt" > "$WORK/pip.log" 2>&1 \
    || { tail -n 20 "$WORK/pip.log" >&2; die "pip could not download the pinned wheels (above)"; }
}

BUILD_ARGS=()
NETWORK=()
if [[ "$OFFLINE" == 1 ]]; then
  make_offline_base
  fill_wheelhouse
  BASE_IMAGE="${BASE_IMAGE:-$OFFLINE_BASE}"
  BUILD_ARGS+=(--build-arg WHEELHOUSE=1)
  NETWORK=(--network none)
fi
BUILD_ARGS+=(--build-arg "BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim}")

say "building $TAG with $ENGINE"
"$ENGINE" build "${NETWORK[@]}" "${BUILD_ARGS[@]}" -f "$HERE/Dockerfile" -t "$TAG" "$REPO"
bytes="$("$ENGINE" image inspect --format '{{.Size}}' "$TAG")"
say "built $TAG: $(awk -v b="$bytes" 'BEGIN { printf "%.2f GB (%d bytes)", b / 1e9, b }')"
