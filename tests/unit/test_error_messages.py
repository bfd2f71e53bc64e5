"""Every message a refusal can carry is marked for translation, and comes out in Chinese.

`DomainError`s take an English template marked with `i18n.N_` where they are raised; this walks
the source for every construction of a `DomainError` subclass (found by importing `server`) and
fails on one whose message is not `N_("...")` or a module constant bound to `N_("...")`, and on
a subclass whose `title` is not marked. The i18n test then checks each marked string has
Chinese; `test_placeholders_survive_translation` checks a translation keeps its `{names}`.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import string
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from babel.messages.pofile import read_po

import i18n
import server
from i18n import N_
from server import crud, models
from server.errors import (
    VALIDATION_MESSAGES,
    DomainError,
    InvalidInput,
    NotFound,
    Term,
    render,
    translate_validation,
)
from tests.unit.test_i18n import ROOT, extracted

SOURCES = ("server",)  # DomainError lives there; push, media, sync and schemas cannot import it
#: functions whose named argument is a noun that goes into a message (translated with it)
NOUN_ARGS = {"ensure_in_my_area": 3, "relocate": 4}


def _import_all() -> None:
    for info in pkgutil.walk_packages(server.__path__, "server."):
        if ".migrations" not in info.name:
            importlib.import_module(info.name)


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def error_classes() -> set[str]:
    """Names of `DomainError` and every subclass defined anywhere in `server`."""
    _import_all()
    return {"DomainError", *(c.__name__ for c in _subclasses(DomainError))}


def _is_marked(node: ast.expr, constants: set[str]) -> bool:
    if isinstance(node, ast.IfExp):  # N_("a") if cond else N_("b")
        return _is_marked(node.body, constants) and _is_marked(node.orelse, constants)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "N_":
        return len(node.args) == 1 and isinstance(node.args[0], ast.Constant)
    return isinstance(node, ast.Name) and node.id in constants


def _marked_constants(tree: ast.Module) -> set[str]:
    """Module-level names bound to `N_("...")`."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and _is_marked(node.value, set()):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def unmarked(folder: Path, classes: set[str]) -> list[str]:
    """`file:line` of each error constructed with a message that is not marked."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        constants = _marked_constants(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            where = f"{path.relative_to(folder.parent)}:{node.lineno}"
            if name in classes:
                message = node.args[0] if node.args else None
                if message is None or not _is_marked(message, constants):
                    found.append(where)
            elif name in NOUN_ARGS and len(node.args) > NOUN_ARGS[name]:
                noun = node.args[NOUN_ARGS[name]]
                if isinstance(noun, ast.Constant | ast.JoinedStr):  # a literal noun: unmarked
                    found.append(where)
    return found


def test_every_error_message_is_marked() -> None:
    classes = error_classes()
    assert {"InvalidInput", "NotFound", "Forbidden", "Conflict", "RefreshReused"} <= classes
    problems = [w for folder in SOURCES for w in unmarked(ROOT / folder, classes)]
    assert problems == []


def test_the_walk_catches_an_unmarked_message(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "m.py").write_text(
        "from i18n import N_\n"
        'OK = N_("fine")\n'
        'raise InvalidInput(N_("fine too"), field="x")\n'
        "raise NotFound(OK)\n"
        'raise Forbidden("plain text")\n'
        'raise Conflict(f"formatted {x}")\n'
        "raise Conflict(message)\n"
        'await ensure_in_my_area(s, p, a, "task")\n'
        'await ensure_in_my_area(s, p, a, N_("task"))\n'
    )
    found = unmarked(pkg, {"InvalidInput", "NotFound", "Forbidden", "Conflict"})
    assert found == ["pkg/m.py:5", "pkg/m.py:6", "pkg/m.py:7", "pkg/m.py:8"]


def test_every_error_title_is_marked() -> None:
    marked = extracted(ROOT / "server")
    for cls in [DomainError, *_subclasses(DomainError)]:
        assert cls.title in marked, f"{cls.__name__}.title is not marked with N_"


def test_every_table_has_a_noun() -> None:
    tables = {
        m.class_.__tablename__
        for m in models.Base.registry.mappers
        if issubclass(m.class_, models.Record)
    }
    assert tables <= set(crud.NOUNS)


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_placeholders_survive_translation() -> None:
    po = i18n.LOCALE_DIR / "zh_CN" / "LC_MESSAGES" / f"{i18n.DOMAIN}.po"
    with po.open("rb") as fh:
        catalog = read_po(fh)
    bad = [
        m.id
        for m in catalog
        if m.id and isinstance(m.id, str) and m.string
        if _placeholders(m.id) != _placeholders(str(m.string))
    ]
    assert bad == []


def test_a_domain_error_renders_in_each_language() -> None:
    exc = NotFound(N_("no {record} {id}"), record=crud.noun(models.Task), id="t-1")
    assert exc.detail == "no task t-1" == str(exc)
    chinese = exc.localized("zh_CN")
    assert "t-1" in chinese and "任务" in chinese and "task" not in chinese
    assert exc.localized("en") == "no task t-1"


def test_a_template_that_does_not_format_is_shown_as_written() -> None:
    # A bad template (or a msgstr whose placeholders do not fit) must not turn a 4xx into a 500.
    assert render("{a} {b", {"a": 1}, "zh_CN") == "{a} {b"
    assert render("{missing}", {"a": 1}, "en") == "{missing}"


def test_a_real_msgspec_message_translates() -> None:
    class Body(msgspec.Struct, forbid_unknown_fields=True):
        count: int

    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.json.decode(b'{"count": "5"}', type=Body, strict=True)
    english = str(caught.value).split(" - at ")[0]
    chinese = translate_validation(english, "zh_CN")
    assert chinese != english
    assert "`int`" in chinese and "`str`" in chinese  # type names are not translated


@pytest.mark.parametrize(
    "message",
    [
        "Expected `int`, got `str`",
        "Expected `float` <= 180.0",
        "Expected `str` of length <= 200",
        "Expected `array` of length >= 2",
        "Expected `array` of at least length 2, got 1",
        "Expected `datetime` with a timezone component",
        "Expected `str` matching regex '^[a-z]+$'",
        "Object missing required field `title`",
        "Object contains unknown field `colour`",
        "Invalid enum value 'purple'",
        "Invalid RFC3339 encoded datetime",
        "Invalid UUID",
        "text must not contain the NUL character (U+0000)",
        "Missing required query parameter 'near' for path /api/v1/x",
    ],
)
def test_each_validation_pattern_has_chinese(message: str) -> None:
    chinese = translate_validation(message, "zh_CN")
    assert chinese != message
    assert re.search(r"[\u4e00-\u9fff]", chinese)
    assert translate_validation(message, "en") != "" and translate_validation(message, "en")


def test_validation_patterns_fill_their_templates() -> None:
    for pattern, template in VALIDATION_MESSAGES:
        assert _placeholders(template) <= set(pattern.groupindex), template


def test_term_parameters_are_translated_and_others_are_not() -> None:
    exc = InvalidInput(
        N_("the {what} is outside your command area"), what=Term(N_("task")), field="x"
    )
    assert "任务" in exc.localized("zh_CN")
    plain = InvalidInput(N_("the {what} is outside your command area"), what="task")
    assert "task" in plain.localized("zh_CN")
