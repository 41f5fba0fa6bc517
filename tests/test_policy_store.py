"""Hot reload: a valid edit is picked up, an invalid one is rejected and the last good set stays."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from phigate.policy import PolicyError, PolicyStore, ReloadResult

DEFAULT = Path(__file__).resolve().parents[1] / "policies" / "default.yaml"


@pytest.fixture
def directory(tmp_path):
    shutil.copy(DEFAULT, tmp_path / "default.yaml")
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    bump_mtime(path)


def bump_mtime(path: Path) -> None:
    # Coarse file-system clocks could give an edit the same mtime as the original.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_unchanged_directory_is_not_reparsed(directory):
    store = PolicyStore(directory)
    first = store.current
    assert store.reload().changed is False
    assert store.current is first


def test_valid_edit_is_picked_up(directory):
    store = PolicyStore(directory)
    old_version = store.current.get("clinicians").version
    edit(directory / "default.yaml", "priority: 100", "priority: 150")
    result = store.reload()
    assert (result.changed, result.errors) == (True, ())
    clinicians = store.current.get("clinicians")
    assert clinicians.priority == 150 and clinicians.version != old_version


def test_invalid_edit_keeps_last_good_set_and_reports(directory):
    store = PolicyStore(directory)
    good = store.current
    edit(directory / "default.yaml", "default: placeholder", "default: scramble")
    result = store.reload()
    assert result.changed is False
    assert store.current is good
    assert len(result.errors) == 1
    assert result.errors[0].startswith(f"{directory / 'default.yaml'}:")
    assert "masking.request.default: must be one of" in result.errors[0]
    status = store.status()
    assert status["ok"] is False and status["errors"] == list(result.errors)
    assert [p["name"] for p in status["policies"]] == ["clinicians-reid", "clinicians", "phi-approvers"]
    # The next poll neither repeats the rejection nor forgets it.
    assert store.reload() == ReloadResult(changed=False, errors=())
    assert store.errors == result.errors and store.current is good
    # The fix is picked up and clears the error.
    edit(directory / "default.yaml", "default: scramble", "default: redact")
    fixed = store.reload()
    assert (fixed.changed, fixed.errors) == (True, ())
    assert store.status()["ok"] is True


def test_new_file_and_deleted_file(directory):
    store = PolicyStore(directory)
    extra = (directory / "default.yaml").read_text()
    extra = extra.replace("priority: 200", "priority: 201").replace("priority: 100", "priority: 101")
    extra = extra.replace("priority: 10\n", "priority: 11\n").replace("name: clinicians", "name: x-clinicians")
    extra = extra.replace("name: phi-approvers", "name: x-phi-approvers")
    (directory / "other.yaml").write_text(extra)
    assert store.reload().changed is True
    assert len(store.current.policies) == 6
    (directory / "other.yaml").unlink()
    assert store.reload().changed is True
    assert len(store.current.policies) == 3


def test_touch_without_change_is_not_a_reload(directory):
    store = PolicyStore(directory)
    first = store.current
    bump_mtime(directory / "default.yaml")
    assert store.reload().changed is False
    assert store.current is first


def test_reverting_a_bad_edit_clears_the_error(directory):
    store = PolicyStore(directory)
    original = (directory / "default.yaml").read_text()
    edit(directory / "default.yaml", "schema: phigate.policy/v1", "schema: nope")
    assert store.reload().errors
    (directory / "default.yaml").write_text(original)
    bump_mtime(directory / "default.yaml")
    assert store.reload() == ReloadResult(changed=False, errors=())
    assert store.status()["ok"] is True


def test_invalid_directory_at_start_raises(tmp_path):
    (tmp_path / "p.yaml").write_text("schema: phigate.policy/v1\npolicies: []\n")
    with pytest.raises(PolicyError) as caught:
        PolicyStore(tmp_path)
    assert [(p.line, p.field) for p in caught.value.problems] == [(2, "policies")]
