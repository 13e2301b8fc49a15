"""CEL expressions of KFP control flow, evaluated as KFP's v2 driver evaluates them.

kfp 2.13 writes CEL (Common Expression Language) in two places of a compiled pipeline:

* ``triggerPolicy.condition`` of a ``dsl.If``/``Elif``/``Else`` branch, for example
  ``int(inputs.parameter_values['pipelinechannel--n']) > 2``; an ``Elif``/``Else`` negates the
  earlier branches: ``!(a) && b``. :func:`evaluate_condition` evaluates one.
* ``parameterExpressionSelector`` of a task input fed by a field of a ``dsl.ParallelFor`` item:
  ``item.a`` compiles to ``parseJson(string_value)["a"]``. :func:`select` applies one.

What KFP's driver does (``backend/src/v2/expression/expression.go``, cel-go), and so what this
module does, with Google's C++ CEL implementation (``cel-expr-python``), which type-checks
expressions as cel-go does:

* A condition sees the task's ``ExecutorInput``: ``inputs.parameter_values`` maps each input
  name to its protobuf ``Value`` as CEL sees one: every number is a CEL ``double`` (an integer
  parameter too, hence the SDK's ``int(...)``), strings are strings, booleans booleans, lists
  lists, structs maps, ``None`` is ``null``. ``inputs.parameters``, ``inputs.artifacts`` and
  ``outputs`` exist and are empty here. A result that is not a bool is an error.
* A selector sees the fields of one protobuf ``Value``: the one that is set (``number_value``,
  ``bool_value``, ``null_value``, ``struct_value`` or ``list_value``) and always ``string_value``,
  the value's text as KFP's driver writes it: a string itself, a number in Go's ``'f'`` format
  (``3.0`` -> ``"3"``), ``true``/``false``, ``""`` for null, JSON for a list or struct (keys
  sorted, Go's escaping). Its result becomes a protobuf ``Value`` again, so every number comes
  back as a ``float`` (CEL ints too), bytes as base64 text, and a ``null`` result is an error,
  as in KFP (cel-go hands the driver an enum it cannot convert).
* ``parseJson(string)`` parses JSON as Go's ``encoding/json`` into ``interface{}``: numbers
  become doubles; ``NaN``/``Infinity`` and numbers beyond float64 are errors.

Every failure is an :class:`ExpressionError` with one line naming the expression. Beyond KFP,
values and parsed JSON may nest at most :data:`MAX_DEPTH` levels, and an evaluation may run at
most 10,000 comprehension iterations (``all``, ``exists``, ``map``, ``filter``; the library's
budget): an error rather than a hang or a crash, where KFP has no limit. Expressions are parsed
with the library's limits: 100,000 code points (as cel-go) and 32 levels of nesting (cel-go: 250;
the SDK's conditions nest 3 or 4 levels). cel-cpp's checker refuses a comprehension over an index
into a ``dyn`` that cel-go accepts; such an expression is compiled unchecked (types then checked
as it runs). A selector whose result is a list or map it built itself (a literal, ``+``) gives
that value here, where cel-go hands KFP's driver a Go type it cannot convert (an error there).

>>> evaluate_condition("inputs.parameter_values['pipelinechannel--flip-Output'] == 'heads'",
...                    {"pipelinechannel--flip-Output": "heads"})
True
>>> select('parseJson(string_value)["a"]', {"a": 1, "b": "x"})
1.0
"""
from __future__ import annotations

import base64
import datetime
import functools
import json
import math
import re
import threading
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Callable

from cel_expr_python import cel

from ..errors import InvalidArgumentError
from ..key.gojson import go_marshal

__all__ = ["ExpressionError", "evaluate_condition", "select", "check", "value_text", "MAX_DEPTH"]

#: How deep a parameter value or a ``parseJson`` result may nest (lists and maps).
MAX_DEPTH = 200

_MAX_SHOWN = 200  # characters of an expression that an error message quotes
_CACHE_SIZE = 1024  # distinct compiled expressions kept per kind


class ExpressionError(InvalidArgumentError):
    """A CEL condition or parameter selector could not be compiled or evaluated, or gave a
    result KFP's driver would refuse. The message is one line naming the expression.

    >>> try:
    ...     evaluate_condition("inputs.parameter_values['x'] == ", {})
    ... except ExpressionError as error:
    ...     print(str(error)[:66])
    condition "inputs.parameter_values['x'] == ": syntax error at 1:33
    """


# ---------------------------------------------------------------------------------------------
# Messages


def _quote(expression: str) -> str:
    shown = expression if len(expression) <= _MAX_SHOWN else expression[:_MAX_SHOWN] + "..."
    return json.dumps(shown, ensure_ascii=False)


