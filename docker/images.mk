# Container images (docker/). Included from the Makefile (`include docker/images.mk`); uses its BIN,
# PYTEST_ARGS and setup target.
#   make images                 build crownsam-cpu, crownsam-gpu and crownsam-mlflow (docker/build.sh)
#   make images IMAGES=cpu      just one; REGISTRY=... PUSH=1 to push, BASE_IMAGE=... to pick the base
#   make base-image             the local Debian base (debootstrap + podman import) where Docker Hub is out of reach
#   make test-images            slow: base + all images with podman, then crownsam and a pseudolabel job inside

IMAGES ?= cpu gpu mlflow
LOCAL_BASE_IMAGE ?= localhost/debian:bookworm

.PHONY: images base-image image-deps test-images

images: ## build the container images (podman, or docker when its engine runs; see docker/README.md)
	docker/build.sh $(IMAGES)

base-image: image-deps ## make the local Debian bookworm base image (debootstrap + podman import)
	docker/make-base.sh $(LOCAL_BASE_IMAGE)

# podman, debootstrap and runc from Debian, installed when missing and root (like system-deps).
image-deps:
	@missing=""; for c in podman debootstrap runc; do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "crownsam: installing$$missing (Debian) for image builds"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman debootstrap runc >/dev/null; \
		else echo "crownsam:$$missing not found and cannot install (needs root and apt-get)" >&2; exit 2; fi; fi

test-images: setup image-deps ## slow: build base + images with podman and run crownsam inside them
	$(BIN)/python -m pytest -m images tests/docker/test_dockerfiles.py $(PYTEST_ARGS)
