"""Sign-in for operators and session tokens for the web widget."""
