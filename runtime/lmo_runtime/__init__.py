"""lmo runtime: checkpoint -> ONNX -> (INT8) -> Triton model repository.

Runs inside the conversion Job and in `lmo up`; never imports the operator (`lmo`).
"""

__version__ = "0.4.0"
