"""One route parameter and the check of one value against it (no network, nothing signed)."""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidParams

TYPES = ("string", "enum", "boolean", "integer", "number", "url", "url_list")
_INT = re.compile(r"^-?[0-9]{1,20}$")


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # one of TYPES
    required: bool = False
    default: Any = None
    values: tuple[str, ...] = ()
    min_length: int = 0
    max_length: int | None = None
    min_items: int = 0
    max_items: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    requires: str | None = None
    description: str = ""

    @property
    def is_media(self) -> bool:
        """Takes an image URL (so a local file or PIL image may be uploaded for it)."""
        return self.type in ("url", "url_list")

    @classmethod
    def from_json(cls, name: str, d: dict[str, Any]) -> Param:
        """A parameter as ``routes.json`` (and the live catalog, once parsed) spells it."""
        return cls(name=name, type=d["type"], required=d.get("required", False), default=d.get("default"),
                   values=tuple(d.get("values", ())), min_length=d.get("min_length", 0),
                   max_length=d.get("max_length"), min_items=d.get("min_items", 0), max_items=d.get("max_items"),
                   minimum=d.get("minimum"), maximum=d.get("maximum"), requires=d.get("requires"),
                   description=d.get("description", ""))

    def check(self, route: str, value: Any, uploadable: bool) -> Any:
        """``value`` in wire form, or :class:`InvalidParams` naming the field and what is allowed."""
        if self.type == "string":
            return self._string(route, value)
        if self.type == "enum":
            return self._enum(route, value)
        if self.type == "boolean":
            if not isinstance(value, bool):
                raise InvalidParams(f"{route}: {self.name!r} must be True or False, got {value!r}.",
                                    route=route, field=self.name, allowed=[True, False])
            return value
        if self.type in ("integer", "number"):
            return self._number(route, value)
        if self.type == "url":
            return _check_url(route, self, value, uploadable)
        if self.type == "url_list":
            return self._url_list(route, value, uploadable)
        raise AssertionError(f"unknown parameter type {self.type!r}")  # a data-file bug

    def _string(self, route: str, value: Any) -> str:
        if not isinstance(value, str) or len(value.strip()) < max(self.min_length, 1 if self.required else 0):
            raise InvalidParams(f"{route}: {self.name!r} must be a non-empty string.", route=route, field=self.name)
        if self.max_length and len(value) > self.max_length:
            raise InvalidParams(f"{route}: {self.name!r} is {len(value)} characters; the limit is "
                                f"{self.max_length}.", route=route, field=self.name)
        return value

    def _enum(self, route: str, value: Any) -> str:
        wire = to_wire(value)
        if wire not in self.values:
            hint = difflib.get_close_matches(str(wire), self.values, n=1)
            raise InvalidParams(
                f"{route}: {self.name}={value!r} is not allowed"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; allowed: {', '.join(self.values)}.",
                route=route, field=self.name, allowed=list(self.values))
        return wire

    def _number(self, route: str, value: Any) -> int | float:
        """Integers stay JSON numbers on the wire; a digit string (a form field) is read as one."""
        number: Any = value
        if isinstance(value, str) and _INT.match(value.strip()):
            number = int(value)
        elif isinstance(value, str) and self.type == "number":
            try:
                number = float(value)
            except ValueError:
                pass
        if isinstance(number, float) and self.type == "integer" and number.is_integer():
            number = int(number)
        kinds = (int,) if self.type == "integer" else (int, float)
        if isinstance(number, bool) or not isinstance(number, kinds) or number != number:  # NaN
            kind = "an integer" if self.type == "integer" else "a number"
            raise InvalidParams(f"{route}: {self.name!r} must be {kind}, got {value!r:.40}.", route=route,
                                field=self.name)
        low, high = self.minimum, self.maximum
        if (low is not None and number < low) or (high is not None and number > high):
            span = f"from {_num(low)} to {_num(high)}" if low is not None and high is not None else (
                f"at least {_num(low)}" if low is not None else f"at most {_num(high)}")
            raise InvalidParams(f"{route}: {self.name}={number} is out of range; it must be {span}.",
                                route=route, field=self.name, allowed=[low, high])
        return number

    def _url_list(self, route: str, value: Any, uploadable: bool) -> list[Any]:
        if isinstance(value, (str, bytes, os.PathLike)) or is_uploadable(value):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise InvalidParams(f"{route}: {self.name!r} must be a list of images.", route=route, field=self.name)
        if len(value) < max(self.min_items, 1):
            raise InvalidParams(f"{route}: {self.name!r} needs at least {max(self.min_items, 1)} image.",
                                route=route, field=self.name)
        if self.max_items is not None and len(value) > self.max_items:
            raise InvalidParams(f"{route} takes at most {self.max_items} images in {self.name!r}; got "
                                f"{len(value)}.", route=route, field=self.name, allowed=[self.max_items])
        return [_check_url(route, self, v, uploadable) for v in value]


def to_wire(value: Any) -> Any:
    """Numbers become the strings an enum expects ("5", not 5); other values unchanged."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


def _num(x: float | None) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def is_uploadable(value: Any) -> bool:
    if isinstance(value, (bytes, bytearray, os.PathLike)):
        return True
    return type(value).__module__.startswith("PIL.")


def _check_url(route: str, p: Param, value: Any, uploadable: bool) -> Any:
    if isinstance(value, str) and value.startswith(("https://", "http://")):
        return value
    if uploadable:
        if isinstance(value, str) or isinstance(value, os.PathLike):
            if not os.path.isfile(value):
                raise InvalidParams(f"{route}: {p.name!r} is neither a URL nor an existing file: "
                                    f"{os.fspath(value)!r}.", route=route, field=p.name)
            return value
        if is_uploadable(value):
            return value
        raise InvalidParams(f"{route}: {p.name!r} must be an image URL, a file path, bytes or a "
                            f"PIL image, not {type(value).__name__}.", route=route, field=p.name)
    raise InvalidParams(f"{route}: {p.name!r} must be an http(s) URL (upload local files first), "
                        f"got {value!r:.80}.", route=route, field=p.name)
