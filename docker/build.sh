#!/usr/bin/env bash
# Build the crownsam images: docker/build.sh [cpu] [gpu] [mlflow]   (default: all three)
#
# Tag: <project version>-<git short sha>[-dirty], e.g. crownsam-cpu:0.1.0-8f20165 (printed at the end,
# and written to $BUILD_LOG_DIR/images.env as CROWNSAM_CPU_IMAGE=... lines: source it before
# `crownsam compile` so the compiled pipeline names exactly these images).
# Engine: docker when a Docker engine answers (`docker info`), else podman; ENGINE=podman|docker forces one.
# Env:
#   BASE_IMAGE        base for every image. Default: localhost/debian:bookworm when that image exists
#                     (docker/make-base.sh makes it where Docker Hub is out of reach), else
#                     debian:bookworm-slim. Pin it by digest on a builder that can pull.
#   REGISTRY          image name prefix (default localhost), e.g. europe-docker.pkg.dev/PROJECT/crownsam
#   TAG               override the computed tag
#   PUSH=1            push the images after building (docker/podman push; log in first)
#   PIP_INDEX_URL     a PyPI mirror for the build (no credentials: build args are stored in the image)
#   BUILD_CA_BUNDLE   a CA bundle for pip inside the build, for networks that intercept TLS (default:
#                     $PIP_CERT when set, as on the development machines). Passed as the build secret
#                     `pip-cert`: it is not stored in the image. BUILD_CA_BUNDLE= (empty) passes none.
#   PODMAN_ISOLATION  podman build --isolation (default chroot: works without a container runtime's
#                     cgroup setup, as on the development machines; `oci` on an ordinary host)
#   BUILD_NICE        nice level for the build (default 19: builds yield to everything else)
#   BUILD_LOG_DIR     where the build logs go (default build/images)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

die() { echo "build: $*" >&2; exit 2; }

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(cpu gpu mlflow)
for t in "${targets[@]}"; do
    case "$t" in cpu | gpu | mlflow) ;; *) die "unknown image '$t' (cpu, gpu or mlflow)" ;; esac
done

if [ -z "${ENGINE:-}" ]; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        ENGINE=docker
    elif command -v podman >/dev/null 2>&1; then
        ENGINE=podman
    else
        die "no container engine: neither a running Docker engine nor podman (Debian: apt-get install -y podman runc)"
    fi
fi
command -v "$ENGINE" >/dev/null || die "$ENGINE not found"

VERSION=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' pyproject.toml | head -n 1)
[ -n "$VERSION" ] || die "no version in pyproject.toml"
if REVISION=$(git rev-parse HEAD 2>/dev/null); then
    SHORT=$(git rev-parse --short=7 HEAD)
    DIRTY=$([ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || echo -dirty)
else
    REVISION=unknown SHORT=nogit DIRTY=""
fi
TAG=${TAG:-$VERSION-$SHORT$DIRTY}
REGISTRY=${REGISTRY:-localhost}
LOCAL_BASE=localhost/debian:bookworm
if [ -z "${BASE_IMAGE:-}" ]; then
    if "$ENGINE" image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
        BASE_IMAGE=$LOCAL_BASE
    else
        BASE_IMAGE=debian:bookworm-slim
    fi
fi
CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOG_DIR=${BUILD_LOG_DIR:-build/images}
mkdir -p "$LOG_DIR"

engine_args=()
if [ "$ENGINE" = podman ]; then
    engine_args+=(--isolation "${PODMAN_ISOLATION:-chroot}")
fi
pip_args=()
[ -z "${PIP_INDEX_URL:-}" ] || pip_args+=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")
BUILD_CA_BUNDLE=${BUILD_CA_BUNDLE-${PIP_CERT:-}}
if [ -n "$BUILD_CA_BUNDLE" ]; then
    [ -r "$BUILD_CA_BUNDLE" ] || die "BUILD_CA_BUNDLE=$BUILD_CA_BUNDLE is not a readable file"
    pip_args+=(--secret "id=pip-cert,src=$BUILD_CA_BUNDLE")
fi

built=()
env_lines=()
for t in "${targets[@]}"; do
    image="$REGISTRY/crownsam-$t:$TAG"
    log="$LOG_DIR/$t.log"
    echo "build: $image (base $BASE_IMAGE, $ENGINE; log $log)"
    start=$(date +%s)
    if ! nice -n "${BUILD_NICE:-19}" "$ENGINE" build "${engine_args[@]}" \
        -f "docker/Dockerfile.$t" -t "$image" \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --build-arg "VERSION=$VERSION" \
        --build-arg "REVISION=$REVISION" \
        --build-arg "CREATED=$CREATED" \
        --build-arg "IMAGE=$image" \
        "${pip_args[@]}" \
        . >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "building $image failed (full log: $log)"
    fi
    size=$("$ENGINE" image inspect --format '{{.Size}}' "$image")
    echo "build: $image built in $(($(date +%s) - start)) s, $((size / 1000000)) MB"
    built+=("$image")
    env_lines+=("CROWNSAM_$(echo "$t" | tr '[:lower:]' '[:upper:]')_IMAGE=$image")
done
printf '%s\n' "${env_lines[@]}" >"$LOG_DIR/images.env"

if [ "${PUSH:-0}" = 1 ]; then
    for image in "${built[@]}"; do
        "$ENGINE" push "$image"
    done
fi
printf '%s\n' "${built[@]}"
