"""Fine-tuning a pretrained model for a task: classification, instruction tuning, LoRA."""
