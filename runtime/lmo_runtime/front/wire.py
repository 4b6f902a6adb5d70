"""Names on the wire shared by the front, the front door and the operator (stdlib only)."""

VERSION_HEADER = "x-lmo-version"  # which version answered (and the default A/B header)
REQUEST_ID_HEADER = "x-lmo-request-id"  # the id a feedback report names
# Name the client calls, the same in every version so that routing between versions is
# transparent: /v2/models/<ENTRY_MODEL[task]>/infer
ENTRY_MODEL = {
    "feature-extraction": "feature_extraction",
    "fill-mask": "fill_mask",
    "text-classification": "text_classification",
    "text-generation": "text_generation",
}
