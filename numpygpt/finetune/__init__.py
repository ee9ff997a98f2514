"""Fine-tuning a pretrained GPT for a task, by composition on the core model.

    model.py   FinetuneGPT: the GPT with what trains (frozen weights), LoRA adapters and a
               classification head, through the GPT's seam (its linear maps) and its pieces
    tasks.py   the tasks' data: classification and instruction examples, prompt templates,
               batches, scores
    run.py     `finetune(FinetuneConfig(...))`: a run, on the training loop every command shares

    from numpygpt.finetune import FinetuneConfig, finetune
"""

from .model import FinetuneGPT
from .run import (
    FinetuneConfig,
    confusion_matrix,
    evaluate_answers,
    finetune,
    load_finetuned,
    predict,
    respond,
)

__all__ = ["FinetuneGPT", "FinetuneConfig", "finetune", "load_finetuned", "predict", "respond",
           "evaluate_answers", "confusion_matrix"]
