"""PyTorch definition of Alpamayo-R1, one file per model part (transformers-modeling style)."""
