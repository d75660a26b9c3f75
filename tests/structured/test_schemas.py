"""check_schema: every schema xgrammar cannot enforce exactly is refused by keyword and place;
every accepted one is enforced (checked against xgrammar itself, which vLLM compiles it with)."""

from __future__ import annotations

import datetime
import enum
import json
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal

import pytest
import xgrammar as xgr
import xgrammar.testing as testing
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, Field

from server.errors import InvalidJsonSchemaError, InvalidRequestError
from server.structured.schemas import (
    MAX_ENUM_VALUES,
    MAX_JSON_NESTING,
    MAX_NESTING,
    MAX_PROPERTIES,
    MAX_SCHEMA_BYTES,
    SUPPORTED_FORMATS,
    check_pattern,
    check_schema,
)

WHERE = "response_format.json_schema.schema"


def refusal(schema: object, *, where: str = WHERE, name: str | None = "event") -> str:
    """The message `check_schema` refuses `schema` with; asserts the error's shape too."""
    with pytest.raises(InvalidJsonSchemaError) as caught:
        check_schema(schema, where=where, name=name)
    error = caught.value
    assert error.status_code == 400
    assert error.code == "invalid_json_schema"
    assert error.param is not None
    assert error.param.startswith(where)
    prefix = where
    if name is not None:
        prefix = f"{'function' if where.startswith('tools') else 'response_format'} '{name}'"
    assert error.message.startswith(f"Invalid schema for {prefix}: ")
    return f"{error.param}\n{error.message}"


def obj(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A strict object schema: every property required, no others."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
        **extra,
    }


# -- refused: (schema, pointer of the offending subschema, keyword named) ------------------------

