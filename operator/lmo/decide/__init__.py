"""The decision core: what to route and what to do next, for the operator and `lmo up` alike.

Floor plan, bottom to top (`.importlinter` keeps it one way; a circle fails `lint-imports`):

* `vocabulary`: the shared words: `Decision`, `VersionObservation`, `AnalysisResult`,
  `VersionMetrics`, times and durations, the analysis record kept in status.
* `prometheus`: the Prometheus HTTP client and the PromQL helpers (selector, window, fill).
* `statistics`: the experiment's always-valid sequential test (no API types).
* `triton`: Triton's counters and the one rule that turns them into a version's numbers.
* `judge`: the gates of `spec.rollout.analysis` applied to measured numbers (pure).
* `outcomes`: an experiment's outcome counts (lmo's feedback counters or the spec's queries).
* `measure`: one path for both runtimes: a source (Prometheus on the cluster, Triton scrapes
  under `lmo up`), the replay targets, the custom gates and the golden replay's drift.
* `canary`: the Canary / BlueGreen state machine.
* `experiment`: the A/B experiment strategy.

`lmo.rollout.decide` dispatches to the strategy the spec names.
"""
