"""Refuse, before any token is generated, the JSON schemas the engine cannot enforce exactly.

vLLM compiles `response_format` and tool-parameter schemas with xgrammar, which silently ignores
some keywords: `not`, `if`/`then`/`else`, multi-branch `allOf`, regex lookaheads, keywords next to
`$ref`/`enum`/`anyOf`, type keywords in a schema without `type`, and more. Such requests would get
HTTP 200 with output that violates the schema. vLLM itself refuses only part of them, with a
message that names neither the keyword nor its place. `check_schema` walks the schema once and
raises `InvalidJsonSchemaError` naming the keyword and its JSON pointer, OpenAI-style.

What xgrammar 0.2.8 does was measured with `xgrammar.testing._is_grammar_accept_string` (strict
mode, as vLLM compiles); the comments say what. Its dispatch is the key to most rules: a schema is
read through ONE keyword, the first of `$ref`, `const`, `enum`, `anyOf`, `oneOf`, `allOf`, then
`type` (or a type inferred from `properties`/`items`); every other keyword beside it is dropped.

Pure Python, no engine import: it runs on every request. The verdict for one schema text is
cached, since clients resend the same tools and formats.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from typing import Any

# jsonschema ships no type stubs (types-jsonschema is not a dependency).
from jsonschema import Draft202012Validator, SchemaError  # type: ignore[import-untyped]
from jsonschema.validators import validator_for  # type: ignore[import-untyped]

from server.errors import InvalidJsonSchemaError, InvalidRequestError

# Objects/arrays nested in the output (OpenAI: "14 levels of nesting exceeds limit of 10").
MAX_NESTING = 10
# Properties in all `properties` of the schema (OpenAI's limit).
MAX_PROPERTIES = 5_000
# Values in all `enum`s of the schema.
MAX_ENUM_VALUES = 1_000
# The schema as compact UTF-8 JSON text.
MAX_SCHEMA_BYTES = 64 * 1024
# Raw nesting of the schema document itself: vLLM's own cap (MAX_STRUCTURED_OUTPUT_JSON_NESTING);
# it also keeps the recursive checks here far from Python's recursion limit.
MAX_JSON_NESTING = 64

# The formats xgrammar enforces on strings (vLLM's STRING_SUPPORTED_FORMATS); each was measured
# to reject a non-matching string. Others (e.g. `binary`, `regex`, `int32`) are ignored.
SUPPORTED_FORMATS = frozenset(
    {
        "email",
        "date",
        "time",
        "date-time",
        "duration",
        "ipv4",
        "ipv6",
        "hostname",
        "uuid",
        "uri",
        "uri-reference",
        "uri-template",
        "json-pointer",
        "relative-json-pointer",
    }
)

_ENGINE = "the structured-output engine (xgrammar)"
_REMOVE = "remove it or check it after generation"

# Keywords xgrammar ignores wherever they are (measured: `not`, `if`/`then`/`else`,
# `dependentRequired` accept violating values; `multipleOf` is ignored on numbers and, with bounds,
# on integers; `contains`/`minContains`/`uniqueItems` are ignored or mis-read, xgrammar#968).
# `unevaluated*` get their applicator semantics (through `anyOf`/`$ref`) wrong: refused too.
_REFUSED = (
    "not",
    "if",
    "then",
    "else",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "unevaluatedProperties",
    "unevaluatedItems",
    "uniqueItems",
    "contains",
    "minContains",
    "maxContains",
    "multipleOf",
    "$dynamicRef",
    "$recursiveRef",
)

# The keywords xgrammar reads one at a time, in its order of precedence.
_PRIMARY = ("$ref", "const", "enum", "anyOf", "oneOf", "allOf")
_BRANCHES = ("anyOf", "oneOf", "allOf")

# Keywords that constrain values of one type; the type named is what to add when it is missing.
_TYPE_KEYWORDS: dict[str, str] = {
    **dict.fromkeys(("minLength", "maxLength", "pattern", "format"), "string"),
    **dict.fromkeys(("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"), "number"),
    **dict.fromkeys(("items", "prefixItems", "minItems", "maxItems"), "array"),
    **dict.fromkeys(
        (
            "properties",
            "required",
            "additionalProperties",
            "patternProperties",
            "propertyNames",
            "minProperties",
            "maxProperties",
        ),
        "object",
    ),
}
# Every keyword that constrains a value: beside a primary keyword, each is dropped.
_ASSERTIONS = frozenset({"type", *_PRIMARY, *_TYPE_KEYWORDS})

# Escapes xgrammar reads as ECMA-262 does. It matches other letters literally (`\A`, `\Z`, `\q`
# were measured: "not recognized; matching the character literally") and fails on `\b`, `\p`.
_REGEX_ESCAPES = frozenset("dDwWsStnvfrxuc0")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class _Refusal(Exception):
    """What cannot be enforced (`detail`) and the JSON pointer of the schema it is in."""

    def __init__(self, detail: str, pointer: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.pointer = pointer


def check_schema(schema: object, *, where: str, name: str | None = None) -> None:
    """Raise InvalidJsonSchemaError when `schema` cannot be enforced exactly as written.

    `where` is the request field holding the schema (e.g. "tools.2.function.parameters"); the
    error's `param` is `where` followed by the JSON pointer of the offending subschema. `name` is
    the response format's (or, under "tools", the function's) name, quoted in the message the
    way OpenAI does.
    """
    problem = _problem(schema)
    if problem is not None:
        detail, pointer = problem
        subject = where
        if name is not None:
            subject = f"{'function' if where.startswith('tools') else 'response_format'} '{name}'"
        raise InvalidJsonSchemaError(f"Invalid schema for {subject}: {detail}", f"{where}{pointer}")


def check_pattern(pattern: str, *, where: str) -> None:
    """Raise InvalidRequestError when the regular expression `pattern` (a whole-output regex,
    e.g. `structured_outputs.regex`) uses what the engine ignores or misreads.

    xgrammar reads it with the converter of a schema's `pattern` (measured: middle anchors and
    unknown escapes are ignored alike; a lookahead fails to compile here instead of being ignored).
    """
    # vLLM refuses a NUL too, before its native regex code sees it.
    problem = "it contains a NUL character" if "\x00" in pattern else _regex_problem(pattern)
    if problem:
        raise InvalidRequestError(f"Invalid regular expression for {where}: {problem}.", where)


def _problem(schema: object) -> tuple[str, str] | None:
    """The refusal for `schema` as (detail, pointer), or None when it can be enforced."""
    if not isinstance(schema, dict):
        return f"the schema must be a JSON object, not {_json_type_name(schema)}.", ""
    try:
        text = json.dumps(schema, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except RecursionError:
        return f"the schema nests deeper than {MAX_JSON_NESTING} levels.", ""
    except (TypeError, ValueError) as exc:
        return f"the schema is not JSON ({exc}).", ""
    size = len(text.encode())
    if size > MAX_SCHEMA_BYTES:
        return (
            f"the schema is {size} bytes of JSON; the limit is {MAX_SCHEMA_BYTES} (64 KiB).",
            "",
        )
    return _problem_in_text(text)


@functools.lru_cache(maxsize=128)
def _problem_in_text(text: str) -> tuple[str, str] | None:
    """`_problem` for a schema's compact JSON text; cached, as clients resend the same schemas."""
    schema = json.loads(text)
    try:
        _check_json_nesting(schema)
        _check_meta_schema(schema)
        _Walker(schema).run()
    except _Refusal as refusal:
        return refusal.detail, refusal.pointer
    except RecursionError:
        # `$ref` chains can nest deeper than the document itself.
        return "the schema nests too deeply (through '$ref') to be checked.", ""
    return None


