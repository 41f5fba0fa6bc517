"""Reading policy files: YAML with line numbers, every problem reported as file:line: field.

Only `*.yaml` files directly in the directory are loaded (so `examples/` is not), in name
order. A directory with any problem loads nothing: a half-valid policy set could silently
drop a deny rule.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from phigate.policy.model import PolicySet
from phigate.policy.schema import Report, build_file, field_name

# libyaml's composer when pyyaml was built with it (several times faster); marks are the same.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAX_NODES = 50_000  # aliases can make a tiny file expand enormously ("billion laughs")
_MAX_DEPTH = 64
_OPEN = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSE = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field or '-'}: {self.message}"


class PolicyError(Exception):
    """A policy directory that cannot be used; `.problems` lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.problems)


def policy_files(directory: str | os.PathLike[str]) -> list[Path]:
    return sorted(path for path in Path(directory).glob("*.yaml") if path.is_file())


def read_files(directory: str | os.PathLike[str]) -> dict[str, bytes]:
    """The bytes of every policy file, keyed by path (as a string); raises PolicyError."""
    if not Path(directory).is_dir():
        raise PolicyError([Problem(str(directory), 0, "", "not a directory")])
    files = {}
    for path in policy_files(directory):
        try:
            files[str(path)] = path.read_bytes()
        except OSError as exc:
            raise PolicyError([Problem(str(path), 0, "", f"cannot read ({type(exc).__name__})")]) from None
    return files


def load_policies(
    directory: str | os.PathLike[str], entity_types: Collection[str] | None = None
) -> PolicySet:
    """Load and validate every policy file in `directory`; raises PolicyError.

    Pass the detector's `entity_types` to have unknown (e.g. misspelt) types reported."""
    return parse_files(read_files(directory), entity_types)


def parse_files(files: Mapping[str, bytes], entity_types: Collection[str] | None = None) -> PolicySet:
    """Build a PolicySet from file contents (path -> bytes); raises PolicyError."""
    problems: list[Problem] = []
    policies = []
    taken: dict = {}  # names and priorities must be unique across files
    if not files:
        problems.append(Problem("-", 0, "", "no *.yaml policy files found"))
    for name, content in files.items():
        report = Report(name)
        data = _parse_yaml(content, report)
        if data is not None:
            version = hashlib.sha256(content).hexdigest()[:16]
            policies += build_file(data, report, source=name, version=version, taken=taken,
                                   entity_types=entity_types)
        problems += [Problem(*entry) for entry in report.entries]
    if problems:
        raise PolicyError(sorted(problems, key=lambda problem: (problem.file, problem.line)))
    policies.sort(key=lambda policy: policy.priority, reverse=True)
    return PolicySet(tuple(policies), files_digest(files))


def files_digest(files: Mapping[str, bytes]) -> str:
    """One hash over every file's name and bytes: equal digests mean identical policy sets."""
    digest = hashlib.sha256()
    for name, content in sorted(files.items()):
        digest.update(hashlib.sha256(name.encode()).digest() + hashlib.sha256(content).digest())
    return digest.hexdigest()


def _parse_yaml(content: bytes, report: Report) -> Any:
    """The file as plain Python values; line numbers go into `report.lines` by field path."""
    try:
        text = content.decode("utf-8")
        if _too_deep(text):
            report.add((), f"YAML nested more than {_MAX_DEPTH} levels deep")
            return None
        node = yaml.compose(text, Loader=_YAML_LOADER)
    except UnicodeDecodeError:
        report.add((), "file is not UTF-8")
        return None
    except yaml.YAMLError as exc:
        _yaml_problem(exc, report)
        return None
    if node is None:
        report.add((), "file is empty")
        return None
    try:
        return _Converter(report).plain(node, ())
    except _TooLarge:
        report.add((), f"file expands to more than {_MAX_NODES} values (aliases?)")
    except yaml.YAMLError as exc:  # e.g. an unknown tag such as !!python/object
        _yaml_problem(exc, report)
    except ValueError:  # e.g. an impossible date
        report.add((), "invalid YAML value")
    return None


def _too_deep(text: str) -> bool:
    """Whether collections nest deeper than _MAX_DEPTH. Checked on the event stream (the
    parser keeps its own stack) because composing recurses, and libyaml's composer crashes the
    process on a few hundred thousand nested brackets instead of raising."""
    depth = 0
    for event in yaml.parse(text, Loader=_YAML_LOADER):
        if isinstance(event, _OPEN):
            depth += 1
            if depth > _MAX_DEPTH:
                return True
        elif isinstance(event, _CLOSE):
            depth -= 1
    return False


def _yaml_problem(exc: yaml.YAMLError, report: Report) -> None:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or "syntax error"
    report.add_at(mark.line + 1 if mark else 1, "", f"invalid YAML: {problem}")


class _TooLarge(Exception):
    pass


class _Converter:
    """YAML nodes -> dicts, lists and scalars, remembering the line of each field path."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.constructor = SafeConstructor()
        self.count = 0

    def plain(self, node: Node, path: tuple) -> Any:
        self.count += 1
        if self.count > _MAX_NODES:
            raise _TooLarge
        self.report.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, MappingNode):
            # Resolve `<<: *anchor` merge keys; a key written here may override a merged one,
            # but a key written twice here is a mistake.
            own = {id(key) for key, _ in node.value if key.tag != "tag:yaml.org,2002:merge"}
            self.constructor.flatten_mapping(node)
            result: dict[Any, Any] = {}
            written: set[str] = set()
            for key_node, value_node in node.value:
                key = self.constructor.construct_object(key_node) if isinstance(key_node, ScalarNode) else None
                if not isinstance(key, str):
                    self.report.add_at(key_node.start_mark.line + 1, field_name(path), "keys must be strings")
                    continue
                child = (*path, key)
                self.report.lines[child] = key_node.start_mark.line + 1
                if id(key_node) in own:
                    if key in written:
                        self.report.add(child, "duplicate key")
                    written.add(key)
                result[key] = self.plain(value_node, child)
            return result
        if isinstance(node, SequenceNode):
            return [self.plain(item, (*path, index)) for index, item in enumerate(node.value)]
        return self.constructor.construct_object(node)

