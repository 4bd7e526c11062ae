"""The password rules (NCSC "Password policy: updating your approach"; NIST SP 800-63B 5.1.1).

Length, not composition: at least 12 characters, long passphrases welcome (up to 1,024), no
rules about symbols or digits, no forced expiry. Refused: passwords on a block list of the
most common ones (also with digits or punctuation added at the ends), the username itself,
one repeated character, and simple keyboard or number runs.
"""

from __future__ import annotations

import re

MIN_LENGTH = 12
MAX_LENGTH = 1024

# The most used passwords of public breach corpora and their obvious variants; the check also
# strips digits and punctuation from both ends, so "Password123!" is caught by "password".
_COMMON = """
123456 123456789 12345678 1234567890 12345 1234567 password qwerty qwertyuiop qwerty123
111111 123123 abc123 password1 iloveyou 000000 1q2w3e4r 1q2w3e4r5t 1qaz2wsx zaq12wsx
qwertyui asdfgh asdfghjkl zxcvbnm zxcvbnm123 monkey dragon letmein football baseball
welcome welcome1 admin administrator root toor login master hello hello123 shadow sunshine
princess trustno1 superman batman starwars whatever freedom passw0rd p@ssw0rd p@ssword
pa55word pass pass123 passpass password12 password123 passwordpassword changeme changeit
secret secret123 default guest test test123 testtest temp temp123 user user123 demo
michael jennifer jordan hunter charlie daniel thomas george andrew joshua liverpool arsenal
chelsea manchester manutd london england qazwsx qwe123 qweasd qweasdzxc 654321 666666
777777 888888 999999 121212 112233 123321 987654321 9876543210 11111111 00000000 1234qwer
q1w2e3r4 q1w2e3r4t5 abcdef abcdefg abcdefgh abcd1234 aa123456 a123456 123qwe 123abc
computer internet google mustang access killer jessica ashley nicole michelle soccer
hockey tigger buster pepper ginger summer winter autumn spring flower purple orange
yellow silver golden diamond cheese cookie chocolate banana apple orange1 blink182
imagebank imagebank1 dicom radiology hospital nhs nhsnhs doctor nurse patient research
pacs orthanc xnat medical health healthcare clinic scanner imaging
correcthorsebatterystaple letmein123 iloveyou1 loveme lovely mypassword mypass newpass
newpassword oldpassword password! passw0rd! qwerty! welcome123 monday tuesday friday
january february december
"""

BLOCK_LIST: frozenset[str] = frozenset(_COMMON.split())

_KEYBOARD_ROWS = (
    "`1234567890-=",
    "qwertyuiop[]\\",
    "asdfghjkl;'",
    "zxcvbnm,./",
    "abcdefghijklmnopqrstuvwxyz",
    "01234567890",
)
_EDGE = re.compile(r"^[\W\d_]+|[\W\d_]+$")
_SYMBOLS = re.compile(r"^[\W_]+|[\W_]+$")
_ENDS = re.compile(r"([\W\d_]*)(.*?)([\W\d_]*)", re.DOTALL)
#: How many of the digits and symbols at an end may belong to a listed word ("trustno1").
_KEEP = 4


def _cores(folded: str) -> set[str]:
    """``folded`` without the digits and punctuation added at its ends, cut at each of the
    last few positions, so that "trustno1-2024" gives "trustno1" as well as "trustno"."""
    match = _ENDS.fullmatch(folded)
    assert match is not None  # every string matches
    head, middle, tail = match.groups()
    cores = {
        head[len(head) - i :] + middle + tail[:j]
        for i in range(min(len(head), _KEEP) + 1)
        for j in range(min(len(tail), _KEEP) + 1)
    }
    cores.add(_SYMBOLS.sub("", folded))  # "12345678!!!!" gives "12345678"
    return cores


def _is_run(text: str) -> bool:
    """Every character is the next (or previous) one on a keyboard row or in the alphabet."""
    if len(text) < 4:
        return False
    for row in _KEYBOARD_ROWS:
        for line in (row, row[::-1]):
            doubled = line * 3
            if text in doubled:
                return True
    return False


def password_problem(password: str, username: str = "") -> str | None:
    """What is wrong with ``password`` for ``username``, or None if it is acceptable.

    The message says what to do and never repeats the password.
    """
    if len(password) < MIN_LENGTH:
        return (
            f"A password needs at least {MIN_LENGTH} characters; three random words make a "
            "strong one that is easy to remember."
        )
    if len(password) > MAX_LENGTH:
        return f"A password may have at most {MAX_LENGTH} characters."
    folded = password.casefold()
    core = _EDGE.sub("", folded)
    compact = re.sub(r"\s+", "", folded)
    if folded in BLOCK_LIST or compact in BLOCK_LIST or not BLOCK_LIST.isdisjoint(_cores(folded)):
        return "That password is one of the most common ones; choose another."
    letters = set(re.sub(r"[\W_]+", "", folded))  # letters and digits ("121212121212!")
    if len(set(folded)) <= 2 or 0 < len(letters) <= 2:
        return "A password cannot be one or two characters repeated."
    if _is_run(compact) or _is_run(core):
        return "A password cannot be a run of keys or letters; choose another."
    user = username.casefold()
    if user and len(user) >= 3 and (user in folded or core == user):
        return "A password cannot contain the username."
    return None
