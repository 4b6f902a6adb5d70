"""Llama-, Qwen2-, Mistral- and Phi3-style decoders (RoPE, grouped-query attention, RMSNorm,
SwiGLU): text-generation through the same export, gate and Triton models as GPT-2.

Everything but loading is `families.gpt2.DecoderFamily`: the KV-cache graph (the cache has
the checkpoint's key/value heads, fewer than its attention heads with GQA; rotary positions
come from `position_ids`, so left-padded batches keep each row's positions), the precisions,
the accuracy gate and the repository. What differs is read from the checkpoint: the model
class (`AutoModelForCausalLM`), the shapes, a BOS token the tokenizer puts first, several
end-of-sequence tokens, the generation config's sampling defaults and the chat template
(all in generation.json, `families.gpt2.generation_spec`).
"""

from __future__ import annotations

from lmo_runtime.families.gpt2 import DecoderFamily


class LlamaStyleFamily(DecoderFamily):
    """AutoModelForCausalLM checkpoints of the Llama lineage."""

    name = "llama-style"
    label = "Llama-style"
    architectures = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM",
                     "Phi3ForCausalLM")
    decoder_model = "decoder"


FAMILY = LlamaStyleFamily()
