"""Native chat endpoints: POST /v1/chat, POST /v1/chat/stream, session history."""
