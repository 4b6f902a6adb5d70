"""`lmo render`: print every manifest the operator would create for a file, offline.

The file is parsed with `lmo.api.load_file` (the same validation and messages as the
cluster), every version is planned as "converted and serving" (or, with `--pending`, as
"not converted yet", which shows the conversion Jobs instead of the Triton pods), and
`lmo.builders.build_children` turns the plans into manifests: the very code the operator
applies, so what you read is what you get.

ownerReferences need the LanguageModel's uid, which only the API server knows; without
`--owner-uid` they are left out, because applying a child whose owner uid does not exist
would let the garbage collector delete it at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from lmo.api import LanguageModel, load_file
from lmo.crd import crd
from lmo.builders import (
    Owner,
    VersionPlan,
    artifact_store,
    artifact_uri,
    build_children,
    conversion_request,
)
from lmo.settings import OperatorSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--file", required=True, help="YAML file with LanguageModel(s)")
    parser.add_argument(
        "--settings",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="operator settings (as the Helm chart sets them), e.g. "
        "artifact_store=s3://bucket/lmo artifact_store_secret=store-creds",
    )
    parser.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    parser.add_argument(
        "-n", "--namespace", default=None, help="namespace when the file names none (default)"
    )
    parser.add_argument(
        "--pending",
        action="store_true",
        help="plan every version as not converted yet: conversion Jobs, no Triton pods",
    )
    parser.add_argument(
        "--owner-uid", default=None, help="uid of the LanguageModel, to add ownerReferences"
    )
    parser.add_argument(
        "--include-crd", action="store_true", help="print the LanguageModel CRD first"
    )


def plans_for(
    lm: LanguageModel, settings: OperatorSettings, pending: bool = False
) -> list[VersionPlan]:
    """A plan per version: serving its desired artifact, or (pending) converting it."""
    store, _ = artifact_store(lm.spec, settings)
    traffic = lm.spec.effective_traffic()
    plans = []
    for version in lm.spec.versions:
        request = conversion_request(lm.spec, version)
        uri = artifact_uri(store, request.key())
        plans.append(
            VersionPlan(
                name=version.name,
                request=request,
                artifact_uri=uri,
                convert=pending,
                serve_uri=None if pending else uri,
                traffic=0 if pending else traffic[version.name],
            )
        )
    return plans


def render_objects(
    models: list[LanguageModel],
    settings: OperatorSettings,
    *,
    namespace: str | None = None,
    pending: bool = False,
    owner_uid: str | None = None,
) -> list[dict[str, Any]]:
    """Every child of every model, in order."""
    out: list[dict[str, Any]] = []
    for lm in models:
        ns = lm.metadata.namespace or namespace or "default"
        owner = Owner(name=lm.metadata.name, namespace=ns, uid=owner_uid or "")
        children = build_children(lm, owner, settings, plans_for(lm, settings, pending))
        if owner_uid is None:
            for child in children:
                child["metadata"].pop("ownerReferences", None)
        out.extend(children)
    return out


class _Dumper(yaml.SafeDumper):
    """Plain YAML: never anchors/aliases, even when two fields hold equal objects."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(objects: list[dict[str, Any]]) -> str:
    """A multi-document YAML stream, keys in builder order."""
    return yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def run(args: argparse.Namespace) -> int:
    settings = OperatorSettings.from_env().with_overrides(args.settings)
    models = load_file(args.file)
    objects = render_objects(
        models,
        settings,
        namespace=args.namespace,
        pending=args.pending,
        owner_uid=args.owner_uid,
    )
    if args.include_crd:
        objects = [crd(), *objects]
    if args.output == "json":
        text = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2)
        sys.stdout.write(text + "\n")
    else:
        sys.stdout.write(dump_yaml(objects))
    return 0