def _check_json_nesting(schema: dict[str, Any]) -> None:
    """Refuse a document nested deeper than MAX_JSON_NESTING, breadth first (no recursion)."""
    level: list[tuple[Any, str]] = [(schema, "")]
    for depth in range(1, MAX_JSON_NESTING + 1):
        level = [
            (child, f"{pointer}/{_escape(str(key))}")
            for node, pointer in level
            for key, child in (node.items() if isinstance(node, dict) else enumerate(node))
            if isinstance(child, (dict, list))
        ]
        if not level:
            return
        if depth == MAX_JSON_NESTING:
            raise _Refusal(
                f"the schema's JSON nests deeper than {MAX_JSON_NESTING} levels at "
                f"#{level[0][1]}; the limit is {MAX_JSON_NESTING}.",
                level[0][1],
            )


def _check_meta_schema(schema: dict[str, Any]) -> None:
    """Refuse a malformed schema, as jsonschema reports it against the schema's meta-schema."""
    try:
        validator_for(schema, default=Draft202012Validator).check_schema(schema)
    except SchemaError as error:
        path = [str(part) for part in error.absolute_path]
        pointer = "".join(f"/{_escape(part)}" for part in path)
        # Name the keyword whose value is wrong (the last name in the path that is not an
        # array index), as every other refusal does.
        keyword = next((part for part in reversed(path) if not part.isdigit()), None)
        what = f"keyword '{keyword}' at #{pointer}" if keyword else f"#{pointer}"
        raise _Refusal(f"{what} is malformed: {error.message}.", pointer) from None


