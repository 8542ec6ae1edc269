"""The model zoo: Brevitas quantization-aware AMC models and their registry."""
