"""Signing in, sessions and CSRF, sign-in throttling, API tokens, password rules, and error
bodies that never echo what might be patient data (decision 0007)."""

from __future__ import annotations

from datetime import timedelta

from apiworld import PASSWORD, World, problem
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from imagebank.api.security import CSRF_HEADER, SESSION_COOKIE
from imagebank.index.tables import ApiToken, User, WebSession
from imagebank.services.accounts import utcnow

V1 = "/api/v1"


def sign_in(client: TestClient, username: str, password: str = PASSWORD) -> tuple[str, str]:
    """Sign in; (the session cookie's value, the CSRF token)."""
    response = client.post(f"{V1}/session", json={"username": username, "password": password})
    assert response.status_code == 200, response.text[:300]
    cookie = response.cookies.get(SESSION_COOKIE)
    assert cookie
    return cookie, response.json()["csrf_token"]


def _set_cookie_attributes(response: object) -> dict[str, str]:
    headers = response.headers.get_list("set-cookie")  # type: ignore[attr-defined]
    ours = [h for h in headers if h.startswith(f"{SESSION_COOKIE}=")]
    assert len(ours) == 1, headers
    attributes = {}
    for part in ours[0].split(";")[1:]:
        name, _, value = part.strip().partition("=")
        attributes[name.lower()] = value.lower()
    return attributes


def _row_values(row: object) -> list[str]:
    return [str(getattr(row, column.key)) for column in row.__table__.columns]  # type: ignore[attr-defined]