class _Walker:
    """One walk over every subschema; raises _Refusal at the first one that cannot be enforced."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.properties = 0
        self.enum_values = 0
        self.walked: set[int] = set()
        self.refs: dict[str, Any] = {}  # every `$ref` seen -> its target
        self.heights: dict[str, int] = {}  # `$ref` -> output nesting of its target
        self.resolving: set[str] = set()

    def run(self) -> None:
        """Walk the root, then what `$ref`s point to outside any schema keyword."""
        self.schema(self.root, "", 0)
        # e.g. "#/components/schemas/A": walked from where it is, since the engine will use it.
        while pending := [
            ref
            for ref, target in self.refs.items()
            if isinstance(target, dict) and id(target) not in self.walked
        ]:
            for ref in pending:
                self.schema(self.refs[ref], ref[1:], 0, allow_false=True)

    # -- one subschema ------------------------------------------------------------------------

    def schema(
        self,
        node: Any,
        pointer: str,
        level: int,
        *,
        default_type: str | None = None,
        allow_false: bool = False,
        allow_true: bool = True,
    ) -> None:
        """Check `node` (at `pointer`, inside `level` objects/arrays of the output) and below."""
        if isinstance(node, bool):
            # Measured: `false` fails to compile except as `items`/`additionalProperties`, and
            # `true` fails inside `prefixItems` and `propertyNames`.
            if not (allow_true if node else allow_false):
                raise _Refusal(
                    f"a '{str(node).lower()}' schema at #{pointer} is not supported by {_ENGINE} "
                    "in this place; write it as a schema object.",
                    pointer,
                )
            return
        if not isinstance(node, dict) or id(node) in self.walked:
            return  # a malformed node was reported by the meta-schema check
        self.walked.add(id(node))
        _check_refused(node, pointer)
        primary = next((key for key in _PRIMARY if key in node), None)
        types = None if primary else _types(node, default_type)
        if primary:
            self.primary(node, pointer, level, primary)
        elif types is None:
            _check_untyped(node, pointer)
        else:
            self.typed(node, pointer, level, types)
        for key in ("$defs", "definitions"):
            defs = node.get(key)
            if isinstance(defs, dict):
                for def_name, sub in defs.items():
                    # Not output where they sit: their nesting counts where a `$ref` uses them.
                    self.schema(sub, f"{pointer}/{key}/{_escape(def_name)}", 0, allow_false=True)

    def primary(self, node: dict[str, Any], pointer: str, level: int, primary: str) -> None:
        """A schema the engine reads through `primary` alone: refuse what it would drop."""
        for key in node:
            if key in _ASSERTIONS and key != primary:
                if key == "type" and primary in ("const", "enum"):
                    continue  # checked against the values below
                raise _Refusal(_ignored_beside(key, pointer, primary), pointer)
        if primary == "$ref":
            self.ref(node["$ref"], pointer, level)
        elif primary in ("const", "enum"):
            self.values(node, pointer, primary)
        else:
            self.branches(node, pointer, level, primary)

    def ref(self, ref: Any, pointer: str, level: int) -> None:
        """Refuse a `$ref` the engine cannot follow, or that nests the output too deep."""
        if not isinstance(ref, str):
            return  # malformed: reported by the meta-schema check
        target = self._target(ref)
        problem = _ref_problem(ref, target)
        if problem:
            raise _Refusal(f"keyword '$ref' at #{pointer}: '{ref}' {problem}.", pointer)
        self.refs[ref] = target
        height = self.ref_height(ref)
        if level + height > MAX_NESTING:
            raise _Refusal(_too_deep(level + height, pointer, " through '$ref'"), pointer)

    def values(self, node: dict[str, Any], pointer: str, primary: str) -> None:
        """`const`/`enum`: the engine emits exactly these values, ignoring `type`."""
        values = [node["const"]] if primary == "const" else node["enum"]
        if not isinstance(values, list):
            return  # malformed: reported by the meta-schema check
        if not values:
            raise _Refusal(
                f"keyword 'enum' at #{pointer} is empty: no value can match it.", pointer
            )
        if primary == "enum":
            self.enum_values += len(values)
            if self.enum_values > MAX_ENUM_VALUES:
                raise _Refusal(
                    f"the schema has more than {MAX_ENUM_VALUES} enum values in all (at "
                    f"keyword 'enum', #{pointer}); the limit is {MAX_ENUM_VALUES}.",
                    pointer,
                )
        types = _declared_types(node)
        for value in values:
            if types and not _matches(value, types):
                raise _Refusal(
                    f"keyword '{primary}' at #{pointer}: the value {json.dumps(value)} is not of "
                    f"type {_types_text(types)}, and {_ENGINE} would generate it; remove it.",
                    pointer,
                )

    def branches(self, node: dict[str, Any], pointer: str, level: int, primary: str) -> None:
        """`anyOf`, `oneOf`, `allOf`: branches are output at the schema's own level."""
        branches = node[primary]
        if not isinstance(branches, list):
            return  # malformed: reported by the meta-schema check
        if primary == "allOf" and len(branches) > 1:
            # Measured: {"allOf": [{"type": "string"}, {"enum": ["yes", "no"]}]} accepts 1
            # (xgrammar#937). One branch is enforced.
            raise _Refusal(
                f"keyword 'allOf' at #{pointer} with {len(branches)} branches is not supported "
                f"by {_ENGINE} (it enforces one branch at most); merge the branches into one "
                "schema.",
                pointer,
            )
        for index, branch in enumerate(branches):
            self.schema(branch, f"{pointer}/{primary}/{index}", level)
        if primary == "oneOf" and not self.disjoint(branches):
            # Measured: xgrammar warns "falling back to anyOf semantics" and accepts a value that
            # matches two branches.
            raise _Refusal(
                f"keyword 'oneOf' at #{pointer} has branches that may overlap, which {_ENGINE} "
                "enforces as 'anyOf'; use 'anyOf', or make the branches disjoint (different "
                "types, or a required property with different 'const' values).",
                pointer,
            )

    def typed(self, node: dict[str, Any], pointer: str, level: int, types: set[str]) -> None:
        """A schema the engine reads through its (declared or inferred) `types`."""
        if "string" in types:
            _check_string(node, pointer)
        if types & {"integer", "number"}:
            _check_number(node, pointer, "integer" in types)
        container = bool(types & {"object", "array"})
        if container and level + 1 > MAX_NESTING:
            raise _Refusal(_too_deep(level + 1, pointer, ""), pointer)
        if "array" in types:
            self.array(node, pointer, level + 1)
        if "object" in types:
            self.object(node, pointer, level + 1)

    def array(self, node: dict[str, Any], pointer: str, inner: int) -> None:
        """Check an array's item schemas, which sit `inner` levels deep."""
        items = node.get("items")
        if isinstance(items, list):
            raise _Refusal(
                f"keyword 'items' at #{pointer}: a list of schemas (the draft-07 tuple form) is "
                f"not supported by {_ENGINE}; use 'prefixItems'.",
                pointer,
            )
        if "items" in node:
            self.schema(items, f"{pointer}/items", inner, allow_false=True)
        prefix = node.get("prefixItems")
        if isinstance(prefix, list):
            for index, item in enumerate(prefix):
                self.schema(item, f"{pointer}/prefixItems/{index}", inner, allow_true=False)

    def object(self, node: dict[str, Any], pointer: str, inner: int) -> None:
        """Check an object's keywords and its property schemas, which sit `inner` levels deep."""
        properties = node.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        _check_object(node, pointer, properties)
        self.properties += len(properties)
        if self.properties > MAX_PROPERTIES:
            raise _Refusal(
                f"the schema has more than {MAX_PROPERTIES} properties in all (at keyword "
                f"'properties', #{pointer}); the limit is {MAX_PROPERTIES}.",
                pointer,
            )
        for key, sub in properties.items():
            self.schema(sub, f"{pointer}/properties/{_escape(key)}", inner)
        patterns = node.get("patternProperties")
        if isinstance(patterns, dict):
            for key, sub in patterns.items():
                self.schema(sub, f"{pointer}/patternProperties/{_escape(key)}", inner)
        if "additionalProperties" in node:
            additional = node["additionalProperties"]
            self.schema(additional, f"{pointer}/additionalProperties", inner, allow_false=True)
        if "propertyNames" in node:
            # The engine reads propertyNames as a string schema, with or without "type".
            names = node["propertyNames"]
            self.schema(
                names, f"{pointer}/propertyNames", 0, default_type="string", allow_true=False
            )

    # -- `$ref`s and `oneOf` branches -----------------------------------------------------------

    def _target(self, ref: str) -> Any:
        """What `ref` points to, read as xgrammar reads it (object keys only), or None."""
        if ref == "#":
            return self.root
        if _ref_form_problem(ref):
            return None
        node: Any = self.root
        for part in ref[2:].split("/"):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def ref_height(self, ref: str) -> int:
        """How many objects/arrays the target of `ref` nests in the output (a cycle counts once)."""
        if ref in self.heights:
            return self.heights[ref]
        if ref in self.resolving:
            return 0
        self.resolving.add(ref)
        try:
            height = self._height(self._target(ref))
        finally:
            self.resolving.discard(ref)
        self.heights[ref] = height
        return height

    def _height(self, node: Any) -> int:
        if not isinstance(node, dict):
            return 0
        if isinstance(node.get("$ref"), str):
            return self.ref_height(node["$ref"])
        height = max((self._height(branch) for branch in _branches(node)), default=0)
        types = _types(node, None)
        if types and types & {"object", "array"} and not any(key in node for key in _PRIMARY):
            inner = max((self._height(child) for child in _nested(node)), default=0)
            height = max(height, 1 + inner)
        return height

    def _deref(self, node: Any) -> Any:
        """Follow `$ref`s from `node` to a schema that is not one."""
        for _ in range(MAX_JSON_NESTING):
            if not (isinstance(node, dict) and isinstance(node.get("$ref"), str)):
                break
            node = self._target(node["$ref"])
        return node

    def disjoint(self, branches: list[Any]) -> bool:
        """Whether no value can match two branches: the proof xgrammar needs for `oneOf`, made
        through `$ref`s too (xgrammar gives up on those, but then `anyOf` is the same thing)."""
        arms = [self._deref(branch) for branch in branches]
        if self._discriminated(arms):
            return True
        kinds = [kind for kind in map(_arm_kind, arms) if kind is not None]
        if len(kinds) < len(arms):
            return False
        return all(
            _kinds_disjoint(kinds[i], kinds[j])
            for i in range(len(kinds))
            for j in range(i + 1, len(kinds))
        )

    def _discriminated(self, arms: list[Any]) -> bool:
        """Whether every arm is an object requiring one property with distinct const values."""
        if not arms:
            return False
        for key in _required_properties(arms[0]):
            values = [self._discriminator_values(arm, key) for arm in arms]
            sets = [{_canonical(value) for value in arm_values or ()} for arm_values in values]
            if all(sets) and sum(map(len, sets)) == len(set().union(*sets)):
                return True
        return False

    def _discriminator_values(self, arm: Any, key: str) -> list[Any] | None:
        """The values an object `arm` allows for its required property `key`, when finite."""
        if not isinstance(arm, dict) or _types(arm, None) != {"object"}:
            return None
        if any(k in arm for k in _PRIMARY) or key not in _required_properties(arm):
            return None
        kind = _arm_kind(self._deref(arm["properties"][key]))
        return kind[0] if kind and kind[0] else None


