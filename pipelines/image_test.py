"""The image-test runner moved beside the docker build it checks: tools/image_test.py (`make image-test`).

pipelines/serve_image_test.py still imports its buildah command and image naming from here; these two names are
tools.image_test's, re-exported until that import names tools.image_test itself."""

from tools.image_test import BUILDAH, local_image_name

__all__ = ["BUILDAH", "local_image_name"]
