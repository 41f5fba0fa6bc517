"""docs/configuration.md is generated from the addons' declared options and must not drift."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def generator():
    spec = importlib.util.spec_from_file_location("gen_config_docs",
                                                  ROOT / "scripts" / "gen_config_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_page_matches_the_declared_options():
    gen = generator()
    assert (ROOT / "docs" / "configuration.md").read_text() == gen.render(), (
        "docs/configuration.md is stale: run python scripts/gen_config_docs.py")


def test_every_option_can_be_set_from_the_command_line():
    """mitmproxy's `--set` parses str, int, bool and sequences of str, nothing else (floats
    fail at start-up), so no addon may declare another type."""
    gen = generator()
    settable = {"str", "int", "bool", "Sequence[str]", "Optional[str]", "Optional[int]"}
    for _, options in gen.declared_options(gen.pipeline_addons()):
        for option in options:
            assert gen.type_name(option.typespec) in settable, option.name


def test_every_declared_option_is_documented_with_its_help():
    gen = generator()
    text = gen.render()
    sections = gen.declared_options(gen.pipeline_addons())
    names = [o.name for _, options in sections for o in options]
    assert {"phigate_home", "policies", "upstream", "audit_db", "admin_listen",
            "shutdown_timeout"} <= set(names)
    for _, options in sections:
        for option in options:
            assert f"| `{option.name}` |" in text
            assert gen.cell(option.help) in text


def source_text() -> str:
    files = [*(ROOT / "phigate").rglob("*.py"), *(ROOT / "addons").glob("*.py")]
    return "\n".join(path.read_text() for path in files)


def test_troubleshooting_codes_are_real_and_cover_identity_and_policy():
    import re

    doc = (ROOT / "docs" / "troubleshooting.md").read_text()
    source = source_text()
    codes = set(re.findall(r"`([a-z]+(?:_[a-z]+)+)`", doc))
    options = {o.name for _, opts in generator().declared_options(generator().pipeline_addons())
               for o in opts}
    invented = sorted(c for c in codes - options
                      if f'"{c}"' not in source and not c.startswith("approval_"))
    assert invented == []
    # Every identity refusal code and every policy decision code is explained.
    identity = set(re.findall(r'unauthorized\("([a-z_]+)"', source))
    policy = set(re.findall(r'_refuse\("[^"]+", "([a-z_]+)"', source))
    assert identity and policy
    assert sorted((identity | policy) - codes) == []
