#!/usr/bin/env bash
# Make the Debian bookworm base image locally, for machines that cannot pull from Docker Hub:
#   debootstrap --variant=minbase bookworm ROOTFS, then `tar -C ROOTFS -c . | podman import - IMAGE`.
# The result is a stand-in for debian:bookworm-slim: same suite, same apt sources (bookworm,
# bookworm-updates, bookworm-security in deb822 form), no apt lists or caches.
#
# Usage: docker/make-base.sh [IMAGE]        (default localhost/debian:bookworm; needs root)
# Env:   FORCE=1 rebuilds an existing image; DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR pick mirrors;
#        ENGINE=podman|docker (default: podman).
set -euo pipefail

IMAGE=${1:-localhost/debian:bookworm}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
ENGINE=${ENGINE:-podman}

die() { echo "make-base: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "debootstrap needs root (run as root, or: sudo $0)"
command -v debootstrap >/dev/null || die "debootstrap not found (Debian: apt-get install -y debootstrap)"
command -v "$ENGINE" >/dev/null || die "$ENGINE not found (Debian: apt-get install -y podman runc)"

if "$ENGINE" image inspect "$IMAGE" >/dev/null 2>&1 && [ -z "${FORCE:-}" ]; then
    echo "make-base: $IMAGE exists (FORCE=1 rebuilds it)"
    exit 0
fi

rootfs=$(mktemp -d /var/tmp/crownsam-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

echo "make-base: debootstrap --variant=minbase $SUITE from $MIRROR"
debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 || {
    tail -20 "$rootfs.log" >&2
    die "debootstrap failed (full log: $rootfs.log)"
}
rm -f "$rootfs.log"

# The same apt sources as the official debian:bookworm image, so security updates are visible.
rm -f "$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES

# Trim what an image must not carry: apt lists and caches, logs, the build host's identity.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/dev/*
: >"$rootfs/etc/machine-id"
rm -f "$rootfs/etc/resolv.conf" "$rootfs/etc/hostname"

echo "make-base: importing as $IMAGE"
tar --numeric-owner -C "$rootfs" -c . | "$ENGINE" import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    - "$IMAGE" >/dev/null
"$ENGINE" image inspect --format '{{.Id}} {{.Size}}' "$IMAGE" | awk -v i="$IMAGE" '{printf "make-base: %s %s (%.0f MB)\n", i, substr($1,1,12), $2/1e6}'