STR = {"type": "string"}
REFUSED: list[tuple[str, dict[str, Any], str, str]] = [
    ("not", obj({"a": {"not": STR}}), "/properties/a", "not"),
    ("if", obj({"a": {"if": STR, "then": {"maxLength": 2}}}), "/properties/a", "if"),
    ("then", {"then": STR}, "", "then"),
    ("else", {"else": STR}, "", "else"),
    ("allOf-2", obj({"a": {"allOf": [STR, {"enum": ["y"]}]}}), "/properties/a", "allOf"),
    (
        "dependentRequired",
        obj({"a": STR}, dependentRequired={"a": ["b"]}),
        "",
        "dependentRequired",
    ),
    ("dependentSchemas", obj({"a": STR}, dependentSchemas={"a": {}}), "", "dependentSchemas"),
    (
        "dependencies",
        {"$schema": "http://json-schema.org/draft-07/schema#", **obj({"a": STR})}
        | {"dependencies": {"a": ["a"]}},
        "",
        "dependencies",
    ),
    (
        "unevaluatedProperties",
        obj({"a": STR}) | {"unevaluatedProperties": False},
        "",
        "unevaluatedProperties",
    ),
    (
        "unevaluatedItems",
        {"type": "array", "prefixItems": [STR], "unevaluatedItems": False},
        "",
        "unevaluatedItems",
    ),
    (
        "uniqueItems",
        obj({"tags": {"type": "array", "items": STR, "uniqueItems": True}}),
        "/properties/tags",
        "uniqueItems",
    ),
    ("contains", {"type": "array", "contains": STR}, "", "contains"),
    ("minContains", {"type": "array", "minContains": 2}, "", "minContains"),
    ("maxContains", {"type": "array", "maxContains": 2}, "", "maxContains"),
    (
        "multipleOf-integer",
        obj({"n": {"type": "integer", "multipleOf": 5}}),
        "/properties/n",
        "multipleOf",
    ),
    ("multipleOf-number", {"type": "number", "multipleOf": 0.5}, "", "multipleOf"),
    (
        "patternProperties+properties",
        {"type": "object", "properties": {"a": STR}, "patternProperties": {"^b$": STR}},
        "",
        "patternProperties",
    ),
    (
        "patternProperties-2",
        {"type": "object", "patternProperties": {"^a$": STR, "^b$": STR}},
        "",
        "patternProperties",
    ),
    (
        "propertyNames+properties",
        {"type": "object", "properties": {"a": STR}, "propertyNames": {"maxLength": 3}},
        "",
        "propertyNames",
    ),
    (
        "propertyNames+patternProperties",
        {"type": "object", "patternProperties": {"^a+$": STR}, "propertyNames": {"maxLength": 3}},
        "",
        "propertyNames",
    ),
    (
        "format-binary",
        obj({"f": {"type": "string", "format": "binary"}}),
        "/properties/f",
        "format",
    ),
    ("format-regex", {"type": ["string", "null"], "format": "regex"}, "", "format"),
    ("pattern+maxLength", {"type": "string", "pattern": "^a+$", "maxLength": 3}, "", "maxLength"),
    ("format+minLength", {"type": "string", "format": "email", "minLength": 3}, "", "minLength"),
    ("pattern+format", {"type": "string", "format": "date", "pattern": "^2024"}, "", "pattern"),
    (
        "propertyNames-pattern+maxLength",
        {"type": "object", "propertyNames": {"pattern": "^a+$", "maxLength": 2}},
        "/propertyNames",
        "maxLength",
    ),
    ("$ref-remote", obj({"a": {"$ref": "https://example.com/a.json"}}), "/properties/a", "$ref"),
    ("$ref-anchor", {"$ref": "#a", "$defs": {"a": {"$anchor": "a", **STR}}}, "", "$ref"),
    ("$ref-nowhere", obj({"a": {"$ref": "#/$defs/B"}}), "/properties/a", "$ref"),
    (
        "$ref-into-array",
        {"type": "array", "prefixItems": [STR], "items": {"$ref": "#/prefixItems/0"}},
        "/items",
        "$ref",
    ),
    ("$ref-to-false", {"$ref": "#/$defs/F", "$defs": {"F": False}}, "", "$ref"),
    ("$ref-escaped", {"$ref": "#/$defs/a~1b", "$defs": {"a/b": STR}}, "", "$ref"),
    ("$ref-percent", {"$ref": "#/$defs/a%20b", "$defs": {"a b": STR}}, "", "$ref"),
    (
        "lookahead",
        obj({"p": {"type": "string", "pattern": "^(?=.*[A-Z]).+$"}}),
        "/properties/p",
        "pattern",
    ),
    ("negative-lookahead", {"type": "string", "pattern": "^(?!a).$"}, "", "pattern"),
    ("lookbehind", {"type": "string", "pattern": "(?<=a)b"}, "", "pattern"),
    ("negative-lookbehind", {"type": "string", "pattern": "(?<!a)b"}, "", "pattern"),
    ("backreference", {"type": "string", "pattern": "^(a)\\1$"}, "", "pattern"),
    ("python-backreference", {"type": "string", "pattern": "^(?P<x>a)(?P=x)$"}, "", "pattern"),
    ("unknown-escape", {"type": "string", "pattern": "\\Aab\\Z"}, "", "pattern"),
    ("word-boundary", {"type": "string", "pattern": "^a\\b"}, "", "pattern"),
    ("anchor-inside", {"type": "string", "pattern": "a^b"}, "", "pattern"),
    ("anchor-in-group", {"type": "string", "pattern": "(^a|^b)"}, "", "pattern"),
    ("flags", {"type": "string", "pattern": "(?i)^ab$"}, "", "pattern"),
    (
        "patternProperties-lookahead",
        {"type": "object", "patternProperties": {"^(?!x).+$": STR}},
        "",
        "patternProperties",
    ),
    # what xgrammar drops beside the one keyword it reads a schema through
    (
        "beside-anyOf",
        obj({"a": {"type": "string", "anyOf": [{"maxLength": 2}]}}),
        "/properties/a",
        "type",
    ),
    ("beside-oneOf", {"oneOf": [STR, {"type": "null"}], "maxLength": 2}, "", "maxLength"),
    ("beside-allOf", {"allOf": [STR], "maxLength": 2}, "", "maxLength"),
    ("beside-$ref", {"$ref": "#/$defs/s", "maxLength": 2, "$defs": {"s": STR}}, "", "maxLength"),
    ("beside-enum", {"type": "string", "enum": ["a", "bb"], "maxLength": 1}, "", "maxLength"),
    ("enum-beside-const", {"const": "a", "enum": ["b"]}, "", "enum"),
    ("anyOf-and-oneOf", {"anyOf": [STR], "oneOf": [STR]}, "", "oneOf"),
    ("enum-off-type", {"type": "integer", "enum": [1, "a"]}, "", "enum"),
    ("const-off-type", {"type": "integer", "const": 1.5}, "", "const"),
    ("enum-empty", {"enum": []}, "", "enum"),
    # type keywords in a schema without "type" (xgrammar then accepts any value)
    ("untyped-maxLength", obj({"a": {"maxLength": 2}}), "/properties/a", "maxLength"),
    ("untyped-minimum", {"minimum": 3}, "", "minimum"),
    ("untyped-minItems", {"minItems": 2}, "", "minItems"),
    ("untyped-required", {"required": ["a"]}, "", "required"),
    ("untyped-format", {"format": "date"}, "", "format"),
    (
        "required-not-listed",
        {"type": "object", "required": ["a"], "additionalProperties": True},
        "",
        "required",
    ),
    ("oneOf-overlap", {"oneOf": [{"type": "integer"}, {"type": "number"}]}, "", "oneOf"),
    (
        "oneOf-objects",
        {"oneOf": [obj({"a": STR}), {"type": "object", "properties": {"b": STR}}]},
        "",
        "oneOf",
    ),
    ("integer-fraction", {"type": "integer", "minimum": 1.5}, "", "minimum"),
    ("integer-huge", {"type": "integer", "maximum": 2**64}, "", "maximum"),
    (
        "draft-04-exclusive",
        {"$schema": "http://json-schema.org/draft-04/schema#", "type": "integer", "minimum": 0}
        | {"exclusiveMinimum": True},
        "",
        "exclusiveMinimum",
    ),
    (
        "items-tuple",
        {"$schema": "http://json-schema.org/draft-07/schema#", "type": "array", "items": [STR]},
        "",
        "items",
    ),
    ("nested-$id", obj({"a": {"$id": "https://example.com/a", **STR}}), "/properties/a", "$id"),
    ("false-property", {"type": "object", "properties": {"a": False}}, "/properties/a", "false"),
    ("false-branch", {"anyOf": [STR, False]}, "/anyOf/1", "false"),
    ("true-prefixItem", {"type": "array", "prefixItems": [True]}, "/prefixItems/0", "true"),
]