# -- keyword checks (no state) ---------------------------------------------------------------


def _check_refused(node: dict[str, Any], pointer: str) -> None:
    """Refuse the keywords the engine ignores wherever they are."""
    for key in _REFUSED:
        if key in node and not (key == "uniqueItems" and node[key] is False):
            raise _Refusal(_unsupported(key, pointer), pointer)
    if "$id" in node and pointer:
        # A nested `$id` moves the base of the `$ref`s below it; the engine resolves from the root.
        raise _Refusal(_unsupported("$id", pointer, "move it to the root or remove it"), pointer)


def _check_untyped(node: dict[str, Any], pointer: str) -> None:
    """Without `type`, the engine accepts any value: refuse the type keywords it then drops."""
    # Measured: {"maxLength": 2} accepts "abc", {"minimum": 3} accepts 1, {"minItems": 2}
    # accepts [1], {"required": ["a"]} accepts {}.
    for key in node:
        if key in _TYPE_KEYWORDS:
            raise _Refusal(
                f"keyword '{key}' at #{pointer} is ignored by {_ENGINE} in a schema without "
                f'\'type\'; add "type": "{_TYPE_KEYWORDS[key]}".',
                pointer,
            )


def _check_string(node: dict[str, Any], pointer: str) -> None:
    """Refuse string keywords, and combinations of them, that the engine drops."""
    fmt = node.get("format")
    if "format" in node and not (isinstance(fmt, str) and fmt in SUPPORTED_FORMATS):
        raise _Refusal(
            f"keyword 'format' at #{pointer}: format {json.dumps(fmt)} is not supported by "
            f"{_ENGINE} (supported: {', '.join(sorted(SUPPORTED_FORMATS))}); {_REMOVE}.",
            pointer,
        )
    # Measured: with `format`, a `pattern` is ignored; with `pattern` or `format`, `minLength`
    # and `maxLength` are ignored (xgrammar logs "ignoring minLength/maxLength", xgrammar#966).
    if "format" in node and "pattern" in node:
        raise _Refusal(_together("pattern", pointer, "format"), pointer)
    for length in ("minLength", "maxLength"):
        for other in ("pattern", "format"):
            if length in node and other in node:
                raise _Refusal(_together(length, pointer, other), pointer)
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        problem = _regex_problem(pattern)
        if problem:
            raise _Refusal(f"keyword 'pattern' at #{pointer}: {problem}.", pointer)


