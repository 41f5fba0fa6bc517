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
from phigate.addons.heap import Heap
from phigate.addons.identity import Identity
from phigate.addons.masking import Masking
from phigate.addons.observability import Observability, StageClock
from phigate.addons.policies import Policies
from phigate.addons.recorder import Recorder
from phigate.addons.scope import Scope
from phigate.addons.settings import Settings
from phigate.addons.upstream import Upstream


class Gateway:
    """The pipeline as ONE mitmproxy addon whose children are the stages, in order.

    mitmproxy hands every event to every addon of its chain, each in a context manager, a
    coroutine and two generators, and repeats lifecycle events as `update` events: as 17
    separate addons the pipeline cost about 0.2 ms of CPU per request in dispatch alone
    (scripts/bench.py). As children they share one chain entry and mitmproxy still calls them
    in order. A child that raised would keep the children after it from seeing that event, so
    every flow hook of every stage is wrapped by `failclosed.guard` or `failclosed.contained`
    (tests/test_failclosed.py checks each one).
    """

    name = "phigate"

    def __init__(self, stages: list) -> None:
        self.addons = list(stages)


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
        Heap(),  # last: its `running` comes after every other stage has loaded what it needs
    ]


addons = [Gateway(pipeline())]
