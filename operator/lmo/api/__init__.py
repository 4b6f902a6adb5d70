"""The `LanguageModel` API (`lmo.dev/v1alpha1`): typed spec and status.

This package is the single source of truth for the API, one module per part of the spec
(versions, optimize, rollout, routing, serving, protection, logging, status; the spec's own
cross-field rules in `rules`, the resource in `resource`, reading files in `loading`). The
CRD in `crds/` is generated from these models (`lmo.crd`), so every field carries a
description (it is what `kubectl explain` shows) and defaults equal the CRD's defaults. A
rule that a schema alone cannot express is one `Rule` (CEL condition, message, field path,
Python predicate) in its model's table: the CRD's `x-kubernetes-validations` are generated
from it and the model's validator runs its Python side, so the cluster and `lmo up` refuse
the same input with the same words.

Every public name is importable from `lmo.api`.

Parse once, at the edge: `LanguageModel.model_validate(obj)` or `load_file(path)`.
Nothing here imports kopf or kubernetes.
"""

from lmo.api.base import (  # noqa: F401
    GROUP,
    VERSION,
    API_VERSION,
    KIND,
    PLURAL,
    SINGULAR,
    SHORT_NAMES,
    DNS_LABEL,
    MAX_VERSION_NAME,
    MAX_VERSIONS,
    DURATION,
    GATEWAY_DURATION,
    CHECKPOINT_URI,
    ARTIFACT_URI,
    EVALUATION_URI,
    DEFAULT_TRITON_IMAGE,
    VERSION_HEADER,
    SecretRef,
    parse_duration,
)
from lmo.api.enums import (  # noqa: F401
    Task,
    Precision,
    PRECISION_FALLBACK_ORDER,
    Strategy,
    OnDecision,
    ExperimentPhase,
    RoutingProvider,
    PolicyProvider,
    Engine,
    Metric,
    Backend,
    Accelerator,
    Phase,
    RolloutPhase,
)
from lmo.api.versions import (  # noqa: F401
    Checkpoint,
    VersionSpec,
    Artifacts,
)
from lmo.api.optimize import (  # noqa: F401
    AccuracyGate,
    Evaluation,
    Optimize,
)
from lmo.api.rollout import (  # noqa: F401
    MetricGate,
    Analysis,
    ExperimentOutcome,
    Experiment,
    Rollout,
)
from lmo.api.routing import (  # noqa: F401
    ParentRef,
    AbTest,
    Sticky,
    Mirror,
    Routing,
)
from lmo.api.serving import (  # noqa: F401
    Toleration,
    QUANTITY,
    Quantity,
    Resources,
    Batching,
    Queue,
    Serving,
    Autoscaling,
)
from lmo.api.protection import (  # noqa: F401
    ApiKeys,
    Auth,
    RateLimit,
    CircuitBreaker,
    Protection,
)
from lmo.api.chat import ChatTemplate  # noqa: F401
from lmo.api.logging import (  # noqa: F401
    PAYLOAD_SINK,
    PayloadLogging,
    Logging,
)
from lmo.api.rules import (  # noqa: F401
    gpu_problems,
    protection_problems,
    traffic_sum_problem,
)
from lmo.api.resource import (  # noqa: F401
    LanguageModelSpec,
    ObjectMeta,
    LanguageModel,
)
from lmo.api.status import (  # noqa: F401
    Condition,
    EvaluationStatus,
    ArtifactStatus,
    VersionStatus,
    RolloutStatus,
    ExperimentArm,
    ExperimentStatus,
    LanguageModelStatus,
)
from lmo.api.loading import (  # noqa: F401
    SpecError,
    explain,
    parse,
    load_file,
)
