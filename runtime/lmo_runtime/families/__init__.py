"""Model families: the interface every family implements, and the registry that picks one.

A *family* knows how to turn one kind of Hugging Face checkpoint (BERT encoders, GPT-2
decoders) into ONNX and a Triton model repository. The pipeline in `lmo_runtime.convert`
only talks to this interface:

    family = family_for(config, task)              # ConversionError if unsupported
    loaded = family.load(ckpt_dir, task)           # torch model + tokenizer, eval mode
    exported = family.export(loaded, work_dir)     # fp32 ONNX, onnx.checker clean
    onnx_path = family.optimize(exported, precision, loaded, work_dir, calibration)
    score = family.score(loaded, onnx_path, heldout, threshold)
    golden = family.golden(loaded, heldout_texts(8))
    entry = family.write_repository(loaded, onnx_path, repo_dir, request)

Families live in their own modules (`families/encoder.py` for every encoder model type,
`families/gpt2.py`), each exposing a module-level `FAMILY` object; they are imported only
when a checkpoint of their `model_type` is converted, so the registry stays cheap to import.

The held-out and calibration texts are built in (no download) and disjoint, so that the
accuracy gate never scores on the inputs int8-static was calibrated with; the user's own
data (`optimize.evaluation`) replaces them, split the same way (`lmo_runtime.evaluation`).
"""

from __future__ import annotations

import importlib
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from lmo_runtime.errors import ConversionError

if TYPE_CHECKING:
    from lmo_runtime.manifest import ConversionRequest, Golden, Score

# config.json `model_type` -> module defining `FAMILY`: one row per model type, nothing else
# decides which family converts a checkpoint
FAMILY_MODULES: dict[str, str] = {
    "bert": "lmo_runtime.families.encoder",
    "deberta-v2": "lmo_runtime.families.encoder",
    "distilbert": "lmo_runtime.families.encoder",
    "electra": "lmo_runtime.families.encoder",
    "modernbert": "lmo_runtime.families.encoder",
    "roberta": "lmo_runtime.families.encoder",
    "xlm-roberta": "lmo_runtime.families.encoder",
    "gpt2": "lmo_runtime.families.gpt2",
    "llama": "lmo_runtime.families.decoders",
    "qwen2": "lmo_runtime.families.decoders",
    "mistral": "lmo_runtime.families.decoders",
    "phi3": "lmo_runtime.families.decoders",
}


@dataclass
class Loaded:
    """A checkpoint loaded for conversion.

    `model` is a torch module in eval mode whose forward returns exactly what the ONNX graph
    returns (families wrap the Hugging Face model to add pooling and so on); `tokenizer` is a
    fast (Rust) tokenizer; `config` is config.json as a dict.
    """

    task: str
    architecture: str
    config: dict[str, Any]
    ckpt_dir: Path
    model: Any
    tokenizer: Any
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Exported:
    """The fp32 ONNX export and how far it is from PyTorch on sample inputs."""

    path: Path
    max_abs_diff: float
    opset: int
    details: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Family(Protocol):
    """What a model family provides to the conversion pipeline."""

    name: str  # e.g. "bert"
    tasks: tuple[str, ...]  # tasks this family can serve
    architectures: tuple[str, ...]  # config.json `architectures` values it understands
    precisions: tuple[str, ...]  # what optimize() produces; others are refused before export

    def load(self, ckpt_dir: Path, task: str) -> Loaded:
        """Load weights (safetensors, or torch.load weights_only) and tokenizer; raise
        ConversionError for a missing tokenizer, corrupt weights or a task the weights can't do."""
        ...

    def export(self, loaded: Loaded, work_dir: Path) -> Exported:
        """Export fp32 ONNX with dynamic batch/sequence axes, check it, measure max abs diff."""
        ...

    def optimize(
        self,
        exported: Exported,
        precision: str,
        loaded: Loaded,
        work_dir: Path,
        calibration: list[str] | int,
    ) -> Path:
        """Produce the ONNX model at `precision` (fp32 | fp16 | int8 | int8-static);
        int8-static calibrates on `calibration` (texts, or that many built-in texts)."""
        ...

    def score(self, loaded: Loaded, onnx_path: Path, texts: list[str], threshold: float) -> Score:
        """Fidelity of `onnx_path` against the PyTorch model on `texts` (the accuracy gate)."""
        ...

    def golden(self, loaded: Loaded, texts: list[str]) -> Golden:
        """The original model's answers to `texts`, recorded for rollout drift checks."""
        ...

    def write_repository(
        self, loaded: Loaded, onnx_path: Path, repo_dir: Path, request: ConversionRequest
    ) -> str:
        """Write the Triton model repository into `repo_dir`; return the entry model name."""
        ...