def _check_number(node: dict[str, Any], pointer: str, integer: bool) -> None:
    """Refuse bounds the engine cannot compile: boolean (draft-04) ones, fractional or huge
    ones on integers (measured: compile errors "Value must be a number", "must be a whole
    number", "Integer exceeds maximum limit")."""
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        bound = node.get(key)
        if key not in node or (not integer and not isinstance(bound, bool)):
            continue
        if isinstance(bound, bool):
            problem = "the boolean (draft-04) form is not supported; give the bound as a number"
        elif not isinstance(bound, (int, float)):
            continue  # malformed: reported by the meta-schema check
        elif isinstance(bound, float) and not bound.is_integer():
            problem = f"{bound} is not a whole number, which an integer bound must be"
        elif not _in_int64(bound):
            problem = f"{bound} is outside the 64-bit range the engine supports"
        else:
            continue
        raise _Refusal(f"keyword '{key}' at #{pointer}: {problem}.", pointer)


def _check_object(node: dict[str, Any], pointer: str, properties: dict[str, Any]) -> None:
    """Refuse object keywords, and combinations of them, that the engine drops."""
    patterns = node.get("patternProperties")
    if isinstance(patterns, dict):
        # xgrammar#964, #965: only one pattern, and never beside `properties`.
        if "properties" in node:
            raise _Refusal(_together("patternProperties", pointer, "properties"), pointer)
        if len(patterns) > 1:
            raise _Refusal(
                f"keyword 'patternProperties' at #{pointer} with {len(patterns)} patterns is "
                f"not supported by {_ENGINE} (one at most); {_REMOVE}.",
                pointer,
            )
        for key in patterns:
            problem = _regex_problem(key)
            if problem:
                raise _Refusal(
                    f"keyword 'patternProperties' at #{pointer}: in {json.dumps(key)}, {problem}.",
                    pointer,
                )
    if "propertyNames" in node:
        # xgrammar#958, #959: `propertyNames` only on its own.
        for other in ("properties", "patternProperties"):
            if other in node:
                raise _Refusal(_together("propertyNames", pointer, other), pointer)
    required = node.get("required")
    if isinstance(required, list):
        # Measured: {"type": "object", "required": ["a"], "additionalProperties": true}
        # accepts {}; a required name is enforced only when it is in `properties`.
        for key in required:
            if isinstance(key, str) and key not in properties:
                raise _Refusal(
                    f"keyword 'required' at #{pointer}: {json.dumps(key)} is not in "
                    f"'properties', and {_ENGINE} enforces only required properties listed "
                    "there; add it to 'properties'.",
                    pointer,
                )


