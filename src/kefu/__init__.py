"""kefu (客服): self-hosted, LLM-based customer service for e-commerce, Chinese and English."""

__version__ = "0.1.0"