# -- sessions and CSRF ------------------------------------------------------------------------
def test_sign_in_sets_a_strict_secure_cookie_and_csrf_guards_changes(world: World,
                                                                      client: TestClient) -> None:
    response = client.post(f"{V1}/session", json={"username": "member", "password": PASSWORD})
    assert response.status_code == 200
    attributes = _set_cookie_attributes(response)
    assert "httponly" in attributes and "secure" in attributes
    assert attributes["samesite"] == "strict"
    assert attributes["path"] == "/"
    cookie = response.cookies[SESSION_COOKIE]
    body = response.json()
    assert body["username"] == "member" and body["is_admin"] is False
    csrf = body["csrf_token"]
    assert csrf and csrf != cookie and cookie not in response.text

    # reading needs no CSRF token
    me = client.get(f"{V1}/me")
    assert me.status_code == 200
    assert me.json()["username"] == "member" and me.json()["via"] == "session"

    # changing anything does: none, a wrong one, or another session's are refused alike
    other_client = TestClient(client.app, base_url="https://testserver")
    _, other_csrf = sign_in(other_client, "member")
    count = len(world.runtime.accounts.tokens("member"))
    for sent in (None, "0" * len(csrf), other_csrf, ""):
        headers = {} if sent is None else {CSRF_HEADER: sent}
        refused = client.post(f"{V1}/me/tokens", json={"scopes": ["read"]}, headers=headers)
        assert refused.status_code == 403, sent
        assert problem(refused)["code"] == "csrf"
        assert CSRF_HEADER in refused.json()["detail"]
    assert len(world.runtime.accounts.tokens("member")) == count
    made = client.post(f"{V1}/me/tokens", json={"scopes": ["read"], "name": "csrf"},
                       headers={CSRF_HEADER: csrf})
    assert made.status_code == 201
    assert len(world.runtime.accounts.tokens("member")) == count + 1

    # the session has the user's own rights: a member writes but does not manage
    alpha = f"{V1}/projects/alpha"
    assert client.get(f"{alpha}/studies").status_code == 200
    denied = client.get(f"{alpha}/members")
    assert denied.status_code == 403 and problem(denied)["code"] == "forbidden"

    # signing out needs the CSRF token too; then the cookie is dead
    kept = client.delete(f"{V1}/session")
    assert kept.status_code == 403 and problem(kept)["code"] == "csrf"
    assert client.get(f"{V1}/me").status_code == 200
    ended = client.delete(f"{V1}/session", headers={CSRF_HEADER: csrf})
    assert ended.status_code == 204
    assert SESSION_COOKIE not in client.cookies
    client.cookies.clear()
    stale = client.get(f"{V1}/me", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"})
    assert stale.status_code == 401
    assert problem(stale)["code"] == "session_ended"
    # the other session is not affected
    assert other_client.get(f"{V1}/me").status_code == 200

    # an administrator's session has the administrator's full rights
    _, csrf = sign_in(client, "admin")
    assert client.get(f"{V1}/users").status_code == 200
    created = client.post(f"{V1}/projects", json={"id": "gamma"}, headers={CSRF_HEADER: csrf})
    assert created.status_code == 201


# -- wrong credentials and throttling ---------------------------------------------------------
def _failed(client: TestClient, username: str, password: str) -> dict[str, object]:
    response = client.post(f"{V1}/session", json={"username": username, "password": password})
    assert response.status_code == 401, (username, response.status_code)
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    body = problem(response)
    return {"body": body, "www": response.headers.get("www-authenticate")}


def _locked(response: object) -> dict[str, object]:
    assert response.status_code == 429, response.status_code  # type: ignore[attr-defined]
    retry = int(response.headers["retry-after"])  # type: ignore[attr-defined]
    assert 1 <= retry <= 15 * 60
    body = problem(response)
    assert body["code"] == "throttled"
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")  # type: ignore[attr-defined]
    return body


def test_failed_sign_ins_answer_alike_and_five_lock_that_user_only(world: World,
                                                                    client: TestClient) -> None:
    wrong = _failed(client, "viewer", "not the password at all")
    unknown = _failed(client, "nobody-here", PASSWORD)
    world.runtime.accounts.set_active("collaborator", False)
    disabled = _failed(client, "collaborator", PASSWORD)
    # a wrong password, an unknown user and a disabled one cannot be told apart
    assert wrong == unknown == disabled
    body = wrong["body"]
    assert isinstance(body, dict) and body["code"] == "bad_credentials"
    assert "viewer" not in str(body) and "nobody-here" not in str(body)
    assert wrong["www"] and "Bearer" in str(wrong["www"])

    for _ in range(4):  # the viewer's 2nd to 5th failure
        _failed(client, "viewer", "a wrong guess it is")
    right = _locked(client.post(f"{V1}/session",
                                json={"username": "viewer", "password": PASSWORD}))
    guess = _locked(client.post(f"{V1}/session",
                                json={"username": "viewer", "password": "another guess x"}))
    # while locked, the answer says nothing about whether the password was right
    assert (right["code"], right["status"]) == (guess["code"], guess["status"])
    # the same user, however spelled
    _locked(client.post(f"{V1}/session", json={"username": " VIEWER ", "password": PASSWORD}))
    # other users are not locked out, and the locked user's token still works
    sign_in(client, "owner")
    client.cookies.clear()
    assert client.get(f"{V1}/me", headers=world.headers("viewer")).status_code == 200


def test_twenty_failures_from_one_client_lock_that_client(sqlite_world: World,
                                                          sqlite_client: TestClient) -> None:
    client = sqlite_client
    for n in range(20):
        _failed(client, f"guess{n:02d}", "password guessing")
    _locked(client.post(f"{V1}/session", json={"username": "owner", "password": PASSWORD}))
    # another client address is not locked out
    elsewhere = TestClient(client.app, base_url="https://testserver",
                           client=("192.0.2.10", 40000))
    sign_in(elsewhere, "owner")


# -- API tokens -------------------------------------------------------------------------------
def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_tokens_are_stored_hashed_and_end_when_revoked_or_expired(world: World,
                                                                   client: TestClient) -> None:
    made = client.post(f"{V1}/me/tokens", headers=world.headers("viewer"),
                       json={"scopes": ["read"], "name": "laptop"})
    assert made.status_code == 201
    token, token_id = made.json()["token"], made.json()["id"]
    assert client.get(f"{V1}/me", headers=_bearer(token)).status_code == 200
    revoked = client.delete(f"{V1}/me/tokens/{token_id}", headers=world.headers("viewer"))
    assert revoked.status_code == 204
    refused = client.get(f"{V1}/me", headers=_bearer(token))
    assert refused.status_code == 401
    assert problem(refused)["code"] == "bad_token"
    assert "Bearer" in refused.headers["www-authenticate"]
    listed = {t["id"]: t for t in client.get(f"{V1}/me/tokens",
                                             headers=world.headers("viewer")).json()}
    assert listed[token_id]["revoked_at"] is not None
    assert "token" not in listed[token_id] and "secret_hash" not in listed[token_id]

    token, row = world.runtime.accounts.create_token("viewer", scopes=["read"])
    assert client.get(f"{V1}/me", headers=_bearer(token)).status_code == 200
    with world.runtime.archive.sessions.begin() as session:
        session.execute(update(ApiToken).where(ApiToken.id == row["id"])
                        .values(expires_at=utcnow() - timedelta(minutes=1)))
    expired = client.get(f"{V1}/projects/alpha/studies", headers=_bearer(token))
    assert expired.status_code == 401
    assert problem(expired)["code"] == "bad_token"
    # a token whose secret part is wrong is no token, even with a real ID
    fresh, fresh_row = world.runtime.accounts.create_token("viewer", scopes=["read"])
    forged = fresh[:-4] + ("AAAA" if not fresh.endswith("AAAA") else "BBBB")
    assert client.get(f"{V1}/me", headers=_bearer(forged)).status_code == 401
    assert client.get(f"{V1}/me", headers=_bearer(fresh)).status_code == 200
    assert fresh_row["id"] in forged

    # neither a token's secret nor a session's cookie is in the database
    made = client.post(f"{V1}/me/tokens", headers=world.headers("owner"),
                       json={"scopes": ["read", "write"]})
    token = made.json()["token"]
    prefix, token_id, secret = token.split("_", 2)
    assert prefix == "ibt" and made.json()["id"] == token_id
    cookie, csrf = sign_in(client, "owner")
    with world.runtime.archive.sessions.begin() as db:
        row = db.get(ApiToken, token_id)
        assert row is not None
        values = " ".join(_row_values(row))
        sessions = [" ".join(_row_values(r)) for r in db.scalars(select(WebSession))]
    assert secret not in values and token not in values
    assert sessions and all(cookie not in s and csrf not in s for s in sessions)
    # no answer about tokens ever shows a secret again
    for response in (client.get(f"{V1}/me/tokens", headers=world.headers("owner")),
                     client.get(f"{V1}/me/tokens")):
        assert response.status_code == 200
        assert secret not in response.text and "secret" not in response.text


def test_malformed_or_unknown_credentials_get_a_helpful_401(sqlite_world: World,
                                                            sqlite_client: TestClient) -> None:
    world, client = sqlite_world, sqlite_client
    for value in ("forged-value", "x" * 43, "y" * 500):
        client.cookies.clear()
        response = client.get(f"{V1}/me", headers={"Cookie": f"{SESSION_COOKIE}={value}"})
        assert response.status_code == 401
        assert problem(response)["code"] == "session_ended"
    token = world.tokens["owner"]
    for header in ("Basic b3duZXI6cGFzc3dvcmQ=", "Bearer", "Token " + token, token,
                   "Bearer     "):
        response = client.get(f"{V1}/me", headers={"Authorization": header})
        assert response.status_code == 401, header
        body = problem(response)
        assert "Bearer" in body["detail"], (header, body["detail"])
        assert token not in response.text
    garbage = client.get(f"{V1}/me", headers={"Authorization": "Bearer not-a-token"})
    assert garbage.status_code == 401
    body = problem(garbage)
    assert body["code"] == "bad_token" and "token create" in body["detail"]
    assert "not-a-token" not in garbage.text
    # a bad token is not silently ignored in favour of a good session cookie
    cookie, _ = sign_in(client, "owner")
    mixed = client.get(f"{V1}/me", headers={"Authorization": "Bearer not-a-token"})
    assert mixed.status_code == 401 and cookie


def test_a_disabled_users_token_and_session_stop_working(world: World,
                                                         client: TestClient) -> None:
    cookie, _ = sign_in(client, "member")
    client.cookies.clear()
    session = {"Cookie": f"{SESSION_COOKIE}={cookie}"}
    assert client.get(f"{V1}/me", headers=session).status_code == 200
    assert client.get(f"{V1}/me", headers=world.headers("member")).status_code == 200
    disabled = client.put(f"{V1}/users/member/active", headers=world.headers("admin"),
                          json={"active": False})
    assert disabled.status_code == 200 and disabled.json()["is_active"] is False
    token = client.get(f"{V1}/projects/alpha/studies", headers=world.headers("member"))
    assert token.status_code == 401 and problem(token)["code"] == "bad_token"
    browser = client.get(f"{V1}/projects/alpha/studies", headers=session)
    assert browser.status_code == 401 and problem(browser)["code"] == "session_ended"
    _failed(client, "member", PASSWORD)
    # through the service as well (the CLI's `user disable`)
    world.runtime.accounts.set_active("viewer", False)
    assert client.get(f"{V1}/me", headers=world.headers("viewer")).status_code == 401


# -- password rules ---------------------------------------------------------------------------
def test_password_rules_apply_to_new_users(sqlite_world: World,
                                           sqlite_client: TestClient) -> None:
    world, client = sqlite_world, sqlite_client
    admin = world.headers("admin")
    weak = [("harriet", "short pw"), ("harriet", "Password123!"),
            ("harriet", "harriet rides bicycles"), ("harriet", "Bicycles-HARRIET-rides")]
    for username, password in weak:
        response = client.post(f"{V1}/users", headers=admin,
                               json={"username": username, "password": password})
        assert response.status_code == 400, password
        body = problem(response)
        assert body["code"] == "weak_password"
        assert password not in response.text and password.lower() not in response.text.lower()
    assert client.get(f"{V1}/users/harriet", headers=admin).status_code == 404

    passphrase = "copper kettle whistles under amber skies at dawn " * 3
    created = client.post(f"{V1}/users", headers=admin,
                          json={"username": "harriet", "password": passphrase})
    assert created.status_code == 201
    assert passphrase not in created.text and "argon2" not in created.text
    assert "password" not in created.json()
    with world.runtime.archive.sessions.begin() as db:
        stored = db.scalar(select(User.password_hash).where(User.username == "harriet"))
    assert stored is not None and stored.startswith("$argon2id$")
    assert passphrase not in stored
    sign_in(client, "harriet", passphrase)
    trail = client.get(f"{V1}/audit", headers=admin, params={"limit": 1000})
    assert trail.status_code == 200
    assert passphrase.strip() not in trail.text and "short pw" not in trail.text


# -- no echo of request values ---------------------------------------------------------------
def test_refusals_never_echo_what_might_be_patient_data(sqlite_world: World,
                                                        sqlite_client: TestClient) -> None:
    world, client = sqlite_world, sqlite_client
    subject = world.runtime.archive.get("subject", world.ids["subject"])
    patient_id, patient_name = subject["patient_id"], subject["patient_name"]
    studies = f"{V1}/projects/alpha/studies"
    answers = [
        client.get(studies, params={"PatientID": patient_id}),
        client.get(studies, params={"PatientID": patient_id},
                   headers=world.headers("outsider")),
        client.get(studies, params={"PatientID": patient_id, "limit": 0},
                   headers=world.headers("viewer")),
        client.get(studies, params={"PatientID": patient_name * 8},
                   headers=world.headers("viewer")),
        client.get(studies, params={"StudyDate": patient_id},
                   headers=world.headers("viewer")),
        client.get(studies, params={"AccessionNumber": patient_id, "offset": -1},
                   headers=world.headers("viewer")),
        client.get(f"{V1}/projects/alpha/subjects/{patient_id}",
                   headers=world.headers("viewer")),
        client.get(f"{V1}/patients/{patient_id}", headers=world.headers("viewer")),
        client.post(f"{V1}/session", json={"username": patient_name, "password": patient_id}),
        client.post(f"{V1}/users", headers=world.headers("admin"),
                    json={"username": patient_name, "password": patient_id + " long words"}),
        client.post(f"{V1}/projects/alpha/exports", headers=world.headers("collaborator"),
                    json={"ids": [patient_id]}),
    ]
    for response in answers:
        assert response.status_code >= 400, response.request.url
        problem(response)
        assert patient_id not in response.text, response.status_code
        assert patient_id.lower() not in response.text.lower(), response.status_code
        assert patient_name not in response.text, response.status_code
