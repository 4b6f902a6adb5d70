"""CLI commands that talk to a running LanguageModel: on a cluster or in a local `lmo up`.

* `status`   versions, phases, traffic, replicas, rollout and last analysis (rich table).
* `infer`    send text, print the answer (and which version gave it).
* `generate` stream generated tokens as they come.
* `traffic`  `promote`, `rollback`, `set-traffic`.

`target` decides where a command goes: `--url`, `--local` or a running `lmo up` in the work
dir go to the local front door; otherwise the cluster of the current kubeconfig context.
"""
