"""Loading policy files: the shipped ones load clean, every problem names file:line: field."""

from __future__ import annotations

import hashlib
import re
import textwrap
from pathlib import Path

import pytest

from phigate.policy import PolicyError, load_policies, parse_files

REPO = Path(__file__).resolve().parents[1]
POLICIES = REPO / "policies"

MINIMAL = """\
schema: phigate.policy/v1
policies:
  - name: {name}
    groups: [{group}]
    priority: {priority}
    endpoints:
      allow: [POST /v1/chat/completions]
    models:
      allow: ["gpt-4o*"]
    masking:
      request: {{default: placeholder}}
      response: {{default: placeholder}}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(directory: Path) -> list[tuple[str, int, str, str]]:
    with pytest.raises(PolicyError) as caught:
        load_policies(directory)
    return [(Path(p.file).name, p.line, p.field, p.message) for p in caught.value.problems]


def test_shipped_default_loads_clean():
    policies = load_policies(POLICIES)
    names = [policy.name for policy in policies.policies]
    assert names == ["clinicians-reid", "clinicians", "phi-approvers"]
    version = hashlib.sha256((POLICIES / "default.yaml").read_bytes()).hexdigest()[:16]
    for policy in policies.policies:
        assert policy.version == version
        assert Path(policy.source) == POLICIES / "default.yaml"
    reid = policies.get("clinicians-reid")
    assert reid.masking.reidentify is True
    assert reid.masking.request.default == "pseudonym"
    clinicians = policies.get("clinicians")
    assert clinicians.masking.reidentify is False
    assert {clinicians.masking.request.default, clinicians.masking.response.default} == {"placeholder"}
    assert clinicians.approver_groups == ("phi-approvers",)
    assert [rule.name for rule in clinicians.approvals.rules] == ["large-output"]
    assert clinicians.approvals.rules[0].timeout == 120


def test_examples_load_clean_but_are_not_loaded_by_default():
    examples = load_policies(POLICIES / "examples")
    assert {policy.name for policy in examples.policies} == {"analytics", "discharge-letters"}
    assert not {"analytics", "discharge-letters"} & {p.name for p in load_policies(POLICIES).policies}


def test_selection_by_priority_and_no_match(tmp_path):
    write(tmp_path, "a.yaml", MINIMAL.format(name="low", group="staff", priority=1))
    write(tmp_path, "b.yaml", MINIMAL.format(name="high", group="oncology", priority=9))
    policies = load_policies(tmp_path)
    assert policies.select(["staff", "oncology"]).name == "high"
    assert policies.select(["staff"]).name == "low"
    assert policies.select(["visitors"]) is None
    assert policies.select([]) is None


def test_defaults_are_inherited_and_overridden(tmp_path):
    write(tmp_path, "p.yaml", """\
        schema: phigate.policy/v1
        defaults:
          endpoints: {allow: [POST /v1/responses]}
          models: {allow: ["*"]}
          masking: {request: {default: redact}, response: {default: redact}}
        policies:
          - {name: a, groups: [a], priority: 1}
          - name: b
            groups: [b]
            priority: 2
            masking: {request: {default: hash}, response: {default: keep}}
        """)
    policies = load_policies(tmp_path)
    assert policies.get("a").masking.request.default == "redact"
    assert policies.get("b").masking.request.default == "hash"
    assert policies.get("b").endpoints.allow == ("POST /v1/responses",)


def test_yaml_merge_keys_work(tmp_path):
    write(tmp_path, "p.yaml", """\
        schema: phigate.policy/v1
        policies:
          - &base
            name: a
            groups: [a]
            priority: 1
            endpoints: {allow: [POST /v1/responses]}
            models: {allow: ["*"]}
            masking: {request: {default: redact}, response: {default: redact}}
          - <<: *base
            name: b
            groups: [b]
            priority: 2
        """)
    assert load_policies(tmp_path).get("b").masking.request.default == "redact"


def test_str_of_error_lists_file_line_field_message(tmp_path):
    path = write(tmp_path, "p.yaml", MINIMAL.format(name="a", group="g", priority=1).replace("placeholder}", "scramble}", 1))
    with pytest.raises(PolicyError) as caught:
        load_policies(tmp_path)
    assert str(caught.value) == (
        f"{path}:11: policies[0].masking.request.default: must be one of: "
        "redact, placeholder, pseudonym, hash, encrypt, keep"
    )


BAD_CASES = {
    "unknown-field": (
        ("    models:", "    forbiden_entities: [US_SSN]\n    models:"),
        ("p.yaml", 8, "policies[0].forbiden_entities", "unknown field"),
    ),
    "bad-endpoint": (
        ("[POST /v1/chat/completions]", "[POST /v1/chat/completions, FETCH /v1/x]"),
        ("p.yaml", 7, "policies[0].endpoints.allow[1]", 'must be "METHOD /path"'),
    ),
    "missing-required": (
        ("    priority: 1\n", ""),
        ("p.yaml", 3, "policies[0].priority", "required field is missing"),
    ),
    "priority-not-int": (
        ("priority: 1", "priority: high"),
        ("p.yaml", 5, "policies[0].priority", "must be an integer"),
    ),
    "duplicate-key": (
        ("    priority: 1\n", "    priority: 1\n    priority: 2\n"),
        ("p.yaml", 6, "policies[0].priority", "duplicate key"),
    ),
    "wrong-schema": (
        ("phigate.policy/v1", "phigate.policy/v9"),
        ("p.yaml", 1, "schema", "must be phigate.policy/v1"),
    ),
    "invalid-yaml": (
        ("groups: [g]", "groups: [g"),
        ("p.yaml", 5, "", "invalid YAML"),
    ),
}


@pytest.mark.parametrize("case", BAD_CASES, ids=list(BAD_CASES))
def test_problem_points_at_file_line_field(tmp_path, case):
    (old, new), (file, line, field, message) = BAD_CASES[case]
    text = MINIMAL.format(name="a", group="g", priority=1)
    assert old in text
    write(tmp_path, "p.yaml", text.replace(old, new, 1))
    found = problems_of(tmp_path)
    assert any(
        (f, l, fld) == (file, line, field) and msg.startswith(message) for f, l, fld, msg in found
    ), found


def test_every_problem_is_reported_not_only_the_first(tmp_path):
    write(tmp_path, "p.yaml", """\
        schema: phigate.policy/v1
        policies:
          - name: a
            groups: [g]
            priority: 1
            endpoints: {allow: [POST /v1/responses]}
            models: {allow: ["*"]}
            masking:
              request: {default: placeholder, entities: {PERSON: shred}}
              response: {default: placeholder}
            guardrails:
              - name: broken
                regex: "(unclosed"
              - name: empty
            phi_limits: {max_patients: 3}
            limits: {max_body_bytes: 0}
            approvals:
              timeout: 900
              rules:
                - name: r
                  when: {max_output_tokens_above: 4096}
                  approvals_required: 3
        """)
    found = {(line, field) for _, line, field, _ in problems_of(tmp_path)}
    assert found == {
        (9, "policies[0].masking.request.entities.PERSON"),
        (13, "policies[0].guardrails[0].regex"),
        (14, "policies[0].guardrails[1]"),
        (15, "policies[0].phi_limits.patient_entities"),
        (16, "policies[0].limits.max_body_bytes"),
        (17, "policies[0].approvals.approver_groups"),
        (18, "policies[0].approvals.timeout"),
        (22, "policies[0].approvals.rules[0].approvals_required"),
    }


def test_upstream_key_must_be_a_name_and_is_never_echoed(tmp_path):
    secret = "sk-proj-abcdefghijklmnop1234567890"
    write(tmp_path, "p.yaml", MINIMAL.format(name="a", group="g", priority=1) + f"    upstream_key: {secret}\n")
    with pytest.raises(PolicyError) as caught:
        load_policies(tmp_path)
    assert secret not in str(caught.value)
    assert [(p.line, p.field) for p in caught.value.problems] == [(13, "policies[0].upstream_key")]


def test_names_and_priorities_unique_across_files(tmp_path):
    write(tmp_path, "a.yaml", MINIMAL.format(name="same", group="g1", priority=5))
    write(tmp_path, "b.yaml", MINIMAL.format(name="same", group="g2", priority=5))
    found = problems_of(tmp_path)
    first = tmp_path / "a.yaml"
    assert found == [
        ("b.yaml", 3, "policies[0].name", f"name must be unique; also used at {first}:3"),
        ("b.yaml", 5, "policies[0].priority", f"priority must be unique; also used at {first}:5"),
    ]


def test_problem_in_defaults_points_at_defaults(tmp_path):
    write(tmp_path, "p.yaml", """\
        schema: phigate.policy/v1
        defaults:
          limits: {max_tools: -1}
        policies:
          - {name: a, groups: [a], priority: 1, endpoints: {allow: []}, models: {allow: []},
             masking: {request: {default: keep}, response: {default: keep}}}
        """)
    assert problems_of(tmp_path) == [("p.yaml", 3, "defaults.limits.max_tools", "must be >= 0")]


def test_alias_bomb_is_refused(tmp_path):
    lines = ["schema: phigate.policy/v1", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 9)]
    write(tmp_path, "p.yaml", "\n".join(lines) + "\npolicies: []\n")
    assert any("expands to more than" in message for *_, message in problems_of(tmp_path))


def test_empty_directory_and_missing_directory(tmp_path):
    assert problems_of(tmp_path)[0][3] == "no *.yaml policy files found"
    assert problems_of(tmp_path / "nope")[0][3] == "not a directory"


MUTATIONS = ["~", "[]", "{}", "-1", "true", "'x'", "[[x]]", "{a: 1}"]


def test_every_mutation_of_the_default_fails_cleanly():
    """Replacing any value of default.yaml with a wrongly typed one gives a valid set or a
    PolicyError with problems; never another exception, never a silently dropped policy."""
    lines = (POLICIES / "default.yaml").read_text().splitlines()
    outcomes = {"valid": 0, "refused": 0}
    for index, line in enumerate(lines):
        match = re.match(r"^(\s*(?:- )?[A-Za-z_]+:|\s*- )", line)
        if not match or line.lstrip().startswith("#"):
            continue
        for value in MUTATIONS:
            mutated = [*lines[:index], f"{match.group(1)} {value}", *lines[index + 1:]]
            try:
                policies = parse_files({"default.yaml": "\n".join(mutated).encode()})
            except PolicyError as exc:
                assert exc.problems, (index, value)
                outcomes["refused"] += 1
            else:
                assert len(policies.policies) == 3, (index, value)
                outcomes["valid"] += 1
    assert outcomes["refused"] > 500 and outcomes["valid"] > 10, outcomes


BROKEN_FILES = {
    "python-tag": (b"schema: phigate.policy/v1\npolicies:\n  - name: !!python/object:os.system x\n",
                   3, "invalid YAML: could not determine a constructor"),
    "deep-nesting": (b"schema: phigate.policy/v1\npolicies: " + b"[" * 200_000 + b"]" * 200_000 + b"\n",
                     1, "YAML nested more than 64 levels deep"),
    "two-documents": (b"schema: phigate.policy/v1\n---\npolicies: []\n", 2, "invalid YAML"),
    "not-utf8": (b"schema: phigate.policy/v1\n\xff\xfe\n", 1, "file is not UTF-8"),
    "empty": (b"# nothing here\n", 1, "file is empty"),
    "not-a-mapping": (b"- schema\n", 1, "must be a mapping"),
}


@pytest.mark.parametrize("case", BROKEN_FILES, ids=list(BROKEN_FILES))
def test_broken_files_are_reported_not_crashed(tmp_path, case):
    content, line, message = BROKEN_FILES[case]
    (tmp_path / "p.yaml").write_bytes(content)
    [(file, found_line, _, found_message)] = problems_of(tmp_path)
    assert (file, found_line) == ("p.yaml", line)
    assert found_message.startswith(message)


def test_unknown_entity_types_are_reported_when_known_types_are_given(tmp_path):
    text = MINIMAL.format(name="a", group="g", priority=1) + "    forbidden_entities: [US_SSN, US_SNN]\n"
    write(tmp_path, "p.yaml", text)
    assert load_policies(tmp_path).policies[0].forbidden_entities == ("US_SSN", "US_SNN")
    with pytest.raises(PolicyError) as caught:
        load_policies(tmp_path, entity_types={"US_SSN", "PERSON"})
    [problem] = caught.value.problems
    assert (problem.line, problem.field) == (13, "policies[0].forbidden_entities[1]")
    assert problem.message == "unknown entity type US_SNN (known: PERSON, US_SSN)"


def test_shipped_policies_use_only_the_detectors_entity_types():
    from phigate.detect.recognizers import build_pack

    entity_types = {entity for recognizer in build_pack() for entity in recognizer.supported_entities}
    assert len(load_policies(POLICIES, entity_types).policies) == 3
    assert len(load_policies(POLICIES / "examples", entity_types).policies) == 2
