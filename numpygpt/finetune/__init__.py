"""Fine-tuning a pretrained GPT for a task, by composition on the core model.

    model.py   FinetuneGPT: the GPT with what trains (frozen weights), LoRA adapters and a
               classification head, through the GPT's seam (its linear maps) and its pieces
    tasks.py   the tasks' data: classification and instruction examples, prompt templates,
               batches (docstrings.py: NumPy's docstrings parsed; numbers.py: English number
               words and Chinese numerals)
    answers.py an instruction-tuned model's greedy answers, many prompts at once, scored by
               scores.py
    run.py     `finetune(FinetuneConfig(...))`: a run, on the training loop every command shares

    from numpygpt.finetune import FinetuneConfig, finetune
"""

from .answers import evaluate_answers, respond, respond_batch
from .model import FinetuneGPT
from .run import FinetuneConfig, confusion_matrix, finetune, load_finetuned, predict

__all__ = ["FinetuneGPT", "FinetuneConfig", "finetune", "load_finetuned", "predict", "respond",
           "respond_batch", "evaluate_answers", "confusion_matrix"]
