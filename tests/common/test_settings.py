"""Settings plumbing: typed reads that collect every problem, `.env` files under the real
environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.settings import EnvReader, SettingsError, load_environment, parse_dotenv


def test_env_reader_types_and_records_names() -> None:
    env = EnvReader({"A": "3", "B": "yes", "C": "x", "D": "2.5", "OLD": "v", "E": "  "}, "demo")
    assert env.integer("A", 0) == 3
    assert env.boolean("B", False) is True
    assert env.choice("C", "y", ("x", "y")) == "x"
    assert env.number("D", 0.0) == 2.5
    assert env.string("NEW", "default", "OLD") == "v"
    assert env.string("E", "blank means unset") == "blank means unset"
    env.check()
    assert {"A", "B", "C", "D", "NEW", "OLD", "E"} <= env.names_read


def test_env_reader_bad_boolean_and_bounds_are_problems() -> None:
    env = EnvReader({"FLAG": "maybe", "N": "99", "CH": "z"}, "demo")
    env.boolean("FLAG", False)
    env.integer("N", 1, maximum=10)
    env.choice("CH", "a", ("a", "b"))
    with pytest.raises(SettingsError) as caught:
        env.check()
    assert len(caught.value.problems) == 3


def test_dotenv_parsing_and_precedence(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# comment\nexport STORAGE_URL=./from-dotenv\nSECRET_KEY='quoted # not a comment'\n"
        'MULTI="a\\nb"\nPLAIN=value # trailing comment\nbroken line\n'
    )
    values = parse_dotenv(dotenv.read_text())
    assert values == {
        "STORAGE_URL": "./from-dotenv",
        "SECRET_KEY": "quoted # not a comment",
        "MULTI": "a\nb",
        "PLAIN": "value",
    }
    merged = load_environment({"STORAGE_URL": "/real"}, dotenv)
    assert merged["STORAGE_URL"] == "/real"
    assert merged["PLAIN"] == "value"
    assert load_environment({}, tmp_path / "missing.env") == {}
