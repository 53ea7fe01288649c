# Component image targets, included by the Makefile.
#   make images [BUILDER=docker|buildah|cloudbuild] [REGISTRY=REGION-docker.pkg.dev/PROJECT/REPO] [VARIANT=cpu|gpu]
#   make base-image      local Debian bookworm base (debootstrap) for buildah where no registry can be reached
#   make image-test      build, then run every task of the compiled pipeline inside the image (slow)
# The tag is components/image.py's content hash; with REGISTRY set, compile and pipeline-run pin the pushed path.

BUILDER ?= $(shell docker info >/dev/null 2>&1 && echo docker || echo buildah)
VARIANT ?= cpu
REGISTRY ?=
BUILDAH := buildah --storage-driver vfs
LOCAL_BASE_IMAGE ?= localhost/debian-python:3.11-bookworm
IMAGE_NAME := $(if $(REGISTRY),$(REGISTRY)/,)recsys-pipeline
ifneq ($(REGISTRY),)
export RECSYS_IMAGE_REPOSITORY := $(IMAGE_NAME)
endif
IMAGE_TAG := $(shell python3 -c 'import components.image as i; print(i.content_hash())')$(if $(filter gpu,$(VARIANT)),-gpu,)
IMAGE_REF := $(IMAGE_NAME):$(IMAGE_TAG)

ifeq ($(VARIANT),gpu)
BASE_IMAGE ?= tensorflow/tensorflow:2.21.0-gpu
IMAGE_BUILD_ARGS := --build-arg EXTRA_LOCK=docker/requirements-gpu.lock
else ifeq ($(BUILDER),buildah)
BASE_IMAGE ?= $(LOCAL_BASE_IMAGE)
else
BASE_IMAGE ?= python:3.11-slim-bookworm
endif
# The Beam boot stage needs apache/beam_python3.11_sdk from a registry; the local base builds the runtime stage.
IMAGE_TARGET ?= $(if $(filter $(LOCAL_BASE_IMAGE),$(BASE_IMAGE)),runtime,production)
# pip inside a buildah step trusts this machine's CA bundle through a read-only mount, never a copy.
HOST_CA_BUNDLE ?= $(wildcard /etc/ssl/certs/ca-certificates.crt)
BUILDAH_CA_ARGS := $(if $(HOST_CA_BUNDLE),-v $(HOST_CA_BUNDLE):/run/host-ca.crt:ro --build-arg PIP_CERT=/run/host-ca.crt,)
IMAGE_TEST_DIR ?= runs/image-test
# The tiny shop's briefly trained models rarely beat the baselines; a relative margin of -0.99 blesses them,
# so that export, A/B analysis and registration run too.
IMAGE_TEST_PARAMS ?= --param margin_vs_baseline=-0.99 --param retrieval_epochs=2 --param ranking_epochs=1

.PHONY: images image-tag image-tools base-image image-test serve-image serve-image-test

image-tag: ## print the component image's tag (a content hash of the code and the lock)
	@echo $(IMAGE_REF)

# buildah and debootstrap are Debian packages; install them when missing (needs root and apt-get).
image-tools: ## install buildah and debootstrap from Debian's packages when missing
	@command -v buildah >/dev/null && command -v debootstrap >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah debootstrap; }

base-image: image-tools ## build the local Debian base image with debootstrap (buildah)
	$(BUILDAH) inspect --type image $(LOCAL_BASE_IMAGE) >/dev/null 2>&1 || BUILDAH="$(BUILDAH)" bash docker/base-image.sh $(LOCAL_BASE_IMAGE)

