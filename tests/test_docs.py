"""Docs are tested: every setting is documented, the README's commands exist."""

import re
from pathlib import Path

from imagebank.cli.main import app
from imagebank.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    for name in Settings.model_fields:
        assert f"`IMAGEBANK_{name.upper()}`" in README, f"IMAGEBANK_{name.upper()} undocumented"


def test_documented_settings_exist() -> None:
    documented = set(re.findall(r"`IMAGEBANK_([A-Z0-9_]+)`", README))
    known = {n.upper() for n in Settings.model_fields} | {"DEBUG"}
    assert documented <= known, documented - known


def test_readme_quick_start_has_the_two_commands() -> None:
    assert "make run" in README and "make test" in README


def test_readme_commands_exist() -> None:
    import typer.main

    group = typer.main.get_command(app)
    names = set(group.commands)  # type: ignore[attr-defined]
    blocks = "\n".join(re.findall(r"```sh\n(.*?)```", README, flags=re.DOTALL))
    commands = re.findall(r"^imagebank (\w+)", blocks, flags=re.MULTILINE)
    assert len(commands) >= 10
    for command in commands:
        assert command in names, command