_STATUS_CODES = (
    "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
)


_LOCATION = re.compile(r"^at (-?\d+:-?\d+): ")
_SYNTAX = re.compile(r"^(at \d+:\d+: )?Syntax error: ")


def _clean(message: str) -> str:
    """The library's (possibly multi-line, status-coded) message as one plain line."""
    parts = []
    for line in str(message).splitlines():
        line = line.strip()
        if not line or line.startswith("|"):  # the source excerpt and caret lines of a parse error
            continue
        for code in _STATUS_CODES:
            if line.startswith(code + ": "):
                line = line[len(code) + 2:]
            if line.endswith(f" [{code}]"):
                line = line[: -len(code) - 3]
        if line.startswith("ERROR: <input>:"):
            line = "at " + line[len("ERROR: <input>:"):]
        line = _LOCATION.sub(lambda m: "" if m.group(1) == "-1:-1" else f"at {m.group(1)}: ", line)
        line = _SYNTAX.sub(lambda m: f"syntax error {m.group(1)}", line)
        parts.append(line.strip())
    text = "; ".join(part for part in parts if part) or "failed"
    if len(text) > 500:
        text = text[:500] + "..."
    return text


def _error(kind: str, expression: str, what: str) -> ExpressionError:
    return ExpressionError(f"{kind} {_quote(expression)}: {what}")


# ---------------------------------------------------------------------------------------------
# Values: plain Python in, CEL's view of a protobuf Value out (and back)


class _ValueProblem(Exception):
    """A value cannot be a protobuf ``Value`` (internal; becomes an ExpressionError)."""


def _number(value: int) -> float:
    try:
        return float(value)
    except OverflowError:
        raise _ValueProblem(f"integer {str(value)[:30]}... is too large for a protobuf number") from None


