"""`lmo up`: one LanguageModel on this machine, with real Triton servers and a front door.

* `routing`   pure traffic rules (weights, the abTest header, mirroring) shared by the
              front door and its tests.
* `frontdoor` the aiohttp server that speaks KServe v2 and applies those rules.
* `versions`  turning the spec's versions into conversion requests and local artifacts.
* `state`     the state file `lmo status --local` and the traffic commands find.
* `up`        the command itself.
* `apidoc`    the API reference (`docs/api.md`) generated from `lmo.api`.
"""
