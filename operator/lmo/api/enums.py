"""The API's enumerations (the CRD's `enum` lists)."""

from __future__ import annotations

from enum import Enum


class Task(str, Enum):
    TEXT_GENERATION = "text-generation"
    FILL_MASK = "fill-mask"
    FEATURE_EXTRACTION = "feature-extraction"
    TEXT_CLASSIFICATION = "text-classification"


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    INT8_STATIC = "int8-static"


# From least to most faithful: `accuracyGate.fallback` walks this list to the right.
PRECISION_FALLBACK_ORDER = ["int8-static", "int8", "fp16", "fp32"]


class Strategy(str, Enum):
    MANUAL = "Manual"
    CANARY = "Canary"
    BLUE_GREEN = "BlueGreen"
    EXPERIMENT = "Experiment"


class OnDecision(str, Enum):
    PROMOTE = "Promote"
    REPORT = "Report"


class ExperimentPhase(str, Enum):
    RUNNING = "Running"
    DECIDED = "Decided"
    INCONCLUSIVE = "Inconclusive"


class RoutingProvider(str, Enum):
    GATEWAY_API = "GatewayAPI"
    SERVICE = "Service"


class PolicyProvider(str, Enum):
    NONE = "None"
    ENVOY_GATEWAY = "EnvoyGateway"
    ISTIO = "Istio"


class Engine(str, Enum):
    HPA = "HPA"
    KEDA = "KEDA"


class Metric(str, Enum):
    QUEUE_TIME = "QueueTime"
    INFERENCE_RATE = "InferenceRate"
    GPU_UTILIZATION = "GPUUtilization"
    CPU = "CPU"


class Backend(str, Enum):
    ONNXRUNTIME = "onnxruntime"
    PYTHON = "python"


class Accelerator(str, Enum):
    CUDA = "cuda"
    TENSORRT = "tensorrt"


class Phase(str, Enum):
    PENDING = "Pending"
    CONVERTING = "Converting"
    CONVERTED = "Converted"
    DEPLOYING = "Deploying"
    READY = "Ready"
    FAILED = "Failed"


class RolloutPhase(str, Enum):
    IDLE = "Idle"
    WAITING = "Waiting"  # candidate not Ready yet
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"
    CONCLUDED = "Concluded"  # an Experiment reached its verdict; the spec's weights stay