def _to_cel(value: Any, depth: int = 0) -> Any:
    """A plain Python parameter value as CEL sees the protobuf ``Value`` KFP stores for it."""
    if depth > MAX_DEPTH:
        raise _ValueProblem(f"the value nests deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        return _number(value)
    if isinstance(value, Mapping):
        converted = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _ValueProblem(f"a struct key must be a string, not {key!r:.40} ({type(key).__name__})")
            converted[key] = _to_cel(item, depth + 1)
        return converted
    if isinstance(value, (list, tuple)):
        return [_to_cel(item, depth + 1) for item in value]
    raise _ValueProblem(f"{type(value).__name__} is not a parameter value type (int, float, str, bool, list, dict, None)")


def _go_format_f(number: float) -> str:
    """Go's ``strconv.FormatFloat(number, 'f', -1, 64)``: shortest digits, never an exponent."""
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    return format(Decimal(repr(number)).normalize(), "f")


def _check_json_numbers(value: Any) -> None:
    """protojson refuses NaN and infinite numbers in a list or struct (iteratively: no recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise _ValueProblem(f"a list or struct holding {_go_format_f(item)} has no JSON text")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _text(value: Any) -> str:
    """KFP's ``PbValueToText`` of a value already in CEL form (see :func:`_to_cel`)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return _go_format_f(value)
    _check_json_numbers(value)
    return go_marshal(value).decode("utf-8")


_SELECT_FIELDS = {
    type(None): "null_value",
    bool: "bool_value",
    float: "number_value",
    dict: "struct_value",
    list: "list_value",
}


def _selector_activation(value: Any) -> dict[str, Any]:
    cel_value = _to_cel(value)
    fields = {"string_value": _text(cel_value)}
    field = _SELECT_FIELDS.get(type(cel_value))
    if field is not None:
        fields[field] = cel_value
    return fields


def _from_cel(value: Any, depth: int = 0) -> Any:
    """A CEL result as KFP's driver turns it into a protobuf ``Value``, back in plain Python."""
    if depth > MAX_DEPTH:
        raise _ValueProblem(f"the result nests deeper than {MAX_DEPTH} levels")
    if value is None:
        if depth == 0:
            raise _ValueProblem("the result is null, which KFP's driver cannot turn into a parameter value")
        return None
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _ValueProblem(f"the result is a map with key {key!r:.40} ({type(key).__name__}), not a struct")
            result[key] = _from_cel(item, depth + 1)
        return result
    if isinstance(value, list):
        return [_from_cel(item, depth + 1) for item in value]
    if isinstance(value, (datetime.datetime, datetime.timedelta)):
        kind = "timestamp" if isinstance(value, datetime.datetime) else "duration"
        raise _ValueProblem(f"the result is a {kind}, not a JSON value")
    raise _ValueProblem(f"the result is a {type(value).__name__} ({value!r:.40}), not a JSON value")


# ---------------------------------------------------------------------------------------------
# parseJson: Go's json.Unmarshal into interface{}


def _json_number(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"number {text[:30]} is out of float64 range")
    return number


def _json_constant(name: str) -> float:
    raise ValueError(f"invalid character {name[0]!r} looking for beginning of value")


def _depth_within(value: Any, limit: int) -> bool:
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return True


def _parse_json(text: str) -> Any:
    """The ``parseJson(string)`` CEL function of KFP's driver (errors raised become CEL errors)."""
    try:
        value = json.loads(text, parse_int=_json_number, parse_float=_json_number, parse_constant=_json_constant)
    except RecursionError:
        raise ValueError(f"parseJson: JSON nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as error:  # json.JSONDecodeError included
        raise ValueError(f"parseJson: failed to unmarshal JSON: {error}") from None
    if not _depth_within(value, MAX_DEPTH):
        raise ValueError(f"parseJson: JSON nests deeper than {MAX_DEPTH} levels")
    return value


# ---------------------------------------------------------------------------------------------
# Environments and compiled programs

_lock = threading.Lock()
_environments: dict[str, Any] = {}


def _parse_json_declaration() -> Any:
    return cel.FunctionDecl(
        "parseJson", [cel.Overload("parse_json", cel.Type.DYN, [cel.Type.STRING], impl=_parse_json)]
    )


def _new_environment(kind: str) -> Any:
    if kind == "condition":
        # The fields of ExecutorInput, inputs and outputs, as maps (a protobuf message would be
        # serialized for the C++ side, whose parser refuses values nested ~50 levels deep).
        variables = {
            "inputs": cel.Type.Map(cel.Type.STRING, cel.Type.Map(cel.Type.STRING, cel.Type.DYN)),
            "outputs": cel.Type.Map(cel.Type.STRING, cel.Type.DYN),
        }
    else:
        # The fields of google.protobuf.Value.
        variables = {
            "null_value": cel.Type.NULL,
            "number_value": cel.Type.DOUBLE,
            "string_value": cel.Type.STRING,
            "bool_value": cel.Type.BOOL,
            "struct_value": cel.Type.Map(cel.Type.STRING, cel.Type.DYN),
            "list_value": cel.Type.List(cel.Type.DYN),
        }
    return cel.NewEnv(variables=variables, functions=[_parse_json_declaration()])


def _environment(kind: str) -> Any:
    environment = _environments.get(kind)
    if environment is None:
        with _lock:
            environment = _environments.get(kind)
            if environment is None:
                environment = _environments[kind] = _new_environment(kind)
    return environment


# cel-cpp's checker refuses a comprehension over an index into a dyn (``parseJson(s)["a"].all(x,
# ...)``: "expression of type 'dyn' cannot be the range of a comprehension"), which cel-go accepts.
# When that is the only complaint, the expression is compiled unchecked: the run time checks types.
_DYN_RANGE = "expression of type 'dyn' cannot be the range of a comprehension"


def _only_dyn_range_errors(message: str) -> bool:
    errors = [line for line in message.splitlines() if "ERROR: <input>:" in line]
    return bool(errors) and all(_DYN_RANGE in line for line in errors)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compiled(kind: str, expression: str) -> Any:
    environment = _environment(kind)
    with _lock:
        try:
            return environment.compile(expression)
        except RuntimeError as error:
            if not _only_dyn_range_errors(str(error)):
                raise
            return environment.compile(expression, disable_check=True)


def _program(kind: str, expression: Any) -> Any:
    """The compiled expression (compiled once), or ExpressionError."""
    if not isinstance(expression, str):
        raise ExpressionError(f"{kind} must be a string, not {type(expression).__name__}")
    if not expression.strip():
        raise _error(kind, expression, "empty expression")
    try:
        return _compiled(kind, expression)
    except Exception as error:  # the library raises RuntimeError for a parse or type-check error
        raise _error(kind, expression, _clean(str(error))) from None


def _evaluate(kind: str, expression: Any, activation: Callable[[], dict[str, Any]]) -> tuple[str, Any]:
    """Compile (once) and evaluate; the plain Python result, or ExpressionError."""
    program = _program(kind, expression)
    try:
        data = activation()
    except _ValueProblem as problem:
        raise _error(kind, expression, str(problem)) from None
    try:
        result = program.eval(data=data)
        type_name = result.type().name()
        value = result.plain_value()
    except Exception as error:  # the library raises RuntimeError for an exceeded budget
        raise _error(kind, expression, _clean(str(error))) from None
    if type_name == "ERROR":
        raise _error(kind, expression, _clean(str(value)))
    if type_name == "UNKNOWN":
        raise _error(kind, expression, "the result is unknown")
    return type_name, value


# ---------------------------------------------------------------------------------------------
# Public API


def evaluate_condition(expression: str, parameter_values: Mapping[str, Any]) -> bool:
    """Evaluate a ``triggerPolicy.condition`` over a task's resolved input parameters.

    ``parameter_values`` maps each input name (``pipelinechannel--...``) to its plain Python value
    (int, float, str, bool, list, dict or None). Numbers are CEL doubles, as in KFP: compare an
    integer through ``int(...)``, as the SDK writes it.

    >>> evaluate_condition("int(inputs.parameter_values['pipelinechannel--n']) > 2",
    ...                    {"pipelinechannel--n": 3})
    True
    >>> evaluate_condition("!(inputs.parameter_values['c'] == 'heads') && "
    ...                    "inputs.parameter_values['c'] == 'tails'", {"c": "tails"})
    True
    >>> evaluate_condition("inputs.parameter_values['b'] == true", {"b": False})
    False
    >>> evaluate_condition("inputs.parameter_values['n']", {"n": 1})
    Traceback (most recent call last):
    ...
    mlmd_cache.pipeline.expressions.ExpressionError: condition "inputs.parameter_values['n']": \
the result is a double (1.0), not a bool
    """
    def activation() -> dict[str, Any]:
        if not isinstance(parameter_values, Mapping):
            raise _ValueProblem(f"parameter values must be a mapping, not {type(parameter_values).__name__}")
        values = {}
        for name, value in parameter_values.items():
            if not isinstance(name, str):
                raise _ValueProblem(f"a parameter name must be a string, not {type(name).__name__}")
            try:
                values[name] = _to_cel(value)
            except _ValueProblem as problem:
                raise _ValueProblem(f"parameter {name!r}: {problem}") from None
        return {
            "inputs": {"parameter_values": values, "parameters": {}, "artifacts": {}},
            "outputs": {"parameters": {}, "artifacts": {}, "output_file": ""},
        }

    type_name, value = _evaluate("condition", expression, activation)
    if type_name != "BOOL" or not isinstance(value, bool):
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:60] + "..."
        raise _error("condition", expression, f"the result is a {type_name.lower()} ({shown}), not a bool")
    return value


def select(expression: str, value: Any) -> Any:
    """Apply a ``parameterExpressionSelector`` to a resolved parameter value.

    The expression sees the value as a protobuf ``Value``: ``string_value`` is its text (JSON for
    a list or dict), and the field of its kind is set too (``number_value``, ``struct_value``...).
    The result is plain Python as KFP stores it: numbers are floats.

    >>> select('parseJson(string_value)["b"]', {"a": 1, "b": "x"})
    'x'
    >>> select('parseJson(string_value)["a"]', {"a": [1, {"c": None}]})
    [1.0, {'c': None}]
    >>> select("string_value", 3)
    '3'
    >>> select('parseJson(string_value)["zz"]', {"a": 1})
    Traceback (most recent call last):
    ...
    mlmd_cache.pipeline.expressions.ExpressionError: selector "parseJson(string_value)[\\"zz\\"]": \
Key not found in map : "zz"
    """
    type_name, result = _evaluate("selector", expression, lambda: _selector_activation(value))
    try:
        return _from_cel(result)
    except _ValueProblem as problem:
        raise _error("selector", expression, str(problem)) from None


def check(kind: str, expression: str) -> None:
    """Compile a ``"condition"`` or ``"selector"`` without evaluating it: an ExpressionError for
    one that can never run, so a pipeline holding it is refused before anything runs.

    >>> check("condition", "inputs.parameter_values['x'] ==")
    Traceback (most recent call last):
    ...
    mlmd_cache.pipeline.expressions.ExpressionError: condition "inputs.parameter_values['x'] ==": \
syntax error at 1:32: mismatched input '<EOF>' expecting ...
    """
    _program(kind, expression)


def value_text(value: Any) -> str:
    """A parameter value as the text KFP's driver makes of it (``PbValueToText``): a non-string
    value passed to a STRING input becomes this text.

    >>> value_text(3.0), value_text(True), value_text({"b": 1, "a": [1.5]})
    ('3', 'true', '{"a":[1.5],"b":1}')
    """
    try:
        return _text(_to_cel(value))
    except _ValueProblem as problem:
        raise ExpressionError(f"value {value!r:.60}: {problem}") from None
