"""`phigate audit`: verify, prove, search, show, export, checkpoint and seal the audit log."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import functools
import json
import re
import sys
from pathlib import Path
from typing import Any

import click
import tabulate

from phigate.audit import note
from phigate.audit.bodies import BodyError
from phigate.audit.sinks import AppendOnlyFile, SinkError, Webhook
from phigate.audit import open_store
from phigate.audit.store import SEARCH_COLUMNS, VERIFIER_KEY_FILE, AuditStore
from phigate.audit.verify import ProofError, check_proof, prove, verify
from phigate.home import ENV_VAR, Home, resolve

TABLE_COLUMNS = (
    "seq", "time", "subject", "endpoint", "model", "decision", "status", "entity_types"
)


def location_options(command):
    """--home and --db, shared by every command."""

    @click.option("--home", type=click.Path(file_okay=False), envvar=ENV_VAR,
                  help="phigate home folder (keys, default database)  [env: PHIGATE_HOME]")
    @click.option("--db", "db_path", type=click.Path(dir_okay=False),
                  help="Audit database file (default: HOME/audit.db)")
    @functools.wraps(command)
    def wrapper(*args, home: str | None, db_path: str | None, **kwargs):
        return command(*args, home=Home(resolve(home)), db_path=db_path, **kwargs)

    return wrapper


def sink_options(command):
    @click.option("--export-file", "export_files", multiple=True, type=click.Path(dir_okay=False),
                  envvar="PHIGATE_AUDIT_CHECKPOINT_FILE",
                  help="Also append the checkpoint to this file (opened append-only)")
    @click.option("--webhook", "webhooks", multiple=True, envvar="PHIGATE_AUDIT_WEBHOOK",
                  help="Also POST the checkpoint to this URL (retried)")
    @functools.wraps(command)
    def wrapper(*args, export_files, webhooks, **kwargs):
        sinks = [AppendOnlyFile(p) for p in export_files] + [Webhook(u) for u in webhooks]
        return command(*args, sinks=sinks, **kwargs)

    return wrapper


def _existing_db(home: Home, db_path: str | None) -> Path:
    path = Path(db_path) if db_path else home.audit_db
    if not path.exists():
        raise click.ClickException(f"no audit database at {path}")
    return path


def _open_store(home: Home, db_path: str | None, **options: Any) -> AuditStore:
    path = _existing_db(home, db_path)
    return open_store(Home.open(home.root), path, **options)


def _verifier_key(home: Home, key: str | None) -> str:
    if key:
        return key
    path = home.keys_dir / VERIFIER_KEY_FILE
    if not path.exists():
        raise click.ClickException(f"no verifier key: pass --key or keep it at {path}")
    return path.read_text().strip()


def _resolve_seq(store: AuditStore, record: str) -> int:
    seq = int(record) if record.isdigit() else store.lookup(record)
    if seq is None or store.get(seq) is None:
        raise click.ClickException(f"no record {record}")
    return seq


def _iso(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


def _parse_time(value: str | None) -> float | None:
    """ISO 8601 (naive means UTC) or a relative age such as 30m, 24h, 7d."""
    if value is None:
        return None
    relative = re.fullmatch(r"(\d+)([smhd])", value)
    if relative:
        seconds = int(relative[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[relative[2]]
        return dt.datetime.now(dt.UTC).timestamp() - seconds
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO time or age like 24h: {value!r}") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()


def _dump(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


@click.group(name="audit")
def audit_group() -> None:
    """Inspect and prove the append-only, tamper-evident audit log.

    Every request through the gateway is one record: who (subject, groups, issuer), what
    (endpoint, model), under which policy, what was masked, who approved it, and the outcome.
    Records form an RFC 9162 Merkle tree; signed checkpoints pin its head.

    \b
    Examples:
        phigate audit verify --checkpoints /mnt/worm/checkpoints.txt
        phigate audit search --subject dr.lee --since 7d
        phigate audit show 4f2c9e... --json
        phigate audit prove 1234 --json > proof.json
    """


@audit_group.command(name="verify")
@click.option("--checkpoints", "checkpoints_file", type=click.File("r"),
              help="Checkpoints kept outside the database (a sink file); detects truncation")
@click.option("--key", envvar="PHIGATE_AUDIT_VKEY",
              help="Verifier key (name+keyid+key); default HOME/keys/checkpoint.vkey")
@click.option("--json", "as_json", is_flag=True, help="Output the report as JSON")
@location_options
def verify_command(home: Home, db_path: str | None, checkpoints_file, key: str | None,
                   as_json: bool) -> None:
    """Check every record, column, body hash and signed checkpoint.

    Exits with status 1 and names the first failing record if anything was altered, removed,
    reordered or truncated.

    \b
    Example:
        phigate audit verify --checkpoints checkpoints.txt --json
    """
    external = note.split_notes(checkpoints_file.read()) if checkpoints_file else None
    try:
        report = verify(_existing_db(home, db_path), external, _verifier_key(home, key))
    except note.NoteError as exc:
        raise click.ClickException(f"verifier key: {exc}") from None
    if as_json:
        _dump(report.to_dict())
    else:
        click.echo(f"origin:      {report.origin}")
        click.echo(f"records:     {report.records}")
        click.echo(f"root:        {report.root}")
        click.echo(
            f"checkpoints: {report.checkpoints} stored, {report.external_checkpoints} external"
            f" ({report.external_skipped} of other segments skipped)"
        )
        click.echo(f"unsigned:    {report.unsigned_tail} records since the last checkpoint")
        for failure in sorted(report.failures, key=lambda f: (f.seq is None, f.seq or 0)):
            where = f"seq {failure.seq}" + (f" (id {failure.id})" if failure.id else "")
            click.echo(f"FAIL {where if failure.seq is not None else '-'}: {failure.reason}")
        click.echo("OK" if report.ok else "TAMPERED")
    if not report.ok:
        sys.exit(1)


@audit_group.command(name="prove")
@click.argument("record")
@click.option("--key", envvar="PHIGATE_AUDIT_VKEY", help="Verifier key to self-check the proof")
@click.option("--json", "as_json", is_flag=True, help="Output the proof as JSON")
@location_options
def prove_command(home: Home, db_path: str | None, record: str, key: str | None,
                  as_json: bool) -> None:
    """Print an inclusion proof for RECORD (a seq number or record id).

    The proof carries the record's canonical JSON, the signed checkpoint and the audit path:
    anyone with the log's verifier key can check it without the database.
    """
    path = _existing_db(home, db_path)
    store = open_store(Home.open(home.root), path)
    try:
        seq = _resolve_seq(store, record)
    finally:
        store.close()
    try:
        proof = prove(path, seq)
        head = check_proof(proof, _verifier_key(home, key))
    except ProofError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        _dump(proof)
        return
    click.echo(f"record {seq} is leaf {seq} of {head.size} under root {head.root.hex()}")
    click.echo(f"leaf hash: {proof['leaf_hash']}")
    for i, sibling in enumerate(proof["inclusion_path"]):
        click.echo(f"path[{i}]:   {sibling}")
    click.echo("checkpoint:")
    click.echo(proof["checkpoint"])


@audit_group.command(name="search")
@click.option("--subject", help="Caller subject (the JWT sub)")
@click.option("--group", help="Caller group")
@click.option("--since", help="From this time: ISO 8601 (UTC if no zone) or an age like 24h, 7d")
@click.option("--until", help="Before this time (same forms as --since)")
@click.option("--endpoint", help='Normalised endpoint, e.g. "POST /v1/chat/completions"')
@click.option("--entity", "entity_type", help="Masked entity type, e.g. US_SSN")
@click.option("--decision",
              help="Final decision: allow, refuse, hold, approve, deny, timeout, error")
@click.option("--status", type=int, help="HTTP status returned to the caller")
@click.option("--limit", type=int, default=100, show_default=True, help="Most recent N (0: all)")
@click.option("--json", "as_json", is_flag=True, help="Output a JSON array")
@location_options
def search_command(home: Home, db_path: str | None, since: str | None, until: str | None,
                   limit: int, as_json: bool, **filters: Any) -> None:
    """Find records by who, when, what and outcome (newest first).

    \b
    Example:
        phigate audit search --group oncology --entity US_SSN --since 2026-11-01
    """
    store = _open_store(home, db_path)
    try:
        rows = store.search(since=_parse_time(since), until=_parse_time(until),
                            limit=limit or None, **filters)
    finally:
        store.close()
    if as_json:
        _dump(rows)
        return
    table = [
        [_iso(r["time"]) if c == "time" else ",".join(r[c]) if c == "entity_types" else r[c]
         for c in TABLE_COLUMNS]
        for r in rows
    ]
    click.echo(tabulate.tabulate(table, headers=TABLE_COLUMNS, tablefmt="simple"))


@audit_group.command(name="show")
@click.argument("record")
@click.option("--json", "as_json", is_flag=True, help="Output JSON")
@location_options
def show_command(home: Home, db_path: str | None, record: str, as_json: bool) -> None:
    """Show one record (seq or id) with its bodies, decrypted when the body key is present."""
    store = _open_store(home, db_path)
    try:
        seq = _resolve_seq(store, record)
        entry = store.get(seq)
        try:
            bodies = {k: _body_text(v) for k, v in store.read_bodies(seq).items()}
        except BodyError as exc:
            bodies = {"unavailable": str(exc)}
    finally:
        store.close()
    entry["decrypted_bodies"] = bodies
    if as_json:
        _dump(entry)
        return
    click.echo(f"seq {entry['seq']}  id {entry['id']}  logged {_iso(entry['logged'])}")
    click.echo(json.dumps(entry["record"], indent=2, ensure_ascii=False))
    for kind, text in bodies.items():
        click.echo(f"--- body: {kind}")
        click.echo(text)


def _body_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(data).decode()


@audit_group.command(name="export")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl",
              show_default=True, help="jsonl: one record per line; csv: the search columns")
@click.option("--out", type=click.File("w"), default="-", help="Output file (default stdout)")
@location_options
def export_command(home: Home, db_path: str | None, fmt: str, out) -> None:
    """Export every record (never bodies) in seq order, for a SIEM or a review.

    \b
    Example:
        phigate audit export --format csv --out audit.csv
    """
    store = _open_store(home, db_path)
    columns = ("seq", "id", *SEARCH_COLUMNS)
    writer = csv.DictWriter(out, fieldnames=columns) if fmt == "csv" else None
    if writer:
        writer.writeheader()
    show_progress = out is not sys.stdout and out.name != "<stdout>"
    try:
        rows = store.iter_summaries(with_entry=fmt == "jsonl")
        with click.progressbar(rows, length=store.count(), label="exporting", file=sys.stderr,
                               hidden=not show_progress) as bar:
            for row in bar:
                if writer:
                    writer.writerow({**row, "groups": ",".join(row["groups"]),
                                     "entity_types": ",".join(row["entity_types"])})
                else:
                    out.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    finally:
        store.close()


@audit_group.command(name="checkpoint")
@sink_options
@location_options
def checkpoint_command(home: Home, db_path: str | None, sinks) -> None:
    """Sign the current tree head, store it and export it to the sinks; print the note."""
    store = _open_store(home, db_path, sinks=sinks)
    try:
        click.echo(store.checkpoint(), nl=False)
    except SinkError as exc:
        raise click.ClickException(f"checkpoint stored but not exported: {exc}") from None
    finally:
        store.close()


@audit_group.command(name="seal")
@sink_options
@location_options
def seal_command(home: Home, db_path: str | None, sinks) -> None:
    """Close the segment with a final checkpoint and start a new database file.

    The sealed file moves to audit-segments/ next to the database and refuses further writes.
    Keep it until the printed date (retention: 6 years), then delete the whole file.
    Run it with the gateway stopped.
    """
    store = _open_store(home, db_path, sinks=sinks)
    try:
        sealed, final = store.seal()
    except SinkError as exc:
        message = f"final checkpoint stored but not exported, segment not sealed: {exc}"
        raise click.ClickException(message) from None
    finally:
        store.close()
    click.echo(f"sealed: {sealed}")
    click.echo(final, nl=False)
