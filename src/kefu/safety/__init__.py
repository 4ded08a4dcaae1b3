"""Safety and privacy: PII redaction, input and output guards, encryption at rest."""