@pytest.mark.parametrize(
    ("schema", "pointer", "keyword"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_refused_by_keyword_and_place(schema: dict[str, Any], pointer: str, keyword: str) -> None:
    param, message = refusal(schema).split("\n", 1)
    assert param == WHERE + pointer
    assert f"'{keyword}'" in message
    assert f"#{pointer}" in message


def test_refusal_message_reads_like_openai() -> None:
    schema = obj({"tags": {"type": "array", "items": STR, "uniqueItems": True}})
    assert refusal(schema).split("\n", 1)[1] == (
        "Invalid schema for response_format 'event': keyword 'uniqueItems' at #/properties/tags "
        "is not supported by the structured-output engine (xgrammar); remove it or check it "
        "after generation."
    )


# -- nested places ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "pointer"),
    [
        (
            {"$ref": "#/$defs/Tag", "$defs": {"Tag": obj({"t": {"not": STR}})}},
            "/$defs/Tag/properties/t",
        ),
        (
            {"type": "object", "definitions": {"T": {"type": "string", "format": "binary"}}},
            "/definitions/T",
        ),
        (
            obj({"tags": {"type": "array", "items": {"type": "array", "uniqueItems": True}}}),
            "/properties/tags/items",
        ),
        (obj({"x": {"anyOf": [{"type": "null"}, {"not": STR}]}}), "/properties/x/anyOf/1"),
        (
            obj({"x": {"type": "array", "prefixItems": [STR, {"if": STR}]}}),
            "/properties/x/prefixItems/1",
        ),
        (
            obj({"m": {"type": "object", "additionalProperties": {"not": STR}}}),
            "/properties/m/additionalProperties",
        ),
        (obj({"a/b~c": {"not": STR}}), "/properties/a~1b~0c"),
        # reached only through a `$ref` into a place that is no schema keyword
        (
            obj({"a": {"$ref": "#/components/A"}}) | {"components": {"A": {"not": STR}}},
            "/components/A",
        ),
    ],
)
def test_nested_places_are_named(schema: dict[str, Any], pointer: str) -> None:
    param, message = refusal(schema).split("\n", 1)
    assert param == WHERE + pointer
    assert f" at #{pointer}" in message


def test_tool_parameters_name_the_tool_field() -> None:
    where = "tools[2].function.parameters"
    schema = obj({"when": {"type": "string", "pattern": "^(?=2)"}})
    param, message = refusal(schema, where=where, name=None).split("\n", 1)
    assert param == "tools[2].function.parameters/properties/when"
    assert message.startswith(
        "Invalid schema for tools[2].function.parameters: keyword 'pattern' at #/properties/when:"
    )


def test_tool_parameters_with_a_name_name_the_function() -> None:
    schema = obj({"n": {"type": "number", "multipleOf": 2}})
    where = "tools[0].function.parameters"
    param, message = refusal(schema, where=where, name="get_weather").split("\n", 1)
    assert param == "tools[0].function.parameters/properties/n"
    assert message.startswith("Invalid schema for function 'get_weather': keyword 'multipleOf'")


# -- malformed ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "pointer", "problem"),
    [
        ({"type": "foo"}, "/type", "'foo' is not valid under any of the given schemas"),
        ({"properties": 3}, "/properties", "3 is not of type 'object'"),
        (
            obj({"a": {"type": "string", "minLength": -1}}),
            "/properties/a/minLength",
            "-1 is less than",
        ),
        ({"type": "string", "pattern": "(unclosed"}, "/pattern", "is not a 'regex'"),
        # Python's `re` (which jsonschema checks "regex" with) has no `\k<name>`; xgrammar fails.
        ({"type": "string", "pattern": "^(?P<x>a)\\k<x>$"}, "/pattern", "is not a 'regex'"),
        ({"allOf": []}, "/allOf", "should be non-empty"),
    ],
)
def test_malformed_schemas_are_named_as_jsonschema_reports_them(
    schema: dict[str, Any], pointer: str, problem: str
) -> None:
    param, message = refusal(schema).split("\n", 1)
    assert param == WHERE + pointer
    assert f"#{pointer} is malformed: " in message
    assert problem in message


