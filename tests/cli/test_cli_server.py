"""The command line's server administration: users, roles, tokens and the audit trail.

As in test_cli_commands.py, exit codes and one-line errors are checked on the real console
script in a subprocess, and the many output checks run ``main()`` in this process. What the
commands did is then checked through the services themselves (a token authenticates, a
password signs in), not only through what the commands print.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from clikit import assert_one_line_error, cli, cli_json, run

from imagebank.domain.access import Scope
from imagebank.services.archive import Archive
from imagebank.services.runtime import Runtime

PASSWORD = "plum orchard velvet lantern"
ROLES = ("owner", "member", "collaborator", "viewer")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data folder with project "alpha" and users admin (administrator) and bob."""
    folder = tmp_path / "data"
    cli("project", "create", "alpha", data=folder)
    cli("user", "add", "admin", "--admin", "--password-stdin", data=folder,
        stdin=PASSWORD + "\n")
    cli("user", "add", "bob", "--password-stdin", data=folder, stdin=PASSWORD + "\n")
    return folder


@pytest.fixture
def runtime(data: Path) -> Iterator[Runtime]:
    """The services over the same data folder (opened after the commands ran)."""
    archive = Archive.open(data, workers=1)
    try:
        yield Runtime.for_archive(archive)
    finally:
        archive.close()


