"""The password rules (NCSC guidance, NIST SP 800-63B 5.1.1): length, not composition."""

from __future__ import annotations

import pytest

from imagebank.domain.passwords import MAX_LENGTH, MIN_LENGTH, password_problem


def refused(password: str, username: str = "") -> str:
    message = password_problem(password, username)
    assert message is not None, "accepted"
    # The message never repeats the password (nor its trimmed form).
    if len(password.strip()) >= 3:
        assert password not in message
        assert password.strip().casefold() not in message.casefold()
    return message


def test_the_limits_are_the_guidance() -> None:
    assert MIN_LENGTH == 12
    assert MAX_LENGTH >= 64  # NIST: allow at least 64


@pytest.mark.parametrize("password", ["", "a", "otter drum", "purple otte", "  letmein  ",
                                      "紫色水獭敲鼓"])
def test_too_short(password: str) -> None:
    assert str(MIN_LENGTH) in refused(password)


def test_length_boundaries() -> None:
    assert password_problem("purple otter") is None  # exactly 12
    words = "purple otter kettle drum marble "
    longest = (words * 40)[:MAX_LENGTH]
    assert len(longest) == MAX_LENGTH
    assert password_problem(longest) is None
    assert str(MAX_LENGTH) in refused(longest + "x")
    assert str(MAX_LENGTH) in refused(words * 100)


@pytest.mark.parametrize("password", [
    "password1234", "Password123!", "PASSWORD1234", "qwerty123456", "  letmein123  ",
    "iloveyou!!!!", "p@ssw0rd2024", "!!Welcome123", "imagebank2024", "passwordpassword",
    "correct horse battery staple", "Correct Horse Battery Staple", "Trustno1-2024",
    "2024-radiology", "football????", "##hospital##", "blink182-2023", "12345678!!!!"])
def test_common_passwords_and_their_variants_are_refused(password: str) -> None:
    assert "common" in refused(password)


@pytest.mark.parametrize("password", ["aaaaaaaaaaaa", "abababababab", "121212121212!",
                                      "            ", "ZZZZZZZZZZZZZZZZZZZZ", "xx xx xx xx xx"])
def test_one_or_two_repeated_characters_are_refused(password: str) -> None:
    refused(password)


@pytest.mark.parametrize("password", [
    "qwertyuiop[]", "1234567890-=", "abcdefghijklmnop", "zyxwvutsrqponm", "asdfghjkl;'a",
    "ASDFGHJKL;'", "0987654321`=-", "zxcvbnm,./zxcvbnm", "7890-=`123456",
    "lmnopqrstuvw"])
def test_keyboard_and_alphabet_runs_are_refused(password: str) -> None:
    message = password_problem(password)
    assert message is not None, password
    assert password not in message


@pytest.mark.parametrize(("password", "username"), [
    ("alice.smith rocks on", "alice.smith"), ("ALICE.SMITH-forever", "alice.smith"),
    ("my name is radiographer3", "radiographer3"), ("thebob-is-here-again", "bob")])
def test_the_username_is_refused_in_the_password(password: str, username: str) -> None:
    message = refused(password, username)
    assert "username" in message
    assert username not in message


@pytest.mark.parametrize("password", [
    "purple otter kettle drum", "plum orchard velvet lantern", "Tr0ub4dor&3xyz!",
    "żółta żaba skacze wysoko", "紫色的水獭在厨房里敲着鼓", "🦦🥁🫖🌸 otter drum",
    "correct horse battery staple and more", "my password is long enough",
    "qwerty is a keyboard layout", "a" * 11 + "b" * 11 + "c"])
def test_passphrases_and_unicode_are_accepted(password: str) -> None:
    assert password_problem(password) is None
    assert password_problem(password, username="someone") is None


def test_a_short_username_does_not_block_everything() -> None:
    assert password_problem("bo likes long walks", username="bo") is None
    assert password_problem("bob likes long walks", username="bob") is not None


def test_no_rules_about_composition() -> None:
    """No required digits, symbols or capitals (NCSC)."""
    for password in ("all lower case words", "ALL UPPER CASE WORDS", "nodigitsnosymbolsatall"):
        assert password_problem(password) is None, password
