"""lmo runtime: checkpoint -> ONNX -> (INT8) -> Triton model repository.

Runs inside the conversion Job and in `lmo up`; never imports the operator (`lmo`).
"""

from importlib.metadata import version as _version

# The distribution's version (pyproject.toml): the converter, the operator, the images and
# the chart carry one version; a manifest records the converter that wrote it.
__version__ = _version("lmo")
