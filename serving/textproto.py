"""A small reader for protobuf text format, enough for TF Serving's configuration files.

The model sync must run without protobuf or TensorFlow (its container carries boto3 only), and
two of TF Serving's config messages (BatchingParameters, MonitoringConfig) ship in no Python
package. So both the sync and the model server read those files with this parser: messages
become `TextMessage` (field name -> list of values, in file order), scalars stay Python values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TypeAlias

__all__ = ["TextMessage", "TextProtoError", "parse_text_proto"]

Scalar: TypeAlias = str | int | float
Value: TypeAlias = "str | int | float | TextMessage"


class TextProtoError(ValueError):
    """The text is not valid protobuf text format (message says where)."""


@dataclass
class TextMessage:
    """One message: every field's values in order (repeated or not)."""

    fields: dict[str, list[Value]] = field(default_factory=dict)

    def add(self, name: str, value: Value) -> None:
        self.fields.setdefault(name, []).append(value)

    def values(self, name: str) -> list[Value]:
        return self.fields.get(name, [])

    def messages(self, name: str) -> list[TextMessage]:
        found = [value for value in self.values(name) if isinstance(value, TextMessage)]
        if len(found) != len(self.values(name)):
            raise TextProtoError(f"field {name!r} must be a message")
        return found

    def message(self, name: str) -> TextMessage | None:
        found = self.messages(name)
        return found[-1] if found else None

    def scalar(self, name: str, default: Scalar | None = None) -> Scalar | None:
        values = self.values(name)
        if not values:
            return default
        value = values[-1]  # the last one wins for a singular field, as in protobuf
        if isinstance(value, TextMessage):
            raise TextProtoError(f"field {name!r} must be a value, not a message")
        return value

    def integer(self, name: str, default: int | None = None) -> int | None:
        value = self.scalar(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise TextProtoError(f"field {name!r} must be an integer, got {value!r}")
        return value

    def boolean(self, name: str, default: bool = False) -> bool:
        value = self.scalar(name)
        if value is None:
            return default
        if value in ("true", "True", "t", 1):
            return True
        if value in ("false", "False", "f", 0):
            return False
        raise TextProtoError(f"field {name!r} must be true or false, got {value!r}")

    def string(self, name: str, default: str | None = None) -> str | None:
        value = self.scalar(name)
        if value is None:
            return default
        if not isinstance(value, str):
            raise TextProtoError(f"field {name!r} must be a string, got {value!r}")
        return value

    def wrapped_integer(self, name: str, default: int | None = None) -> int | None:
        """A `google.protobuf.*Value` wrapper field, written `name { value: N }`."""
        wrapper = self.message(name)
        return default if wrapper is None else wrapper.integer("value", default)


_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)[fF]?(?![\w.]))
  | (?P<ident>-?[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[{}<>\[\]:,;])
    """,
    re.VERBOSE,
)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "'": "'", "\\": "\\", "0": "\0"}


def _unquote(token: str) -> str:
    body = token[1:-1]
    return re.sub(r"\\(.)", lambda match: _ESCAPES.get(match.group(1), match.group(1)), body)


def _number(token: str) -> int | float:
    text = token.rstrip("fF") if not token.lower().startswith(("0x", "-0x", "+0x")) else token
    if re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", text):
        return int(text, 16)
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    return float(text)


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match:
            line = text.count("\n", 0, position) + 1
            raise TextProtoError(f"unexpected character {text[position]!r} on line {line}")
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append((kind, match.group(), position))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self._text = text
        self._tokens = _tokenize(text)
        self._index = 0

    def _where(self) -> str:
        if self._index >= len(self._tokens):
            return "at end of input"
        position = self._tokens[self._index][2]
        return f"on line {self._text.count(chr(10), 0, position) + 1}"

    def _peek(self) -> tuple[str, str] | None:
        if self._index >= len(self._tokens):
            return None
        kind, token, _ = self._tokens[self._index]
        return kind, token

    def _take(self) -> tuple[str, str]:
        found = self._peek()
        if found is None:
            raise TextProtoError("unexpected end of input")
        self._index += 1
        return found

    def _expect(self, punct: str) -> None:
        kind, token = self._take()
        if kind != "punct" or token != punct:
            self._index -= 1
            raise TextProtoError(f"expected {punct!r} {self._where()}, got {token!r}")

    def message(self, closing: str | None) -> TextMessage:
        result = TextMessage()
        while True:
            found = self._peek()
            if found is None:
                if closing is not None:
                    raise TextProtoError(f"missing {closing!r} at end of input")
                return result
            kind, token = found
            if kind == "punct" and closing is not None and token == closing:
                self._index += 1
                return result
            if kind != "ident":
                raise TextProtoError(f"expected a field name {self._where()}, got {token!r}")
            self._index += 1
            self._field(result, token)
            separator = self._peek()
            if separator is not None and separator[0] == "punct" and separator[1] in ",;":
                self._index += 1

    def _field(self, result: TextMessage, name: str) -> None:
        found = self._peek()
        has_colon = found is not None and found == ("punct", ":")
        if has_colon:
            self._index += 1
            found = self._peek()
        if found is not None and found[0] == "punct" and found[1] in "{<":
            self._index += 1
            result.add(name, self.message("}" if found[1] == "{" else ">"))
            return
        if not has_colon:
            raise TextProtoError(f"expected ':' after {name!r} {self._where()}")
        if found is not None and found == ("punct", "["):
            self._index += 1
            while True:
                closing = self._peek()
                if closing == ("punct", "]"):
                    self._index += 1
                    return
                result.add(name, self._value())
                separator = self._peek()
                if separator == ("punct", ","):
                    self._index += 1
        result.add(name, self._value())

    def _value(self) -> Value:
        found = self._peek()
        if found is not None and found[0] == "punct" and found[1] in "{<":
            self._index += 1
            return self.message("}" if found[1] == "{" else ">")
        kind, token = self._take()
        if kind == "string":
            parts = [_unquote(token)]
            # Adjacent string literals concatenate, as in C and in protobuf text format.
            while (following := self._peek()) is not None and following[0] == "string":
                parts.append(_unquote(self._take()[1]))
            return "".join(parts)
        if kind == "number":
            return _number(token)
        if kind == "ident":
            return token
        self._index -= 1
        raise TextProtoError(f"expected a value {self._where()}, got {token!r}")


def parse_text_proto(text: str) -> TextMessage:
    """Parse a whole text-format message (the top level has no braces)."""
    return _Parser(text).message(None)
