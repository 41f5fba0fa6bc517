"""The phigate pipeline as a mitmproxy script.

    mitmdump -s addons/gateway.py --set connection_strategy=lazy --set upstream_cert=false
    mitmweb  -s addons/gateway.py ...

`phigate run` / `phigate web` load this same file with the right options set.
Order matters: mitmproxy calls each hook on the addons in this order, so a request meets
identity → guardrails → masking → approvals → upstream credential, and a response meets
masking before the recorder writes the flow's audit record.
"""

from phigate.addons.admin import Admin
from phigate.addons.approvals import Approvals
from phigate.addons.guardrails import Guardrails
from phigate.addons.identity import Identity
from phigate.addons.masking import Masking
from phigate.addons.observability import Observability, StageClock
from phigate.addons.policies import Policies
from phigate.addons.recorder import Recorder
from phigate.addons.scope import Scope
from phigate.addons.settings import Settings
from phigate.addons.upstream import Upstream


def pipeline() -> list:
    policies = Policies()
    identity = Identity(policies)
    approvals = Approvals()
    clock = StageClock()  # marks between stages time each one (phigate_stage_duration_seconds)
    return [
        Settings(),
        policies,
        Scope(),
        identity, clock.after("identity"),
        Guardrails(), clock.after("guardrails"),
        Masking(), clock.after("masking"),
        approvals, clock.after("approvals"),
        Upstream(),
        clock.before_recording(),
        Recorder(),
        Observability(clock),  # after the recorder: it sees the final status
        Admin(identity, approvals),
    ]


addons = pipeline()
