"""binbert software: quantizers, quantized BERT, distillation, splitting and export (PyTorch)."""
