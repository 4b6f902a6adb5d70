"""The per-version front component: OpenAI-compatible, text and KServe v2 in front of
Triton, the same code in the Triton pod (`python3 -m lmo_runtime.front`) and under `lmo up`
(`lmo_runtime.front.app.Front`). Importing this package imports nothing else: the converter
reads `lmo_runtime.front.wire` without aiohttp."""