def _regex_problem(pattern: str) -> str | None:
    """What in `pattern` the engine cannot enforce as ECMA-262 reads it, or None."""
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"{json.dumps(pattern)} is not a valid regular expression ({exc})"
    for problem in _regex_scan(pattern):
        return (
            f"{json.dumps(pattern)} uses {problem}, which {_ENGINE} does not support; rewrite "
            "the pattern without it or check it after generation"
        )
    return None


def _regex_scan(pattern: str) -> Iterator[str]:
    """Yield the constructs of a (compiling) `pattern` that xgrammar ignores or misreads."""
    depth, i, in_class, at_start = 0, 0, False, True
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            problem = _escape_problem(pattern[i + 1 : i + 3])
            if problem and in_class and pattern[i + 1] in "bB":
                problem = f"the escape '\\{pattern[i + 1]}' in a character class"
            if problem:
                yield problem
            i, at_start = i + 2, False
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class, at_start = True, False
            i += 2 if pattern[i + 1 : i + 2] == "^" else 1
            if pattern[i : i + 1] == "]":
                # Python reads `[]a]` as a class holding "]"; xgrammar reads an empty class.
                yield "a ']' first in a character class"
                i += 1
            continue
        elif char == "(":
            problem, width = _group_opener(pattern[i : i + 4])
            if problem:
                yield problem
            depth, i = depth + 1, i + width
            continue
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            at_start = True
            i += 1
            continue
        elif char in "^$":
            # xgrammar ignores an anchor "in the middle" and matches the whole string; that is
            # only the same where the anchor starts or ends a top-level alternative.
            end = pattern[i + 1 : i + 2] in ("", "|", "$")
            if depth or (char == "^" and not at_start) or (char == "$" and not end):
                yield f"the anchor '{char}' inside the pattern (not at an end)"
            i += 1
            continue
        at_start = False
        i += 1


