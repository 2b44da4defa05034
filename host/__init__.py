"""Host side: model import, quantization, the golden model, ROM export, link client, CLI."""
