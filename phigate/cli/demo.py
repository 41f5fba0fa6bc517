"""`phigate demo`: the whole gateway working in one command, without an OpenAI account.

It starts the local OpenAI stand-in (over TLS), the gateway in front of it, and an OpenAI Agents
SDK agent with an EHR lookup tool that returns a FHIR Patient record. The agent runs twice:
as a `clinicians` caller (PHI masked both ways) and as a `clinicians-reid` caller (pseudonyms
upstream, real names back). It then shows what OpenAI would have received, and verifies the
audit log.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import click

# A synthetic patient; every value is made up.
PATIENT = {
    "resourceType": "Patient",
    "id": "pat-4452817",
    "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.1", "value": "MRN-4452817"}],
    "name": [{"family": "Whitfield", "given": ["Margaret", "Ann"]}],
    "gender": "female",
    "birthDate": "1948-03-17",
    "telecom": [{"system": "phone", "value": "(617) 555-0142"}],
    "address": [{"line": ["42 Elm Street"], "city": "Springfield", "state": "MA",
                 "postalCode": "01105"}],
}
QUESTION = "Summarise the chart of Margaret Whitfield before her visit tomorrow."


async def run_agent(base_url: str, token: str) -> str:
    from agents import Agent, Runner, function_tool
    from agents.models.openai_responses import OpenAIResponsesModel
    from openai import AsyncOpenAI

    @function_tool
    def get_patient_record(patient_name: str) -> str:
        """Look a patient up in the EHR; returns a FHIR Patient resource."""
        return json.dumps(PATIENT)

    async with AsyncOpenAI(base_url=base_url, api_key=token, max_retries=0) as client:
        agent = Agent(name="chart assistant", tools=[get_patient_record],
                      instructions="Look the patient up, then summarise.",
                      model=OpenAIResponsesModel("gpt-4o-mini", client))
        return (await Runner.run(agent, QUESTION)).final_output


@click.command("demo")
@click.option("--home", type=click.Path(file_okay=False),
              help="State folder for the demo. [default: a temporary folder]")
def demo_command(home: str | None) -> None:
    """Run gateway + local OpenAI stand-in + an Agents SDK agent, and show what happened."""
    import agents

    from phigate.addons.embedded import RunningGateway
    from phigate.audit.verify import verify
    from phigate.identity import DevIssuer
    from phigate.localupstream import LocalUpstream, make_test_tls

    agents.set_tracing_disabled(True)  # the SDK would export traces to api.openai.com
    with tempfile.TemporaryDirectory(prefix="phigate-demo-") as scratch:
        root = Path(home or scratch)
        tls = make_test_tls(root / "demo-upstream-tls")
        with LocalUpstream(tls=tls) as upstream, RunningGateway(
                root / "home", upstream=upstream.url, upstream_ca=str(tls.ca_cert),
                options={"admin_listen": "", "log_json": False}) as gateway:
            issuer = DevIssuer(gateway.home.issuer_dir)
            click.secho(f"gateway: reverse listener {gateway.reverse_url}, forward proxy "
                        f"{gateway.forward_url}; OpenAI stand-in {upstream.url}", dim=True)
            click.echo(f"\nThe clinician asks: {QUESTION}\n")
            for group, explain in (
                    ("clinicians", "PHI masked in both directions"),
                    ("clinicians-reid", "pseudonyms upstream, real values back to the caller")):
                upstream.clear()
                token = issuer.mint("dr-demo", [group], ttl_seconds=300)
                answer = asyncio.run(run_agent(gateway.reverse_url + "/v1", token))
                click.secho(f"== policy {group}: {explain}", bold=True)
                click.echo("What OpenAI received (last request, tool output excerpt):")
                last = upstream.received[-1].json
                click.echo("  " + _tool_output(last)[:300])
                click.echo("What the agent answered:")
                click.echo("  " + answer[:400] + "\n")
            db = gateway.home.audit_db
        report = verify(db, None, (gateway.home.keys_dir / "checkpoint.vkey").read_text().strip())
        click.secho(f"Audit log {db}: {'verified' if report.ok else 'FAILED'}, "
                    f"{_count(db)} records. Try: phigate audit search --home {gateway.home.root}"
                    if home else
                    f"Audit log verified: {report.ok}, {_count(db)} records "
                    "(temporary; pass --home DIR to keep it).", bold=True)


def _tool_output(body: dict) -> str:
    for item in reversed(body.get("input") or []):
        if isinstance(item, dict) and item.get("type") == "function_call_output":
            return str(item.get("output"))
    return json.dumps(body)[:300]


def _count(db: Path) -> int:
    import sqlite3

    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT count(*) FROM records").fetchone()[0]
