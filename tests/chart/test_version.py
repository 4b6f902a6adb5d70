"""One version: pyproject.toml's is the package's, the converter's (it goes into every
manifest and content key), the default image tags', the image builder's and the chart's
appVersion. A release that bumps one and not the others fails here."""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import yaml

import lmo
import lmo_runtime
from lmo.api import DEFAULT_TRITON_IMAGE
from lmo.settings import OperatorSettings
from lmo_runtime.manifest import ConversionRequest

REPO = Path(__file__).resolve().parents[2]


def _builder():
    spec = importlib.util.spec_from_file_location("lmo_images", REPO / "runtime/images/build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_one_version_everywhere():
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((REPO / "charts/lmo/Chart.yaml").read_text())
    builder = _builder()
    found = {
        "installed distribution (re-install after a bump)": metadata.version("lmo"),
        "lmo.__version__": lmo.__version__,
        "lmo_runtime.__version__ (converter)": lmo_runtime.__version__,
        "ConversionRequest.converter_version": ConversionRequest.model_fields[
            "converter_version"].default,
        "Chart.yaml appVersion": str(chart["appVersion"]),
        "Chart.yaml version": str(chart["version"]),
        "default converter image tag": OperatorSettings().converter_image.rsplit(":", 1)[1],
        "default GPU converter image tag":
            OperatorSettings().converter_gpu_image.rsplit(":", 1)[1],
        "default Triton image tag": DEFAULT_TRITON_IMAGE.rsplit(":", 1)[1],
        "runtime/images/build.py": builder.project_version(),
    }
    assert {k: v for k, v in found.items() if v != version} == {}, f"pyproject says {version}"
    for name in builder.IMAGES:
        assert builder.image_ref(name, version) == f"ghcr.io/lmo-dev/lmo-{name}:{version}"
    # the chart's default repositories are the names `make images` tags
    values = yaml.safe_load((REPO / "charts/lmo/values.yaml").read_text())
    assert values["image"]["repository"] == "ghcr.io/lmo-dev/lmo-operator"
    assert values["converter"]["image"]["repository"] == "ghcr.io/lmo-dev/lmo-converter"
    assert DEFAULT_TRITON_IMAGE.rsplit(":", 1)[0] == "ghcr.io/lmo-dev/lmo-triton"