@pytest.mark.parametrize("schema", [[], "object", True, None, 3])
def test_the_root_must_be_an_object(schema: object) -> None:
    param, message = refusal(schema).split("\n", 1)
    assert param == WHERE
    assert "must be a JSON object" in message


# -- limits -------------------------------------------------------------------------------------


def nested_objects(levels: int) -> dict[str, Any]:
    """An object schema whose output nests `levels` objects deep."""
    schema: dict[str, Any] = obj({"leaf": STR})
    for _ in range(levels - 1):
        schema = obj({"child": schema})
    return schema


def test_nesting_up_to_the_limit_is_accepted() -> None:
    check_schema(nested_objects(MAX_NESTING), where=WHERE)
    # arrays count as levels too
    check_schema({"type": "array", "items": nested_objects(MAX_NESTING - 1)}, where=WHERE)


def test_nesting_past_the_limit_is_refused() -> None:
    param, message = refusal(nested_objects(MAX_NESTING + 1)).split("\n", 1)
    pointer = "/properties/child" * MAX_NESTING
    assert param == WHERE + pointer
    assert f"nest {MAX_NESTING + 1} levels deep at #{pointer}" in message
    assert f"limit is {MAX_NESTING}" in message


def test_nesting_counts_through_refs() -> None:
    defs = {f"L{i}": obj({"next": {"$ref": f"#/$defs/L{i + 1}"}}) for i in range(MAX_NESTING)}
    defs[f"L{MAX_NESTING}"] = obj({"leaf": STR})
    message = refusal({"$ref": "#/$defs/L0", "$defs": defs}).split("\n", 1)[1]
    assert "through '$ref'" in message
    assert f"limit is {MAX_NESTING}" in message
    # one level less is fine
    defs[f"L{MAX_NESTING - 1}"] = obj({"leaf": STR})
    check_schema({"$ref": "#/$defs/L0", "$defs": defs}, where=WHERE)


