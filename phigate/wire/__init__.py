"""OpenAI wire formats and the masking engine: text fields of each endpoint, masking operators,
the pseudonym vault, SSE stream masking and content decoding. No mitmproxy import here."""
