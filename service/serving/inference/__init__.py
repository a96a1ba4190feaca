"""Inference: preprocessing shared with training, the model runtime and the batcher."""