def _escape_problem(escape: str) -> str | None:
    """The problem with the escape `\\` + `escape[0]` (`escape[1]` follows it), or None."""
    char = escape[:1]
    if char in "123456789" or char == "k":
        return "the backreference '\\" + char + "'"
    if char in ("b", "B"):
        return "the word boundary '\\" + char + "'"
    if char in ("p", "P"):
        return "the Unicode property class '\\" + char + "{…}'"
    if char == "0" and escape[1:2].isdigit():
        return "the octal escape '\\0" + escape[1:2] + "'"
    if char.isascii() and char.isalnum() and char not in _REGEX_ESCAPES:
        return f"the escape '\\{char}' (the engine would match '{char}' literally)"
    return None


def _group_opener(opener: str) -> tuple[str | None, int]:
    """The problem with a group starting `opener` (4 chars), and how many chars open it."""
    if not opener.startswith("(?"):
        return None, 1
    if opener.startswith("(?:"):
        return None, 3
    if opener.startswith(("(?=", "(?!")):
        return f"the lookahead '{opener[:3]}'", 3
    if opener.startswith(("(?<=", "(?<!")):
        return f"the lookbehind '{opener}'", 4
    if opener.startswith("(?P="):
        return "the backreference '(?P='", 4
    if opener.startswith("(?P<"):
        return None, 4
    if opener.startswith("(?<"):
        return None, 3
    return f"the group syntax '{opener[:3]}' (flags, atomic groups, comments)", 3


# -- small helpers ---------------------------------------------------------------------------


def _types(node: dict[str, Any], default_type: str | None) -> set[str] | None:
    """The types the engine reads `node` as (declared, default, or inferred), None for any."""
    declared = _declared_types(node)
    if declared:
        return declared
    if default_type:
        return {default_type}
    # Measured: {"properties": ...} is read as an object, {"items": ...} as an array.
    if any(key in node for key in ("properties", "additionalProperties", "unevaluatedProperties")):
        return {"object"}
    if any(key in node for key in ("items", "prefixItems", "unevaluatedItems")):
        return {"array"}
    return None


def _declared_types(node: dict[str, Any]) -> set[str] | None:
    declared = node.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list) and declared:
        return {t for t in declared if isinstance(t, str)}
    return None


def _branches(node: dict[str, Any]) -> Iterator[Any]:
    for key in _BRANCHES:
        if isinstance(node.get(key), list):
            yield from node[key]


def _nested(node: dict[str, Any]) -> Iterator[Any]:
    """The subschemas of the values one object/array level below `node`."""
    for key in ("properties", "patternProperties"):
        if isinstance(node.get(key), dict):
            yield from node[key].values()
    if isinstance(node.get("prefixItems"), list):
        yield from node["prefixItems"]
    yield node.get("items")
    yield node.get("additionalProperties")


def _required_properties(node: Any) -> list[str]:
    """The required names that `node` also lists in `properties`."""
    if not isinstance(node, dict):
        return []
    required, properties = node.get("required"), node.get("properties")
    if not (isinstance(required, list) and isinstance(properties, dict)):
        return []
    return [key for key in required if isinstance(key, str) and key in properties]


