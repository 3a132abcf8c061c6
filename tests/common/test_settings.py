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


ORIGINAL_TEMPLATE = """\
SECRET_KEY = "xxxxxx"
ALGORITHM = "HS256"
ACESS_TOKEN_EXPIRE_MINUTE = 120
API_PORT = 8000
STORAGE_PATH = "/abs/path/to/storage/"
PROD_MODEL_NAME = "mlops_cnn_vit_model_weights"
DB_AUTH_STORAGE_PATH = "${STORAGE_PATH}/input/db_auth"
API_USER_EMAIL = "xxxxxx"
API_USER_PASSWORD = "xxxxxx"
"""


def test_dotenv_original_template_reads_as_python_dotenv_reads_it() -> None:
    values = parse_dotenv(ORIGINAL_TEMPLATE, {})

    assert values["SECRET_KEY"] == "xxxxxx"
    assert values["ACESS_TOKEN_EXPIRE_MINUTE"] == "120"
    assert values["PROD_MODEL_NAME"] == "mlops_cnn_vit_model_weights"
    assert values["DB_AUTH_STORAGE_PATH"] == "/abs/path/to/storage//input/db_auth"
    assert len(values) == 9


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        ("A=1\nB=${A}-x", {}, {"A": "1", "B": "1-x"}),
        ("A=1\nB=${A}", {"A": "env"}, {"A": "1", "B": "env"}),  # the environment wins
        ("B=${MISSING:-fallback}", {}, {"B": "fallback"}),
        ("B=${EMPTY:-fallback}", {"EMPTY": ""}, {"B": ""}),
        ("B=${LATER}\nLATER=x", {}, {"B": "", "LATER": "x"}),
        ("export K = 'it\\'s ${A}'", {"A": "a"}, {"K": "it's a"}),
        ('K="a\\nb\\t\\"c\\""', {}, {"K": 'a\nb\t"c"'}),
        ('K="two\nlines"', {}, {"K": "two\nlines"}),
        ("K=value # comment\nL=a#b", {}, {"K": "value", "L": "a#b"}),
        ("K=   # only a comment", {}, {"K": ""}),
        ("# comment\n\n  \nbroken line\nK=v", {}, {"K": "v"}),
        ("K='x' trailing\nL=y", {}, {"L": "y"}),
        ("\ufeffK=v\r\nL=w\r\n", {}, {"K": "v", "L": "w"}),
    ],
    ids=repr,
)
def test_dotenv_grammar_and_references(
    text: str, environ: dict[str, str], expected: dict[str, str]
) -> None:
    assert parse_dotenv(text, environ) == expected


def test_load_environment_expands_references_against_the_real_environment(
    tmp_path: Path,
) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(ORIGINAL_TEMPLATE)

    merged = load_environment({"STORAGE_PATH": "/real/storage"}, dotenv)

    assert merged["STORAGE_PATH"] == "/real/storage"
    assert merged["DB_AUTH_STORAGE_PATH"] == "/real/storage/input/db_auth"