def test_recursive_schemas_are_not_infinitely_deep() -> None:
    tree = {
        "$ref": "#/$defs/T",
        "$defs": {"T": obj({"kids": {"type": "array", "items": {"$ref": "#/$defs/T"}}})},
    }
    check_schema(tree, where=WHERE)


def many_properties(total: int) -> dict[str, Any]:
    """Objects holding about `total` properties in all (short names: under the size cap)."""
    names = [
        f"{a}{b}"
        for a in "abcdefghijklmnopqrstuvwxyz0123456789"
        for b in "abcdefghijklmnopqrstuvwxyz"
    ]
    groups, rest = divmod(total - 5, 900)
    sizes = [900] * groups + [rest]
    inner = {f"o{i}": obj({key: {} for key in names[:size]}) for i, size in enumerate(sizes)}
    return obj(inner)


def test_property_count_limit() -> None:
    schema = many_properties(MAX_PROPERTIES + 1)
    assert len(json.dumps(schema, separators=(",", ":"))) < MAX_SCHEMA_BYTES
    message = refusal(schema).split("\n", 1)[1]
    assert f"more than {MAX_PROPERTIES} properties" in message
    assert f"limit is {MAX_PROPERTIES}" in message


def test_enum_value_limit() -> None:
    check_schema({"type": "integer", "enum": list(range(MAX_ENUM_VALUES))}, where=WHERE)
    split = obj(
        {
            "a": {"type": "integer", "enum": list(range(600))},
            "b": {"type": "integer", "enum": list(range(MAX_ENUM_VALUES - 599))},
        }
    )
    param, message = refusal(split).split("\n", 1)
    assert param == WHERE + "/properties/b"
    assert f"more than {MAX_ENUM_VALUES} enum values" in message


def test_size_limit() -> None:
    schema = {"type": "string", "description": "x" * MAX_SCHEMA_BYTES}
    param, message = refusal(schema).split("\n", 1)
    assert param == WHERE
    assert f"the limit is {MAX_SCHEMA_BYTES} (64 KiB)" in message


def test_raw_nesting_limit() -> None:
    schema: dict[str, Any] = STR
    for _ in range(MAX_JSON_NESTING):
        schema = {"anyOf": [schema]}
    message = refusal(schema).split("\n", 1)[1]
    assert f"deeper than {MAX_JSON_NESTING} levels" in message


# -- accepted, and enforced by xgrammar -------------------------------------------------------


def xgrammar_accepts(schema: dict[str, Any]) -> Callable[[str], bool]:
    """Whether xgrammar, compiling `schema` as vLLM does (strict mode), accepts a JSON text."""
    grammar = xgr.Grammar.from_json_schema(json.dumps(schema), any_whitespace=True)
    return lambda text: bool(testing._is_grammar_accept_string(grammar, text))


def enforce(schema: dict[str, Any], valid: list[str], invalid: list[str]) -> None:
    """Assert that `check_schema` accepts `schema` and that xgrammar accepts each of `valid`
    and rejects each of `invalid`: nothing in the schema is silently dropped."""
    check_schema(schema, where=WHERE, name="event")
    accepts = xgrammar_accepts(schema)
    for text in valid:
        assert accepts(text), f"rejects valid {text}"
    for text in invalid:
        assert not accepts(text), f"accepts invalid {text}"