def _arm_kind(arm: Any) -> tuple[list[Any], set[str]] | None:
    """A `oneOf` branch as (its values, no types) when it allows a finite set of values, or
    (no values, its types) when only its types are known; None when neither is known."""
    if not isinstance(arm, dict):
        return None
    if "const" in arm:
        return [arm["const"]], set()
    if isinstance(arm.get("enum"), list):
        return (arm["enum"], set()) if arm["enum"] else None
    if any(key in arm for key in _PRIMARY):
        return None
    types = _types(arm, None)
    return ([], types) if types else None


def _kinds_disjoint(a: tuple[list[Any], set[str]], b: tuple[list[Any], set[str]]) -> bool:
    """Whether no value can match both branch kinds (see `_arm_kind`)."""
    (a_values, a_types), (b_values, b_types) = a, b
    if a_values and b_values:
        return not {_canonical(v) for v in a_values} & {_canonical(v) for v in b_values}
    if a_types and b_types:
        return not (_widen(a_types) & _widen(b_types))
    values, types = (a_values, b_types) if a_values else (b_values, a_types)
    return not any(_matches(value, types) for value in values)


def _in_int64(bound: float) -> bool:
    """Whether xgrammar takes `bound` as an int64 (a float at 2**63 or -2**63 fails its check)."""
    if isinstance(bound, int):
        return _INT64_MIN <= bound <= _INT64_MAX
    return -(2.0**63) < bound < 2.0**63


def _widen(types: set[str]) -> set[str]:
    """Integers are numbers: make the two overlap."""
    return types | {"number"} if "integer" in types else types


def _matches(value: Any, types: set[str]) -> bool:
    """Whether a JSON `value` is of one of `types`."""
    kind = _json_type_name(value)
    return kind in types or (kind == "integer" and "number" in types)


def _json_type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def _canonical(value: Any) -> Any:
    """A hashable form where JSON-equal values are equal (1 == 1.0, but true != 1)."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, list):
        return ("array", tuple(_canonical(item) for item in value))
    if isinstance(value, dict):
        return ("object", frozenset((key, _canonical(item)) for key, item in value.items()))
    return ("value", value)


def _ref_form_problem(ref: str) -> str | None:
    """Why the engine cannot read `ref` as a pointer into this schema, or None."""
    if not ref.startswith("#/"):
        return "is not a local reference ('#/...'), which is all the engine follows"
    if "~" in ref or "%" in ref:
        return "uses '~' or '%' escapes, which the engine does not decode"
    if "" in ref[2:].split("/"):
        return "has an empty segment, which the engine skips"
    return None


def _ref_problem(ref: str, target: Any) -> str | None:
    if ref == "#":
        return None
    form = _ref_form_problem(ref)
    if form:
        return form
    if target is None:
        return "points nowhere in this schema"
    if target is False:
        return "points to a 'false' schema, which the engine cannot compile"
    if not isinstance(target, (dict, bool)):
        return "points to something that is not a schema"
    return None


def _escape(key: str) -> str:
    """A key as an RFC 6901 JSON-pointer segment."""
    return key.replace("~", "~0").replace("/", "~1")


def _types_text(types: set[str]) -> str:
    return " or ".join(f"'{t}'" for t in sorted(types))


def _unsupported(key: str, pointer: str, hint: str = _REMOVE) -> str:
    return f"keyword '{key}' at #{pointer} is not supported by {_ENGINE}; {hint}."


def _together(key: str, pointer: str, other: str) -> str:
    return (
        f"keyword '{key}' at #{pointer} is not supported by {_ENGINE} together with "
        f"'{other}' in one schema; {_REMOVE}."
    )


def _ignored_beside(key: str, pointer: str, primary: str) -> str:
    hints = {
        "$ref": "move it into the referenced schema or remove it",
        "const": "remove it",
        "enum": "remove it",
    }
    hint = hints.get(primary, "move it into each branch or remove it")
    return f"keyword '{key}' at #{pointer} is ignored by {_ENGINE} next to '{primary}'; {hint}."


def _too_deep(depth: int, pointer: str, how: str) -> str:
    return (
        f"objects and arrays nest {depth} levels deep at #{pointer}{how}; the limit is "
        f"{MAX_NESTING}."
    )
