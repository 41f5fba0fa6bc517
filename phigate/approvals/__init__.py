"""Just-in-time approvals: requests that go upstream only if a person approves them now.

The gateway's approvals addon creates an approval in an `ApprovalStore` and holds the flow;
approvers decide through the admin app (`make_admin_app`) or the `phigate approvals` CLI; the
addon polls `store.version()` and resumes or refuses the flow. No mitmproxy import.
"""

from phigate.approvals.model import (
    STATES,
    Approval,
    ApprovalError,
    masked_summary,
)
from phigate.approvals.notify import WebhookNotifier, approval_link, slack_message
from phigate.approvals.store import ApprovalStore, SqliteApprovalStore
from phigate.approvals.web import make_admin_app, make_admin_server

__all__ = [
    "STATES",
    "Approval",
    "ApprovalError",
    "ApprovalStore",
    "SqliteApprovalStore",
    "WebhookNotifier",
    "approval_link",
    "make_admin_app",
    "make_admin_server",
    "masked_summary",
    "slack_message",
]
