"""OpenAI-compatible facade: POST /v1/chat/completions, so any OpenAI client or gateway can talk to kefu."""