INT = {"type": "integer"}
ACCEPTED: list[tuple[str, dict[str, Any], list[str], list[str]]] = [
    (
        "nested-objects",
        obj({"a": obj({"b": obj({"c": INT})})}),
        ['{"a": {"b": {"c": 1}}}'],
        ['{"a": {"b": {"c": "1"}}}', '{"a": {"b": {}}}', '{"a": {"b": {"c": 1, "d": 2}}}'],
    ),
    (
        "array-minItems-maxItems",
        {"type": "array", "items": INT, "minItems": 2, "maxItems": 3},
        ["[1, 2]", "[1,2,3]"],
        ["[1]", "[1,2,3,4]", '[1, "2"]'],
    ),
    ("enum", {"type": "string", "enum": ["red", "green"]}, ['"red"'], ['"blue"', "1"]),
    ("enum-mixed", {"enum": ["a", 1, None]}, ['"a"', "1", "null"], ['"b"', "2", "true"]),
    # xgrammar emits a structured const as compact JSON text (stricter than the schema: fine)
    ("const", {"const": {"a": [1, 2]}}, ['{"a":[1,2]}'], ['{"a":[1]}', '{"a":[1,2,3]}']),
    (
        "defs-ref",
        {"$ref": "#/$defs/P", "$defs": {"P": obj({"n": INT})}},
        ['{"n": 1}'],
        ['{"n": "x"}', "{}"],
    ),
    (
        "definitions-ref",
        obj({"p": {"$ref": "#/definitions/P"}}) | {"definitions": {"P": INT}},
        ['{"p": 1}'],
        ['{"p": 1.5}'],
    ),
    (
        "recursive-ref",
        {
            "$ref": "#/$defs/T",
            "$defs": {
                "T": obj({"v": INT, "kids": {"type": "array", "items": {"$ref": "#/$defs/T"}}})
            },
        },
        ['{"v": 1, "kids": [{"v": 2, "kids": []}]}'],
        ['{"v": 1, "kids": [{"v": 2}]}', '{"v": 1, "kids": [1]}'],
    ),
    (
        "integer-bounds",
        {"type": "integer", "minimum": 1, "maximum": 5},
        ["1", "5"],
        ["0", "6", "2.5"],
    ),
    (
        "exclusive-bounds",
        {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        ["0.5"],
        ["0", "1", "-0.5"],
    ),
    ("string-maxLength", {"type": "string", "maxLength": 3}, ['"abc"', '""'], ['"abcd"']),
    ("string-minLength", {"type": "string", "minLength": 2}, ['"ab"'], ['"a"']),
    (
        "string-pattern",
        {"type": "string", "pattern": "^[a-z]+-\\d{2}$"},
        ['"ab-12"'],
        ['"AB-12"', '"ab-1"'],
    ),
    ("pattern-alternatives", {"type": "string", "pattern": "^a$|^b$"}, ['"a"', '"b"'], ['"ab"']),
    (
        "anyOf-null",
        obj({"note": {"anyOf": [STR, {"type": "null"}]}}),
        ['{"note": "x"}', '{"note": null}'],
        ['{"note": 1}', "{}"],
    ),
    ("type-list", {"type": ["string", "null"], "maxLength": 2}, ['"ab"', "null"], ['"abc"', "1"]),
    (
        "prefixItems",
        {"type": "array", "prefixItems": [INT, STR], "items": False},
        ['[1, "a"]'],
        ['["a", 1]', '[1, "a", 2]'],
    ),
    (
        "additionalProperties-schema",
        {"type": "object", "additionalProperties": INT, "minProperties": 1, "maxProperties": 2},
        ['{"a": 1}', '{"a": 1, "b": 2}'],
        ["{}", '{"a": "x"}', '{"a": 1, "b": 2, "c": 3}'],
    ),
    (
        "optional-properties",
        {
            "type": "object",
            "properties": {"a": INT, "b": STR},
            "required": ["a"],
            "additionalProperties": False,
        },
        ['{"a": 1}', '{"a": 1, "b": "x"}'],
        ["{}", '{"b": "x"}', '{"a": 1, "c": 1}'],
    ),
    (
        "oneOf-types",
        {"oneOf": [STR, INT, {"type": "null"}]},
        ['"a"', "1", "null"],
        ["true", "1.5"],
    ),
    (
        "oneOf-discriminated-refs",
        {
            "oneOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}],
            "discriminator": {"propertyName": "kind"},
            "$defs": {
                "Cat": obj({"kind": {"const": "cat"}, "lives": INT}),
                "Dog": obj({"kind": {"const": "dog"}, "good": {"type": "boolean"}}),
            },
        },
        ['{"kind": "cat", "lives": 9}', '{"kind": "dog", "good": true}'],
        ['{"kind": "cat", "good": true}', '{"kind": "cow", "lives": 1}'],
    ),
    ("allOf-one", {"allOf": [{"type": "string", "maxLength": 2}]}, ['"ab"'], ['"abc"', "1"]),
    (
        "propertyNames",
        {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"}, "additionalProperties": INT},
        ['{"ab": 1}'],
        ['{"AB": 1}', '{"ab": "x"}'],
    ),
    (
        "patternProperties",
        {"type": "object", "patternProperties": {"^x[0-9]+$": INT}},
        ['{"x1": 1}'],
        ['{"x1": "s"}', '{"y": 1}'],
    ),
    (
        "enum-with-type-and-annotations",
        {"type": "integer", "enum": [1, 2], "title": "Prio", "description": "d", "default": 1},
        ["1"],
        ["3", '"1"'],
    ),
    (
        "uniqueItems-false",
        {"type": "array", "items": INT, "uniqueItems": False},
        ["[1, 1]"],
        ['["a"]'],
    ),
    (
        "unknown-keywords",
        {"type": "string", "maxLength": 2, "x-extension": {"not": 1}, "nullable": True},
        ['"ab"'],
        ['"abc"', "null"],
    ),
    (
        "draft-07",
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            **obj({"a": {"$ref": "#/definitions/A"}}),
        }
        | {"definitions": {"A": {"type": "integer", "exclusiveMinimum": 0}}},
        ['{"a": 1}'],
        ['{"a": 0}'],
    ),
]


@pytest.mark.parametrize(
    ("schema", "valid", "invalid"),
    [case[1:] for case in ACCEPTED],
    ids=[case[0] for case in ACCEPTED],
)
def test_accepted_schemas_are_enforced(
    schema: dict[str, Any], valid: list[str], invalid: list[str]
) -> None:
    enforce(schema, valid, invalid)


FORMAT_EXAMPLES = {
    "email": "a@b.co",
    "date": "2024-01-31",
    "time": "12:00:00Z",
    "date-time": "2024-01-31T12:00:00Z",
    "duration": "P1D",
    "ipv4": "10.0.0.1",
    "ipv6": "::1",
    "hostname": "a.example",
    "uuid": "123e4567-e89b-12d3-a456-426614174000",
    "uri": "https://a.example/b",
    "uri-reference": "/b",
    "uri-template": "/a/{b}",
    "json-pointer": "/a/b",
    "relative-json-pointer": "0/a",
}


@pytest.mark.parametrize("fmt", sorted(SUPPORTED_FORMATS))
def test_supported_formats_are_enforced(fmt: str) -> None:
    enforce(
        {"type": "string", "format": fmt},
        [json.dumps(FORMAT_EXAMPLES[fmt])],
        ['"not at all that ^^"', "1"],
    )


# -- whole-output regular expressions (structured_outputs.regex) ----------------------------


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("^(?=a).*$", "lookahead"),
        ("(?<=a)b", "lookbehind"),
        ("(a)\\1", "backreference"),
        ("a\\Zb", "escape '\\Z'"),
        ("a^b", "anchor '^'"),
        ("(unclosed", "not a valid regular expression"),
        ("a\x00b", "NUL"),
    ],
)
def test_check_pattern_refuses_what_xgrammar_misreads(pattern: str, problem: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        check_pattern(pattern, where="structured_outputs.regex")
    assert caught.value.param == "structured_outputs.regex"
    assert caught.value.message.startswith(
        "Invalid regular expression for structured_outputs.regex: "
    )
    assert problem in caught.value.message


@pytest.mark.parametrize(
    "pattern", ["[a-z]+", "^\\d{3}-\\d{4}$", "(yes|no)", "^a$|^b$", "\\u00e9+"]
)
def test_check_pattern_accepts_plain_regexes(pattern: str) -> None:
    check_pattern(pattern, where="structured_outputs.regex")


# -- the strict schemas the openai client builds from pydantic models -----------------------------


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Address(BaseModel):
    street: str = Field(max_length=40)
    zip: str = Field(pattern=r"^\d{5}$")


class Tree(BaseModel):
    value: int
    children: list[Tree]


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(ge=0, le=9)


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Event(BaseModel):
    id: uuid.UUID
    when: datetime.datetime
    day: datetime.date
    color: Color
    priority: Priority
    mode: Literal["a", "b"]
    note: str | None
    score: float = Field(gt=0, lt=1)
    tags: list[list[str]]
    address: Address
    other: Address | None
    tree: Tree
    pet: Annotated[Cat | Dog, Field(discriminator="kind")]
    any_pet: Cat | Dog
    count: int | None = Field(default=None, description="optional in pydantic, required here")


EVENT = Event(
    id=uuid.UUID("123e4567-e89b-12d3-a456-426614174000"),
    when=datetime.datetime(2024, 1, 31, 12, 0, tzinfo=datetime.UTC),
    day=datetime.date(2024, 1, 31),
    color=Color.RED,
    priority=Priority.HIGH,
    mode="a",
    note=None,
    score=0.5,
    tags=[["x", "y"], []],
    address=Address(street="Main St", zip="12345"),
    other=None,
    tree=Tree(value=1, children=[Tree(value=2, children=[])]),
    pet=Cat(kind="cat", lives=9),
    any_pet=Dog(kind="dog", good=True),
    count=3,
)


def event_json(**changes: Any) -> str:
    """EVENT as JSON text, with some fields replaced by raw JSON values."""
    data = json.loads(EVENT.model_dump_json())
    data.update(changes)
    return json.dumps(data)


@pytest.mark.parametrize(
    "invalid",
    [
        {"priority": 3},
        {"color": "blue"},
        {"mode": "c"},
        {"score": 1},
        {"address": {"street": "Main St", "zip": "1234"}},
        {"address": {"street": "x" * 41, "zip": "12345"}},
        {"pet": {"kind": "cat", "lives": 10}},
        {"pet": {"kind": "cow", "lives": 1}},
        {"tree": {"value": 1, "children": [{"value": "2", "children": []}]}},
        {"when": "yesterday"},
        {"id": "not-a-uuid"},
        {"tags": [["x", 1]]},
        {"note": 1},
    ],
    ids=lambda change: next(iter(change)),
)
def test_openai_strict_schema_from_pydantic_is_enforced(invalid: dict[str, Any]) -> None:
    schema = to_strict_json_schema(Event)
    enforce(schema, [event_json(), EVENT.model_dump_json()], [event_json(**invalid)])


@pytest.mark.parametrize("model", [Address, Tree, Cat, Event])
def test_openai_strict_schemas_are_accepted(model: type[BaseModel]) -> None:
    check_schema(to_strict_json_schema(model), where=WHERE, name=model.__name__)


# -- why the refusals: xgrammar really lets these violations through ---------------------------


@pytest.mark.parametrize(
    ("schema", "violation"),
    [
        ({"not": STR}, '"abc"'),
        ({"type": "string", "pattern": "^(?=.*[A-Z]).+$"}, '"abc"'),
        ({"type": "string", "pattern": "\\Aab"}, '"Aab"'),
        ({"type": "string", "pattern": "a^b"}, '"ab"'),
        ({"allOf": [STR, {"enum": ["yes", "no"]}]}, "1"),
        (obj({"a": INT}) | {"dependentRequired": {"a": ["b"]}}, '{"a": 1}'),
        ({"type": "number", "multipleOf": 0.5}, "1.3"),
        ({"maxLength": 2}, '"abc"'),
        ({"type": "object", "required": ["a"], "additionalProperties": True}, "{}"),
        ({"anyOf": [STR, INT], "maxLength": 2}, '"abc"'),
        ({"$ref": "#/$defs/s", "maxLength": 2, "$defs": {"s": STR}}, '"abc"'),
        ({"type": "string", "enum": ["a", "bb"], "maxLength": 1}, '"bb"'),
        ({"type": "integer", "enum": ["a", 1]}, '"a"'),
        ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, "1"),
        ({"type": "string", "format": "date", "pattern": "^2024"}, '"2023-01-01"'),
        ({"type": "string", "pattern": "^a+$", "maxLength": 3}, '"aaaa"'),
        ({"$ref": "https://example.com/s.json"}, "1"),
    ],
)
def test_xgrammar_lets_refused_schemas_be_violated(schema: dict[str, Any], violation: str) -> None:
    """If xgrammar starts enforcing one of these, its rule in schemas.py can be relaxed."""
    with pytest.raises(InvalidJsonSchemaError):
        check_schema(schema, where=WHERE)
    assert xgrammar_accepts(schema)(violation)
