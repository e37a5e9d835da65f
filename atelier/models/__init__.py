"""Models: the small CLIP (evaluator + text encoder), the latent diffusion backend, the SD-LoRA backend, metrics."""
