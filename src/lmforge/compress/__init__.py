"""Compression and adaptation beyond training: pruning (one-shot and the lottery ticket) and what each
compressed model cost in quality against its reference (costs). LoRA and distillation are things the trainer
does (model/lora.py, train/loss.py); this package only orchestrates."""
