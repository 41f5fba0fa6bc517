"""Operations: metrics, structured logs and health checks (no mitmproxy import)."""
