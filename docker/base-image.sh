#!/usr/bin/env bash
# Builds the local stand-in for python:3.11-slim when no container registry can be reached:
# a minimal Debian bookworm root (Python 3.11 from Debian's packages) made with debootstrap and
# imported into buildah's storage with `buildah from scratch`.
# Usage: docker/base-image.sh [IMAGE_NAME]   (needs root, debootstrap and buildah)
set -euo pipefail

IMAGE_NAME="${1:-localhost/debian-python:3.11-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BUILDAH="${BUILDAH:-buildah --storage-driver vfs}"
# Python and pip (pip only to bootstrap the image's venv), CA roots for TLS at run time; no compilers.
PACKAGES="python3.11,python3-pip,python3.11-venv,ca-certificates,tzdata"

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
rootfs="$workdir/rootfs"

debootstrap --variant=minbase --include="$PACKAGES" bookworm "$rootfs" "$MIRROR"

# Lean: no apt lists, caches, docs, man pages or locales beyond C.
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/usr/share/doc/* \
       "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log
find "$rootfs"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'C.*' -exec rm -rf {} +
ln -sf python3.11 "$rootfs"/usr/bin/python

tar -C "$rootfs" --numeric-owner -cf "$workdir/rootfs.tar" .
ctr="$($BUILDAH from scratch)"
$BUILDAH add "$ctr" "$workdir/rootfs.tar" /
$BUILDAH config --env LANG=C.UTF-8 --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --cmd python3 --label org.opencontainers.image.base.name=debian:bookworm "$ctr"
$BUILDAH commit --rm "$ctr" "$IMAGE_NAME"
echo "base image: $IMAGE_NAME"