# -- users ----------------------------------------------------------------------------------
def test_user_add_reads_the_password_from_stdin(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = run("user", "add", "Carol", "--admin", "--password-stdin", data=data,
                 stdin=f"{PASSWORD}\nignored second line\n")
    assert result.stdout.strip() == "Added administrator carol."
    assert PASSWORD not in result.stdout + result.stderr
    added = cli("user", "add", "dave", "--password-stdin", data=data, stdin=PASSWORD + "\r\n")
    assert added.stdout.strip() == "Added user dave."
    archive = Archive.open(data, workers=1)
    try:
        accounts = Runtime.for_archive(archive).accounts
        # The first line, without its line ending, is the password.
        assert accounts.authenticate("carol", PASSWORD, "test")["is_admin"] is True
        assert accounts.authenticate("dave", PASSWORD, "test")["is_admin"] is False
    finally:
        archive.close()


@pytest.mark.parametrize("weak", ["tulip-8chr", "password1234", "zzzzzzzzzzzzzz"])
def test_weak_password_is_refused_in_one_line_without_the_password(tmp_path: Path,
                                                                   weak: str) -> None:
    data = tmp_path / "data"
    result = cli("user", "add", "erin", "--password-stdin", data=data, stdin=weak + "\n",
                 expect=None)
    line = assert_one_line_error(result, "password")
    assert weak not in result.stdout + result.stderr
    assert "erin" not in [u["username"] for u in cli_json("user", "list", data=data)], line


def test_duplicate_user_and_missing_password_are_clean_errors(data: Path) -> None:
    result = run("user", "add", "bob", "--password-stdin", data=data, stdin=PASSWORD + "\n",
                 expect=None)
    assert_one_line_error(result, "already", "bob")
    assert_one_line_error(cli("user", "add", "frank", "--password-stdin", data=data,
                              expect=None), "standard input")
    assert_one_line_error(cli("user", "add", "Not Valid", "--password-stdin", data=data,
                              stdin=PASSWORD + "\n", expect=None), "username")


def test_user_list_json(data: Path) -> None:
    cli("project", "grant", "alpha", "bob", "member", data=data)
    users = {u["username"]: u for u in cli_json("user", "list", data=data)}
    assert set(users) == {"admin", "bob"}
    assert (users["admin"]["is_admin"], users["bob"]["is_admin"]) == (True, False)
    assert users["bob"]["is_active"] is True
    assert users["bob"]["roles"] == {"alpha": "member"}
    assert users["admin"]["roles"] == {}
    assert all("password" not in key for user in users.values() for key in user)
    cli("user", "disable", "bob", data=data)
    assert {u["username"]: u["is_active"] for u in cli_json("user", "list", data=data)} == {
        "admin": True, "bob": False}
    table = cli("user", "list", data=data).stdout
    assert "bob" in table and "alpha:member" in table


# -- roles ----------------------------------------------------------------------------------
def test_project_grant_and_members(data: Path, runtime: Runtime) -> None:
    result = cli("project", "grant", "alpha", "bob", "viewer", data=data)
    assert result.stdout.strip() == "bob is now viewer of alpha."
    members = cli_json("project", "members", "alpha", data=data)
    assert [(m["username"], m["role"], m["granted_by"]) for m in members] == [
        ("bob", "viewer", "cli")]
    assert members[0]["granted_at"]
    # A grant replaces the role the user had.
    cli("project", "grant", "alpha", "bob", "Collaborator", data=data)
    assert [(m["username"], m["role"]) for m in cli_json("project", "members", "alpha",
                                                         data=data)] == [("bob", "collaborator")]
    assert runtime.accounts.get_user("bob")["roles"] == {"alpha": "collaborator"}
    cli("project", "revoke", "alpha", "bob", data=data)
    assert cli_json("project", "members", "alpha", data=data) == []


def test_project_grant_errors(data: Path) -> None:
    line = assert_one_line_error(cli("project", "grant", "alpha", "bob", "superuser",
                                     data=data, expect=None), "superuser")
    for role in ROLES:
        assert role in line
    assert_one_line_error(run("project", "grant", "nowhere", "bob", "viewer", data=data,
                              expect=None), "nowhere")
    assert_one_line_error(cli("project", "grant", "alpha", "nobody", "viewer", data=data,
                              expect=None), "nobody")
    assert_one_line_error(cli("project", "members", "nowhere", data=data, expect=None),
                          "nowhere")
    assert_one_line_error(cli("project", "revoke", "alpha", "bob", data=data, expect=None),
                          "bob")
    assert cli_json("project", "members", "alpha", data=data) == []


# -- tokens ---------------------------------------------------------------------------------
def test_token_create_prints_the_token_once_and_it_authenticates(data: Path,
                                                                 runtime: Runtime) -> None:
    before = datetime.now(UTC)
    result = run("token", "create", "bob", "--expires", "1", "--scope", "read",
                 "--name", "laptop", data=data)
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    token = lines[0]
    assert token.startswith("ibt_")
    assert token not in result.stderr
    token_id = token.split("_")[1]
    assert token_id in result.stderr and "shown once" in result.stderr
    principal = runtime.accounts.principal_from_token(token)
    assert principal is not None
    assert (principal.username, principal.is_admin) == ("bob", False)
    assert principal.scopes == frozenset({Scope.READ})
    assert principal.token_id == token_id
    listed = cli_json("token", "list", "bob", data=data)
    assert [(t["id"], t["name"], t["scopes"]) for t in listed] == [(token_id, "laptop",
                                                                   ["read"])]
    expires = datetime.fromisoformat(listed[0]["expires_at"])
    assert before + timedelta(hours=23) < expires < before + timedelta(days=1, minutes=5)
    # A token with a wrong secret, or a made-up one, is nobody.
    assert runtime.accounts.principal_from_token(token[:-2] + "xx") is None
    assert runtime.accounts.principal_from_token("ibt_0123456789abcdef_" + "a" * 43) is None


def test_token_list_never_shows_the_secret(data: Path) -> None:
    tokens = [cli("token", "create", user, "--scope", "read", "--scope", "write",
                  data=data).stdout.strip() for user in ("bob", "admin")]
    secrets_ = [t.split("_", 2)[2] for t in tokens]
    outputs = [cli("token", "list", data=data), cli("token", "list", "--json", data=data),
               cli("token", "list", "bob", data=data)]
    for output in outputs:
        for secret in secrets_:
            assert secret not in output.stdout + output.stderr
    rows = json.loads(outputs[1].stdout)
    assert sorted(r["id"] for r in rows) == sorted(t.split("_")[1] for t in tokens)
    assert all("hash" not in key and "secret" not in key and "token" != key
               for row in rows for key in row)
    assert [r["id"] for r in cli_json("token", "list", "bob", data=data)] == [
        tokens[0].split("_")[1]]


def test_token_revoke(data: Path, runtime: Runtime) -> None:
    token = cli("token", "create", "bob", data=data).stdout.strip()
    token_id = token.split("_")[1]
    assert runtime.accounts.principal_from_token(token) is not None
    assert cli("token", "revoke", token_id, data=data).stdout.strip() == (
        f"Revoked token {token_id}.")
    assert runtime.accounts.principal_from_token(token) is None
    (row,) = cli_json("token", "list", "bob", data=data)
    assert row["revoked_at"] is not None
    assert_one_line_error(cli("token", "revoke", "0123456789abcdef", data=data, expect=None),
                          "0123456789abcdef")


def test_token_create_errors(data: Path) -> None:
    assert_one_line_error(cli("token", "create", "nobody", data=data, expect=None), "nobody")
    assert_one_line_error(cli("token", "create", "bob", "--scope", "root", data=data,
                              expect=None), "root")
    assert_one_line_error(cli("token", "create", "bob", "--expires", "5000", data=data,
                              expect=None), "3,650")
    assert cli_json("token", "list", data=data) == []


# -- audit ----------------------------------------------------------------------------------
def test_audit_ls_shows_the_command_lines_own_events(data: Path) -> None:
    cli("project", "grant", "alpha", "bob", "viewer", data=data)
    token_id = cli("token", "create", "bob", data=data).stdout.strip().split("_")[1]
    cli("token", "revoke", token_id, data=data)
    cli("user", "disable", "bob", data=data)
    events = cli_json("audit", "ls", data=data)
    assert all(e["via"] == "cli" and e["method"] == "CLI" for e in events), events
    seen = [(e["action"], e["project_id"], e["level"], e["object_id"]) for e in events]
    assert seen == [
        ("user_add", None, "user", "admin"),
        ("user_add", None, "user", "bob"),
        ("grant", "alpha", "user", "bob"),
        ("token_create", None, "token", token_id),
        ("token_revoke", None, "token", token_id),
        ("user_disable", None, "user", "bob"),
    ]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert all(e["actor"] and e["route"] == f"cli {e['action']}" for e in events)
    assert [e["action"] for e in cli_json("audit", "ls", "--project", "alpha",
                                          data=data)] == ["grant"]
    since = events[2]["seq"]
    assert [e["seq"] for e in cli_json("audit", "ls", "--since", str(since), "--limit", "2",
                                       data=data)] == [events[3]["seq"], events[4]["seq"]]


def test_audit_verify(data: Path) -> None:
    cli("project", "grant", "alpha", "bob", "viewer", data=data)
    result = cli("audit", "verify", data=data)
    assert "ok" in result.stdout and "3 events" in result.stdout
    report = cli_json("audit", "verify", data=data)
    assert report == {"ok": True, "events": 3, "problems": []}
    # An edited event breaks the chain: verify says which and exits 1.
    with sqlite3.connect(data / "index.sqlite3") as connection:
        connection.execute("UPDATE audit_events SET object_id = 'mallory' WHERE seq = 2")
    broken = run("audit", "verify", data=data, expect=1)
    assert "broken" in broken.stdout
    report = json.loads(cli("audit", "verify", "--json", data=data, expect=1).stdout)
    assert report["ok"] is False and report["problems"]
