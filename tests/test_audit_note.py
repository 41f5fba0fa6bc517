"""Signed notes and checkpoints: the Go sumdb/note published example, and tampering."""

import base64
import os
import stat

import pytest

from phigate.audit import note

# The published example of golang.org/x/mod/sumdb/note (its documentation and tests).
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_NOTE = GO_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"


def test_signing_reproduces_the_go_example_byte_for_byte():
    signer = note.Signer.from_skey(GO_SKEY)
    assert signer.verifier.vkey == GO_VKEY
    assert signer.skey == GO_SKEY
    assert note.sign(GO_TEXT, signer) == GO_NOTE
    assert note.verify(GO_NOTE, note.Verifier.from_vkey(GO_VKEY)) == GO_TEXT


def test_key_id_is_sha256_of_name_newline_type_key():
    verifier = note.Verifier.from_vkey(GO_VKEY)
    assert verifier.key_id.hex() == "c74f20a3"
    assert note.key_id("PeterNeumann", verifier.public_key) == verifier.key_id


@pytest.mark.parametrize("edit", [
    lambda n: n.replace("cryptography", "cryptographY"),
    lambda n: n.replace("x08go", "x08gp"),
    lambda n: n.replace("problem is.\n\n", "problem is!\n\n"),
])
def test_any_edit_fails(edit):
    with pytest.raises(note.NoteError):
        note.verify(edit(GO_NOTE), note.Verifier.from_vkey(GO_VKEY))


def test_unknown_signers_are_ignored_but_needed_one_must_be_there():
    other = note.Signer.generate("example.org/other")
    mine = note.Signer.from_skey(GO_SKEY)
    text = "a\nb\n"
    both = note.sign(text, mine) + f"\u2014 {other.name} " + note.sign(text, other).rsplit(" ", 1)[1]
    assert note.verify(both, mine.verifier) == text
    assert note.verify(both, other.verifier) == text
    with pytest.raises(note.NoteError, match="not signed by the expected key"):
        note.verify(note.sign(text, other), mine.verifier)


def test_same_name_other_key_is_rejected():
    impostor = note.Signer.generate("PeterNeumann")
    with pytest.raises(note.NoteError):
        note.verify(note.sign(GO_TEXT, impostor), note.Verifier.from_vkey(GO_VKEY))


@pytest.mark.parametrize("vkey", [
    GO_VKEY.replace("c74f20a3", "c74f20a4"),
    GO_VKEY.replace("+ARpc", "+AhpC"),
    "PeterNeumann+c74f20a3",
    "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
])
def test_malformed_verifier_keys(vkey):
    with pytest.raises(note.NoteError):
        note.Verifier.from_vkey(vkey)


def test_refuses_to_sign_malformed_text():
    signer = note.Signer.generate("example.org/log")
    for text in ("no newline", "blank\n\nline\n", "tab\there\n"):
        with pytest.raises(note.NoteError):
            note.sign(text, signer)


def test_checkpoint_body_round_trip_and_parse_errors():
    head = note.Checkpoint("example.org/log", 42, bytes(range(32)))
    signer = note.Signer.generate("example.org/log")
    signed = note.sign(head.text(), signer)
    assert signed.splitlines()[:3] == ["example.org/log", "42", base64.b64encode(bytes(range(32))).decode()]
    assert note.open_checkpoint(signed, signer.verifier) == head
    for body in ("o\n042\nAAAA\n", "o\n-1\n" + base64.b64encode(bytes(32)).decode() + "\n",
                 "o\n3\n" + base64.b64encode(bytes(31)).decode() + "\n"):
        with pytest.raises(note.NoteError):
            note.Checkpoint.from_text(body)


def test_split_notes_reads_a_sink_file():
    signer = note.Signer.generate("example.org/log")
    notes = [note.sign(note.Checkpoint("example.org/log", n, bytes(32)).text(), signer) for n in (1, 2, 3)]
    assert note.split_notes("\n".join(notes) + "\n") == notes


def test_signing_key_file_is_private_and_reloads(tmp_path):
    path = tmp_path / "checkpoint.key"
    first = note.Signer.load_or_create(path, "example.org/log")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert note.Signer.load_or_create(path, "ignored").verifier == first.verifier
