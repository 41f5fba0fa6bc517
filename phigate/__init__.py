"""phigate: a HIPAA compliance gateway for OpenAI traffic (plain modules, no mitmproxy)."""

__version__ = "0.1.0"
