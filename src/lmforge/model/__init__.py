"""The model: Llama architecture, its config, the tokenizer, and Hugging Face layout I/O."""
