#!/usr/bin/env bash
# A base image made here from Debian's packages, standing in for the official python:3.11-slim-bookworm where
# no registry can be reached (tests, the rehearsal): Debian 12's minimal system with Python 3.11 and its venv
# module, imported into podman as IMAGE (default localhost/djinn-debian-base:bookworm). Needs root, debootstrap
# and podman; about two minutes. Does nothing when the image exists already (--force makes it again).
set -euo pipefail
image="${1:-localhost/djinn-debian-base:bookworm}"
force="${2:-}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if [[ "$force" != "--force" ]] && podman image exists "$image"; then
  echo "$image exists"
  exit 0
fi
rootfs="$(mktemp -d /tmp/djinn-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$mirror" >/dev/null
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | podman import --quiet --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
echo "$image made with debootstrap from $mirror"
