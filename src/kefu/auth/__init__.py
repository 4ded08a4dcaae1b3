"""Access control: operator accounts and roles, channel API keys, customer tokens, rate limits."""