images: $(if $(filter buildah,$(BUILDER)),image-tools $(if $(filter $(LOCAL_BASE_IMAGE),$(BASE_IMAGE)),base-image,),) ## build (and with REGISTRY= push) the component image (BUILDER=docker|buildah|cloudbuild)
	@start=$$(date +%s); set -e; \
	case "$(BUILDER)" in \
	docker) docker build -f docker/Dockerfile --target $(IMAGE_TARGET) --build-arg BASE_IMAGE=$(BASE_IMAGE) \
	          $(IMAGE_BUILD_ARGS) -t $(IMAGE_REF) . ; \
	        if [ -n "$(REGISTRY)" ]; then docker push $(IMAGE_REF); fi ;; \
	buildah) $(BUILDAH) bud --isolation chroot --layers=false -f docker/Dockerfile --target $(IMAGE_TARGET) \
	          --build-arg BASE_IMAGE=$(BASE_IMAGE) $(IMAGE_BUILD_ARGS) $(BUILDAH_CA_ARGS) -t $(IMAGE_REF) . ; \
	        if [ -n "$(REGISTRY)" ]; then $(BUILDAH) push $(IMAGE_REF) docker://$(IMAGE_REF); fi ;; \
	cloudbuild) test -n "$(REGISTRY)" || { echo "BUILDER=cloudbuild pushes to Artifact Registry: set REGISTRY" >&2; exit 2; }; \
	        gcloud builds submit --config docker/cloudbuild.yaml \
	          --substitutions=_IMAGE=$(IMAGE_REF),_BASE_IMAGE=$(BASE_IMAGE),_TARGET=$(IMAGE_TARGET),_BUILD_ARGS="$(IMAGE_BUILD_ARGS)" . ;; \
	*) echo "unknown BUILDER=$(BUILDER) (docker|buildah|cloudbuild)" >&2; exit 2 ;; \
	esac; \
	echo "built $(IMAGE_REF) with $(BUILDER) in $$(( $$(date +%s) - start ))s"
	@if [ "$(BUILDER)" = buildah ]; then $(BUILDAH) images --format '{{.Name}}:{{.Tag}} {{.Size}}' $(IMAGE_REF); fi

image-test: venv ## build the image with buildah and run every task of the compiled spec inside it
	rm -rf $(call q,$(IMAGE_TEST_DIR))
	$(MAKE) images BUILDER=buildah VARIANT=cpu REGISTRY= IMAGE_REF=$(call q,$(IMAGE_REF))
	RECSYS_IMAGE=$(call q,$(IMAGE_REF)) $(PY) -m pipelines.compile --output $(call q,$(IMAGE_TEST_DIR)/pipeline.yaml)
	time $(PY) -m tools.image_test --spec $(call q,$(IMAGE_TEST_DIR)/pipeline.yaml) --image $(call q,$(IMAGE_REF)) \
	  --workdir $(call q,$(IMAGE_TEST_DIR)) $(IMAGE_TEST_PARAMS)

# The serving image: docker/Dockerfile.serving on top of the component image (the prediction server as entry point).
SERVING_IMAGE_REF := $(IMAGE_REF)-serving
SERVE_IMAGE_REQUESTS ?= 200

serve-image: ## build the serving image (docker/Dockerfile.serving on the component image; BUILDER=docker|buildah)
	$(MAKE) images BUILDER=$(BUILDER) VARIANT=cpu IMAGE_REF=$(call q,$(IMAGE_REF))
	case "$(BUILDER)" in \
	docker) docker build -f docker/Dockerfile.serving --build-arg COMPONENT_IMAGE=$(IMAGE_REF) -t $(SERVING_IMAGE_REF) . ; \
	        if [ -n "$(REGISTRY)" ]; then docker push $(SERVING_IMAGE_REF); fi ;; \
	buildah) $(BUILDAH) bud --isolation chroot --layers=false -f docker/Dockerfile.serving \
	          --build-arg COMPONENT_IMAGE=$(IMAGE_REF) -t $(SERVING_IMAGE_REF) . ; \
	        if [ -n "$(REGISTRY)" ]; then $(BUILDAH) push $(SERVING_IMAGE_REF) docker://$(SERVING_IMAGE_REF); fi ;; \
	*) echo "serve-image builds with BUILDER=docker or buildah, not $(BUILDER)" >&2; exit 2 ;; \
	esac

serve-image-test: venv ## build the serving image with buildah, start it on loopback and send it real requests (MODEL=)
	$(MAKE) serve-image BUILDER=buildah REGISTRY= IMAGE_REF=$(call q,$(IMAGE_REF))
	$(PY) -m tools.serve_image_test --image $(call q,$(SERVING_IMAGE_REF)) --model $(call q,$(MODEL)) \
	  --requests $(call q,$(SERVE_IMAGE_REQUESTS))