def _supported() -> str:
    return ", ".join(sorted(FAMILY_MODULES))


def family_for(config: dict[str, Any], task: str) -> Family:
    """The family that converts a checkpoint with this config.json for `task`.

    Raises ConversionError naming the architecture or task and what is supported.
    """
    model_type = config.get("model_type")
    archs = ", ".join(config.get("architectures") or []) or "unknown"
    if not model_type:
        raise ConversionError(
            "checkpoint config.json has no model_type: it is not a Hugging Face "
            f"transformers config (architectures: {archs}); save the model with "
            "save_pretrained() so config.json names its model_type"
        )
    module_name = FAMILY_MODULES.get(model_type)
    if module_name is None:
        raise ConversionError(
            f"checkpoint architecture {archs} (model_type {model_type!r}) is not supported; "
            f"supported model types: {_supported()}. Use a checkpoint of one of them (its "
            "config.json model_type)"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name:
            raise ConversionError(
                f"checkpoint architecture {archs} (model_type {model_type!r}) is not "
                f"supported by this converter build (missing {module_name})"
            ) from None
        raise
    family: Family = module.FAMILY
    if task not in family.tasks:
        raise ConversionError(
            f"task {task!r} is not possible with a {model_type} checkpoint "
            f"({archs}); a {model_type} model can serve: {', '.join(family.tasks)}. "
            "Fix spec.task (or --task), or point the checkpoint at a model built for that task"
        )
    return family


def load_tokenizer(ckpt_dir: Path) -> Any:
    """The checkpoint's fast (Rust `tokenizers`) tokenizer, for every family's load().

    Raises ConversionError when it cannot be loaded or has no fast version (serving
    tokenizes with `tokenizers` from tokenizer.json).
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(ckpt_dir), use_fast=True)
    except Exception as err:
        raise ConversionError(
            f"checkpoint tokenizer cannot be loaded ({type(err).__name__}: {str(err)[:200]}); "
            "save it with tokenizer.save_pretrained(dir) into the checkpoint directory"
        ) from None
    if not getattr(tokenizer, "is_fast", False):
        raise ConversionError(
            "checkpoint tokenizer has no fast (tokenizers) version; add tokenizer.json "
            "(AutoTokenizer.from_pretrained(dir).save_pretrained(dir) writes it)"
        )
    return tokenizer


# --------------------------------------------------------------------------- sample texts

# Built-in English sentences: varied topics, lengths and punctuation. The first part
# calibrates int8-static, the last part is held out for the accuracy gate and golden inputs.
SAMPLE_TEXTS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "A cup of coffee in the morning helps me start the day.",
    "The train to the city leaves every twenty minutes on weekdays.",
    "She planted tomatoes, basil and peppers in the small garden behind the house.",
    "Our team shipped the new release after fixing the last bug on Friday night.",
    "Rain is expected tomorrow, so bring an umbrella if you go out.",
    "The museum opens at nine and closes at five, except on Mondays.",
    "He learned to play the piano when he was seven years old.",
    "Prices for fresh vegetables rose sharply after the long drought.",
    "The children built a sandcastle and watched the tide wash it away.",
    "Please remember to lock the door when you leave the office.",
    "The library has thousands of books about history, science and art.",
    "After the storm, the river flooded the fields near the village.",
    "Doctors recommend drinking enough water and sleeping at least seven hours.",
    "The stock market fell on news that interest rates would stay high.",
    "My grandmother tells wonderful stories about her childhood on the farm.",
    "The server crashed because the disk was full of old log files.",
    "A good teacher makes difficult ideas feel simple and clear.",
    "They hiked up the mountain and reached the summit just before sunset.",
    "The restaurant on the corner serves the best noodle soup in town.",
    "Electric cars are becoming cheaper and can drive farther on one charge.",
    "The committee will meet next week to discuss the new budget.",
    "Birds sing loudly in the trees outside my window every spring morning.",
    "The recipe calls for two eggs, a cup of flour and a pinch of salt.",
    "Scientists discovered a new species of frog in the rainforest.",
    "I forgot my password and had to reset it twice this week.",
    "The concert was cancelled because the lead singer lost her voice.",
    "Reading before bed is a relaxing habit for many people.",
    "The bridge was closed for repairs, so we took the long way home.",
    "Our neighbours adopted a small dog from the animal shelter.",
    "The company announced record profits for the third quarter.",
    "Learning a new language takes patience and daily practice.",
    "The painter mixed blue and yellow to make a bright shade of green.",
    "A strong wind blew the leaves across the empty parking lot.",
    "The students presented their science project to the whole school.",
    "Fresh bread from the bakery smells wonderful in the early morning.",
    "The pilot announced that we would land twenty minutes early.",
    "He fixed the leaking tap with a new washer and a wrench.",
    "The football match ended in a draw after extra time.",
    "Solar panels on the roof provide most of the house's electricity.",
    "The hospital opened a new wing for children last year.",
    "She wrote a letter to her old friend who lives abroad.",
    "Traffic was heavy on the highway because of an accident.",
    "The cat slept all afternoon in a warm patch of sunlight.",
    "Our flight was delayed by fog, so we waited at the gate for hours.",
    "The new phone has a better camera and a longer battery life.",
    "Volunteers cleaned the beach and collected bags full of plastic.",
    "The professor explained how vaccines train the immune system.",
    "I would like to book a table for four people at seven o'clock.",
    "The old castle on the hill attracts thousands of tourists each summer.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "The detective found a clue hidden under the carpet.",
    "Farmers harvest wheat at the end of the summer.",
    "The software update improved performance and fixed several security issues.",
    "We watched a documentary about whales migrating across the ocean.",
    "The bakery sold out of croissants before noon.",
    "My brother is studying engineering at the university.",
    "The city plans to plant a thousand new trees along its streets.",
    "The kettle whistled loudly when the water was ready.",
    "Heavy snow closed the schools for three days in a row.",
    "The orchestra played a symphony by Beethoven to a full hall.",
    "This laptop is too slow to run modern video games.",
    "The mayor promised to build more affordable housing.",
    "A gentle breeze carried the smell of the sea into the town.",
    "The customer asked for a refund because the package arrived damaged.",
    "Astronomers observed a distant galaxy with a powerful telescope.",
    "The baby laughed when the puppy licked her hand.",
    "Cooking dinner together is a nice way to spend the evening.",
    "The law requires drivers to wear seat belts at all times.",
    "The garden was full of roses, tulips and sunflowers.",
    "The meeting ran late, so I missed the last bus home.",
    "Researchers trained a neural network to translate between languages.",
    "The waiter brought us water and a basket of warm bread.",
    "The chess champion won the final game in only thirty moves.",
    "Most of the island is covered by thick tropical forest.",
    "He apologized for arriving late to the interview.",
    "The bank will be closed on Monday for the national holiday.",
    "The movie was so boring that half the audience fell asleep.",
    "I really enjoyed this book and would recommend it to anyone.",
    "The service at this hotel was terrible and the room was dirty.",
    "What a wonderful performance, the actors were brilliant!",
    "The food was cold and the waiter was rude to us.",
    "Paris is the capital and largest city of France.",
    "The doctor asked the patient to describe his symptoms.",
    "Mountains in the north are covered with snow most of the year.",
    "She finished the marathon in just under four hours.",
    "The engineers tested the bridge with heavy trucks before it opened.",
    "A rainbow appeared over the lake after the afternoon shower.",
    "The shop around the corner repairs bicycles and sells spare parts.",
    "Our teacher gave us a lot of homework over the holidays.",
    "The ship sailed slowly into the harbour at dawn.",
    "Good documentation makes a software project much easier to use.",
    "The price of gold reached a new high this month.",
    "The kids played football in the park until it got dark.",
    "The new policy will take effect at the beginning of next year.",
    "He poured milk into his tea and stirred it slowly.",
)
HELDOUT_COUNT = 32


def heldout_texts(n: int = HELDOUT_COUNT) -> list[str]:
    """Texts the accuracy gate scores on (never used for calibration)."""
    held = list(SAMPLE_TEXTS[-HELDOUT_COUNT:])
    return held[: max(1, min(n, len(held)))]


def calibration_texts(n: int) -> list[str]:
    """`n` calibration texts, disjoint from the held-out ones.

    Beyond the built-in sentences, pairs of sentences are joined so that calibration also
    sees longer sequences; the result is deterministic for a given `n`.
    """
    base = list(SAMPLE_TEXTS[:-HELDOUT_COUNT])
    out = list(base)
    i = 0
    while len(out) < n:
        a, b = base[i % len(base)], base[(i * 7 + 3) % len(base)]
        out.append(f"{a} {b}")
        i += 1
    return out[:n]


@contextmanager
def quiet_root_logger():
    """onnxruntime.quantization logs advice ("consider pre-processing") on the root logger:
    keep it to errors while quantizing."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
