"""mlmd_cache.pipeline.expressions: KFP's CEL conditions and parameter selectors.

The conditions and selectors are compiled by the KFP SDK itself (``kfp.compiler``) and read out of
the IR; each is then evaluated over values whose outcome KFP's driver gives (numbers as doubles,
Elif/Else as negations of the earlier branches), checked against a plain Python truth table.
"""
# No `from __future__ import annotations`: the KFP SDK reads the components' annotations.
import json
import math
import random
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest
import yaml
from kfp import compiler, dsl

from mlmd_cache.errors import InvalidArgumentError, MlmdCacheError
from mlmd_cache.pipeline import expressions
from mlmd_cache.pipeline.expressions import ExpressionError, evaluate_condition, select

P = "inputs.parameter_values"
SEED = 20240611
IMAGE = "python:3.11"  # explicit, so that kfp does not warn about its default


# ---------------------------------------------------------------------------------------------
# Components and IR helpers


@dsl.component(base_image=IMAGE)
def flip() -> str:
    return "heads"


@dsl.component(base_image=IMAGE)
def show(x: str):
    print(x)


@dsl.component(base_image=IMAGE)
def show_int(x: int):
    print(x)


@dsl.component(base_image=IMAGE)
def show_dict(x: dict):
    print(x)


def compile_ir(pipeline_func: Callable, tmp_path: Path) -> dict:
    path = tmp_path / f"{pipeline_func.name}.yaml"
    compiler.Compiler().compile(pipeline_func, str(path))
    return next(yaml.safe_load_all(path.read_text()))


def all_tasks(ir: dict) -> Iterator[tuple[str, str, dict]]:
    """(component name, task key, task spec) of every task of the root and of every DAG component."""
    yield from (("root", key, task) for key, task in ir["root"]["dag"]["tasks"].items())
    for name, component in ir["components"].items():
        for key, task in component.get("dag", {}).get("tasks", {}).items():
            yield name, key, task


def conditions_by_name(ir: dict) -> dict[str, str]:
    """``taskInfo.name`` (the ``name=`` of a dsl.If/Elif/Else) -> its ``triggerPolicy.condition``."""
    found = {}
    for _, _, task in all_tasks(ir):
        condition = task.get("triggerPolicy", {}).get("condition")
        if condition:
            found[task["taskInfo"]["name"]] = condition
    return found


def selectors(ir: dict) -> dict[str, tuple[str, str]]:
    """Consumer ``taskInfo.name`` -> (its input's parameterExpressionSelector, the loop item input)."""
    found = {}
    for _, _, task in all_tasks(ir):
        for spec in task.get("inputs", {}).get("parameters", {}).values():
            if "parameterExpressionSelector" in spec:
                found[task["taskInfo"]["name"]] = (spec["parameterExpressionSelector"], spec["componentInputParameter"])
    return found


def taken(conditions: dict[str, str], names: List[str], values: Dict[str, Any]) -> List[str]:
    return [name for name in names if evaluate_condition(conditions[name], values)]


# ---------------------------------------------------------------------------------------------
# Conditions compiled by the SDK: truth tables


@dsl.pipeline
def string_chain():
    coin = flip()
    with dsl.If(coin.output == "heads", name="heads"):
        show(x="h")
    with dsl.Elif(coin.output == "tails", name="tails"):
        show(x="t")
    with dsl.Else(name="other"):
        show(x="o")


def test_string_if_elif_else(tmp_path: Path) -> None:
    conditions = conditions_by_name(compile_ir(string_chain, tmp_path))
    assert conditions["heads"] == f"{P}['pipelinechannel--flip-Output'] == 'heads'"
    assert conditions["tails"].startswith(f"!({P}['pipelinechannel--flip-Output'] == 'heads') && ")
    names = ["heads", "tails", "other"]
    table = {"heads": "heads", "tails": "tails", "edge": "other", "": "other", "Heads": "other",
             "heads ": "other", "tails\n": "other", "héads": "other"}
    for coin, branch in table.items():
        assert taken(conditions, names, {"pipelinechannel--flip-Output": coin}) == [branch], coin


@dsl.pipeline
def int_chain(n: int = 0):
    with dsl.If(n > 2, name="big"):
        show(x="big")
    with dsl.Elif(n == 2, name="two"):
        show(x="two")
    with dsl.Elif(n < 0, name="negative"):
        show(x="negative")
    with dsl.Else(name="small"):
        show(x="small")


def int_branch(n: float) -> str:
    n = int(n)  # the SDK's int(...): CEL truncates the double toward zero
    return "big" if n > 2 else "two" if n == 2 else "negative" if n < 0 else "small"


def test_int_if_elif_else(tmp_path: Path) -> None:
    conditions = conditions_by_name(compile_ir(int_chain, tmp_path))
    assert conditions["big"] == f"int({P}['pipelinechannel--n']) > 2"
    names = ["big", "two", "negative", "small"]
    for n in range(-4, 7):
        for value in (n, float(n)):  # the runner's int, or the double KFP stores
            assert taken(conditions, names, {"pipelinechannel--n": value}) == [int_branch(n)], value
    # int() of a double truncates: 2.9 -> 2 ("two"), -0.5 -> 0 ("small"), -1.5 -> -1 ("negative").
    assert taken(conditions, names, {"pipelinechannel--n": 2.9}) == ["two"]
    assert taken(conditions, names, {"pipelinechannel--n": -0.5}) == ["small"]
    assert taken(conditions, names, {"pipelinechannel--n": -1.5}) == ["negative"]
    rng = random.Random(SEED)
    for _ in range(300):
        n = rng.randint(-10**15, 10**15) if rng.random() < 0.5 else rng.randint(-5, 5)
        assert taken(conditions, names, {"pipelinechannel--n": n}) == [int_branch(n)], n


@dsl.pipeline
def float_chain(f: float = 0.0):
    with dsl.If(f > 1, name="above"):  # an int literal: the SDK writes double(1)
        show(x="above")
    with dsl.Elif(f >= 0.5, name="mid"):
        show(x="mid")
    with dsl.Else(name="below"):
        show(x="below")


def float_branch(f: float) -> str:
    return "above" if f > 1 else "mid" if f >= 0.5 else "below"


def test_float_if_elif_else(tmp_path: Path) -> None:
    conditions = conditions_by_name(compile_ir(float_chain, tmp_path))
    assert conditions["above"] == f"{P}['pipelinechannel--f'] > double(1)"
    assert conditions["mid"].endswith(f"{P}['pipelinechannel--f'] >= 0.5")
    names = ["above", "mid", "below"]
    values = [-math.inf, -1.0, 0.0, -0.0, 0.4999999, 0.5, 0.75, 1.0, 1.0000000001, 3, 2**60, math.inf, 1e308]
    for f in values:
        assert taken(conditions, names, {"pipelinechannel--f": f}) == [float_branch(f)], f
    # NaN: every comparison is false, so only Else (the negation of both) is taken.
    assert taken(conditions, names, {"pipelinechannel--f": math.nan}) == ["below"]
    rng = random.Random(SEED + 1)
    for _ in range(300):
        f = rng.uniform(-2, 3) if rng.random() < 0.8 else rng.choice([0.5, 1.0, 1, 0])
        assert taken(conditions, names, {"pipelinechannel--f": f}) == [float_branch(f)], f


@dsl.pipeline
def mixed_and_bool(n: int = 0, f: float = 0.0, b: bool = False, s: str = "", t: str = ""):
    with dsl.If(n < 2.5, name="int-vs-float"):
        show(x="1")
    with dsl.If(f == 2, name="float-vs-int"):
        show(x="2")
    with dsl.If(b == True, name="bool-true"):  # noqa: E712 (the DSL needs ==)
        show(x="3")
    with dsl.Else(name="bool-else"):
        show(x="4")
    with dsl.If(b != False, name="bool-not-false"):  # noqa: E712
        show(x="5")
    with dsl.If(b == 1, name="bool-vs-int"):
        show(x="6")
    with dsl.If(s >= "m", name="string-ge"):
        show(x="7")
    with dsl.If(s == t, name="channel-vs-channel"):
        show(x="8")


def test_mixed_types_and_bools(tmp_path: Path) -> None:
    conditions = conditions_by_name(compile_ir(mixed_and_bool, tmp_path))
    assert conditions["int-vs-float"] == f"double(int({P}['pipelinechannel--n'])) < 2.5"
    assert conditions["float-vs-int"] == f"{P}['pipelinechannel--f'] == double(2)"
    assert conditions["bool-true"] == f"{P}['pipelinechannel--b'] == true"
    for n, expected in [(2, True), (3, False), (-7, True), (2.9, True)]:
        assert evaluate_condition(conditions["int-vs-float"], {"pipelinechannel--n": n}) is expected, n
    for f, expected in [(2, True), (2.0, True), (2.0000001, False), (math.nan, False)]:
        assert evaluate_condition(conditions["float-vs-int"], {"pipelinechannel--f": f}) is expected, f
    for b in (True, False):
        values = {"pipelinechannel--b": b}
        assert taken(conditions, ["bool-true", "bool-else", "bool-not-false"], values) == (
            ["bool-true", "bool-not-false"] if b else ["bool-else"])
    # kfp 2.13 compiles `b == 1` to `== false` (its bool/number promotion is inverted); KFP's driver
    # evaluates what was compiled, and so does this module.
    assert conditions["bool-vs-int"] == f"{P}['pipelinechannel--b'] == false"
    assert evaluate_condition(conditions["bool-vs-int"], {"pipelinechannel--b": True}) is False
    # Strings compare by code point (cel-go compares UTF-8 bytes: the same order).
    for s in ["m", "mango", "z", "é", "M", "", "l", "lz"]:
        assert evaluate_condition(conditions["string-ge"], {"pipelinechannel--s": s}) is (s >= "m"), s
    both = conditions["channel-vs-channel"]
    assert evaluate_condition(both, {"pipelinechannel--s": "a", "pipelinechannel--t": "a"}) is True
    assert evaluate_condition(both, {"pipelinechannel--s": "a", "pipelinechannel--t": "b"}) is False
    # Heterogeneous equality at run time: a string is never equal to a number, no error.
    assert evaluate_condition(both, {"pipelinechannel--s": "3", "pipelinechannel--t": 3}) is False


@dsl.pipeline
def string_literal_vs_int(n: int = 0):
    with dsl.If(n == "3", name="broken"):
        show(x="n")


def test_int_channel_vs_string_literal_is_not_valid_cel(tmp_path: Path) -> None:
    # The SDK quotes the whole int(...) operand; KFP's driver fails to compile it, so must we.
    condition = conditions_by_name(compile_ir(string_literal_vs_int, tmp_path))["broken"]
    assert condition == f"'int({P}['pipelinechannel--n'])' == '3'"
    with pytest.raises(ExpressionError, match="syntax error"):
        evaluate_condition(condition, {"pipelinechannel--n": 3})


BRANCHES = 40


@dsl.pipeline
def long_chain(n: int = 0):
    with dsl.If(n == 0, name="b0"):
        show(x="0")
    for k in range(1, BRANCHES):
        with dsl.Elif(n == k, name=f"b{k}"):
            show(x=str(k))
    with dsl.Else(name="else"):
        show(x="else")


def test_long_elif_chain(tmp_path: Path) -> None:
    conditions = conditions_by_name(compile_ir(long_chain, tmp_path))
    names = [f"b{k}" for k in range(BRANCHES)] + ["else"]
    assert conditions["else"].count("!(") == BRANCHES
    for n in [*range(BRANCHES), -1, BRANCHES, 1000]:
        expected = [f"b{n}"] if 0 <= n < BRANCHES else ["else"]
        assert taken(conditions, names, {"pipelinechannel--n": n}) == expected, n


# ---------------------------------------------------------------------------------------------
# Selectors compiled by the SDK: ParallelFor over dicts with item.field


@dsl.pipeline
def dict_loops(records: List[Dict] = [{"label": "p"}]):
    with dsl.ParallelFor([{"a": 1, "b": 2}, {"a": -3, "b": 2.5}]) as numbers:
        show_int(x=numbers.a).set_display_name("numbers-a")
    with dsl.ParallelFor([{"word": "x", "other": "y"}, {"word": "<é&>", "other": ""}]) as words:
        show(x=words.word).set_display_name("words-word")
    with dsl.ParallelFor([{"cfg": {"k": [1, 2], "z": None}}, {"cfg": {}}]) as nested:
        show_dict(x=nested.cfg).set_display_name("nested-cfg")
    with dsl.ParallelFor(records) as record:
        show(x=record.label).set_display_name("records-label")


def raw_items(ir: dict) -> dict[str, list]:
    """itemInput -> the items of each raw-list loop."""
    found = {}
    for _, _, task in all_tasks(ir):
        iterator = task.get("parameterIterator")
        if iterator and "raw" in iterator["items"]:
            found[iterator["itemInput"]] = json.loads(iterator["items"]["raw"])
    return found


def test_parallel_for_item_fields(tmp_path: Path) -> None:
    ir = compile_ir(dict_loops, tmp_path)
    found = selectors(ir)
    items = raw_items(ir)
    assert {name: selector for name, (selector, _) in found.items()} == {
        "numbers-a": 'parseJson(string_value)["a"]',
        "words-word": 'parseJson(string_value)["word"]',
        "nested-cfg": 'parseJson(string_value)["cfg"]',
        "records-label": 'parseJson(string_value)["label"]',
    }

    def apply(name: str) -> list:
        selector, item_input = found[name]
        return [select(selector, item) for item in items[item_input]]

    # Numbers come back as protobuf numbers: floats (the runner converts to the input's type).
    assert apply("numbers-a") == [1.0, -3.0]
    assert all(type(value) is float for value in apply("numbers-a"))
    assert apply("words-word") == ["x", "<é&>"]
    assert apply("nested-cfg") == [{"k": [1.0, 2.0], "z": None}, {}]
    # A pipeline-parameter loop: the items arrive at run time.
    selector, _ = found["records-label"]
    assert [select(selector, item) for item in [{"label": "a"}, {"label": "", "x": 1}]] == ["a", ""]
    with pytest.raises(ExpressionError, match=r'Key not found in map : "label"'):
        select(selector, {"other": 1})
    # A field that is null: KFP's driver cannot store cel-go's null as a parameter value.
    with pytest.raises(ExpressionError, match="null"):
        select(selector, {"label": None})


# ---------------------------------------------------------------------------------------------
# Conditions: direct cases


@pytest.mark.parametrize("expression, values, expected", [
    (f"{P}['n'] == 3", {"n": 3}, True),  # double 3.0 == int 3 at run time
    (f"{P}['n'] > 2", {"n": 2.5}, True),
    (f"{P}['n'] == 3.0", {"n": 3}, True),
    (f"int({P}['n']) == 3", {"n": 3.99}, True),
    (f"int({P}['n']) == -3", {"n": -3.99}, True),
    (f"double({P}['n']) / 2.0 == 1.5", {"n": 3}, True),
    (f"{P}['s'] == 'heads'", {"s": "heads"}, True),
    (f"{P}['s'] != 'heads'", {"s": "heads"}, False),
    (f"{P}['b'] == true", {"b": True}, True),
    (f"{P}['b']", {"b": True}, True),
    (f"!{P}['b']", {"b": True}, False),
    (f"{P}['x'] == null", {"x": None}, True),
    (f"size({P}['l']) == 3 && {P}['l'][1] == 2", {"l": [1, 2, 3]}, True),
    (f"'k' in {P}['m'] && {P}['m'].k == 'v'", {"m": {"k": "v"}}, True),
    (f"{P}['m'] == {{'k': 1}}", {"m": {"k": 1}}, True),
    (f"parseJson({P}['j']).a == 1", {"j": '{"a": 1}'}, True),
    (f"parseJson({P}['j'])[1] == 'x'", {"j": '[null, "x"]'}, True),
    (f"{P}['s'].startsWith('he') && {P}['s'].size() == 5", {"s": "heads"}, True),
    (f"{P}['s'].matches('^h.*s$')", {"s": "heads"}, True),
    (f"'a' in {P}", {"a": 1}, True),
    (f"{P}['n'] == {P}['n']", {"n": math.nan}, False),
    (f"{P}['n'] > 1e308", {"n": math.inf}, True),
    ("true || 1 / 0 == 1", {}, True),  # CEL's logical operators absorb errors
    ("1 / 0 == 1 || true", {}, True),
    ("false && 1 / 0 == 1", {}, False),
    ("size(inputs.artifacts) == 0 && size(outputs.parameters) == 0", {}, True),
    (f"[1, 2, 3].exists(x, x == int({P}['n']))", {"n": 2}, True),
    (f"{P}['l'].exists(x, x == 2)", {"l": [1, 2]}, True),
    # cel-cpp's checker refuses a comprehension over an index into a dyn; cel-go accepts it.
    (f"parseJson({P}['j'])['a'].exists(x, x == 2)", {"j": '{"a": [1, 2]}'}, True),
    (f"parseJson({P}['j'])['a'].all(x, x > 1)", {"j": '{"a": [1, 2]}'}, False),
    (f"{P}['s'] < 'é'", {"s": "z"}, True),
])
def test_condition_direct(expression: str, values: dict, expected: bool) -> None:
    assert evaluate_condition(expression, values) is expected


@pytest.mark.parametrize("expression, values, message", [
    (f"{P}['x'] == ", {}, "syntax error"),
    (f"{P}['x'] = 'a'", {"x": "a"}, "syntax error"),
    (f"{P}['missing'] == 'a'", {"x": "a"}, 'Key not found in map : "missing"'),
    ("inputs.parameter_valuez['x'] == 1", {"x": 1}, "parameter_valuez"),
    ("undeclared == 1", {}, "undeclared reference to 'undeclared'"),
    ("3.0 == 3", {}, "no matching overload for '_==_'"),  # cel-go's checker refuses it too
    ("1u == 1", {}, "no matching overload"),
    (f"{P}['n'] + 1 == 2", {"n": 1}, "No matching overloads"),  # a double plus an int
    (f"{P}['s'] > 2", {"s": "x"}, "No matching overloads"),
    ("1 / 0 == 1", {}, "divide by zero"),
    ("1 % 0 == 1", {}, "modulus by zero"),
    ("9223372036854775807 + 1 > 0", {}, "overflow"),
    (f"int({P}['n']) > 0", {"n": math.nan}, "out of int64 range"),
    (f"int({P}['n']) > 0", {"n": 1e19}, "out of int64 range"),
    (f"int({P}['n']) > 0", {"n": -math.inf}, "out of int64 range"),
    (f"{P}['l'][3] == 1", {"l": [1]}, "index"),
    (f"{P}['n']", {"n": 1}, "not a bool"),
    (f"{P}['s']", {"s": "true"}, "the result is a string"),
    ("1 + 1", {}, "the result is a int"),
    (f"parseJson({P}['j'])['a'].map(x, x)", {"j": '{"a": [1]}'}, "the result is a list"),
    ("null", {}, "not a bool"),
    (f"parseJson({P}['j']) == 1", {"j": "{"}, "failed to unmarshal JSON"),
    (f"parseJson({P}['j']) == 1", {"j": "NaN"}, "failed to unmarshal JSON"),
    (f"parseJson({P}['j']) == 1", {"j": "1e999"}, "out of float64 range"),
    (f"parseJson({P}['j']) == 1", {"j": 3}, "No matching overloads"),
    ("parseJson(3) == 1", {}, "no matching overload for 'parseJson'"),
    (f"{P}['x'] == 1", {"x": object()}, "parameter 'x': object is not a parameter value type"),
    (f"{P}['x'] == 1", {"x": b"bytes"}, "bytes is not a parameter value type"),
    (f"{P}['x'] == 1", {"x": {1: "a"}}, "a struct key must be a string"),
    (f"{P}['x'] == 1", {"x": 10**400}, "too large for a protobuf number"),
    ("", {}, "empty expression"),
    ("   ", {}, "empty expression"),
])
def test_condition_errors(expression: str, values: dict, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        evaluate_condition(expression, values)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text
    assert text.startswith("condition ")
    assert json.dumps(expression[:200], ensure_ascii=False)[:-1] in text  # the message names the expression


def test_error_types() -> None:
    with pytest.raises(ExpressionError) as caught:
        evaluate_condition("true", ["not", "a", "mapping"])  # type: ignore[arg-type]
    assert isinstance(caught.value, InvalidArgumentError) and isinstance(caught.value, MlmdCacheError)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(ExpressionError, match="must be a string, not int"):
        evaluate_condition(3, {})  # type: ignore[arg-type]
    with pytest.raises(ExpressionError, match="must be a string, not NoneType"):
        select(None, 1)  # type: ignore[arg-type]
    with pytest.raises(ExpressionError, match="parameter name must be a string"):
        evaluate_condition("true", {1: 2})


# ---------------------------------------------------------------------------------------------
# Selectors: direct cases


@pytest.mark.parametrize("value, text", [
    ("plain text", "plain text"),
    (3, "3"),
    (3.0, "3"),
    (-0.0, "-0"),
    (0.1, "0.1"),
    (1e21, "1000000000000000000000"),  # Go's strconv 'f' format: never an exponent
    (1.5e-7, "0.00000015"),
    (math.inf, "+Inf"),
    (-math.inf, "-Inf"),
    (math.nan, "NaN"),
    (True, "true"),
    (False, "false"),
    (None, ""),
    ([1, "a", None, True, 2.5], '[1,"a",null,true,2.5]'),
    ({"b": 1, "a": {"d": [], "c": 1e21}}, '{"a":{"c":1e+21,"d":[]},"b":1}'),  # sorted, compact
    ({"x": "<&>\u2028"}, '{"x":"\\u003c\\u0026\\u003e\\u2028"}'),  # Go's HTML-safe escaping
    ({"é": "é", "z": 1e-7}, '{"z":1e-7,"é":"é"}'),
])
def test_selector_string_value(value: Any, text: str) -> None:
    assert select("string_value", value) == text


@pytest.mark.parametrize("expression, value, expected", [
    ('parseJson(string_value)["a"]', {"a": 1}, 1.0),
    ('parseJson(string_value)["a"]', {"a": "x"}, "x"),
    ('parseJson(string_value)["a"]', {"a": True}, True),
    ('parseJson(string_value)["a"]', {"a": [1, None, {"b": 2}]}, [1.0, None, {"b": 2.0}]),
    ('parseJson(string_value)["a"]["b"]', {"a": {"b": "deep"}}, "deep"),
    ("parseJson(string_value)[1]", [10, 20], 20.0),
    ("parseJson(string_value)", [1, 2], [1.0, 2.0]),
    ("parseJson(string_value)", "[1, 2]", [1.0, 2.0]),  # a string holding JSON
    ("parseJson(string_value)", 7, 7.0),
    ("number_value + 1.0", 2, 3.0),
    ("bool_value", False, False),
    ("struct_value.k", {"k": 5}, 5.0),
    ("struct_value", {"k": [5]}, {"k": [5.0]}),
    ("list_value[0]", ["first"], "first"),
    ("size(list_value)", [1, 2, 3], 3.0),  # a CEL int becomes a protobuf number
    ("size(string_value)", "héllo", 5.0),  # code points, as cel-go counts
    ("string_value + '!'", "hi", "hi!"),
    ("b'abc'", 0, "YWJj"),  # bytes become base64 text, as structpb.NewValue makes them
    ("1u", 0, 1.0),
])
def test_selector_direct(expression: str, value: Any, expected: Any) -> None:
    result = select(expression, value)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize("expression, value, message", [
    ('parseJson(string_value)["a"]', {"b": 1}, 'Key not found in map : "a"'),
    ('parseJson(string_value)["a"]', {"a": None}, "the result is null"),
    ("null_value", None, "the result is null"),
    ("number_value", "text", 'No value with name "number_value"'),  # only the set field exists
    ('parseJson(string_value)["a"]', "not json", "failed to unmarshal JSON"),
    ('parseJson(string_value)["a"]', [1], "Index error"),  # a list indexed by a string
    ("parseJson(string_value)", "NaN", "failed to unmarshal JSON"),
    ("string_value", [math.nan], "no JSON text"),  # protojson refuses NaN in a list
    ("string_value", {"x": math.inf}, "no JSON text"),
    ("duration('1s')", 0, "the result is a duration"),
    ("timestamp('2024-01-01T00:00:00Z')", 0, "the result is a timestamp"),
    ("type(1)", 0, "not a JSON value"),
    ("{1: 2}", 0, "not a struct"),
    ('parseJson(string_value["a"])', {"a": 1}, "no matching overload"),
    ("string_value ==", "x", "syntax error"),
    ("1 / 0", 0, "divide by zero"),
    # Compiled unchecked (see the dyn comprehension case above), yet still failing at run time.
    ('parseJson(string_value)["a"].all(x, x > 0) && 3.0 == 3', {"a": [1]}, "no matching overload"),
])
def test_selector_errors(expression: str, value: Any, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        select(expression, value)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text and text.startswith("selector ")


# ---------------------------------------------------------------------------------------------
# Hostile input: an ExpressionError or a correct result, never a hang or a crash


def nested_list(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("expression", [
    "(" * 5000 + "true" + ")" * 5000,
    "size(" * 1000 + "'a'" + ")" * 1000 + " == 1",
    "[" * 5000 + "]" * 5000 + " == []",
    "1 + " * 60000 + "1 == 1",
    " && ".join(["true"] * 30000),
    "'" + "a" * 2_000_000 + "' == 'a'",
    "true" + " " * 1_000_000,
    "{" + ", ".join(f"'{i}': {i}" for i in range(20000)) + "}.size() > 0",
    f"[{', '.join(map(str, range(100)))}].all(a, [{', '.join(map(str, range(100)))}].all(b, "
    f"[{', '.join(map(str, range(100)))}].all(c, [{', '.join(map(str, range(100)))}].all(d, true))))",
    "\x00",
    "inputs.parameter_values['\udcff'] == 1",
    "'\\u0000' == '\\x00'",
])
def test_hostile_expressions(expression: str) -> None:
    started = time.monotonic()
    try:
        result = evaluate_condition(expression, {})
    except ExpressionError as error:
        assert "\n" not in str(error) and len(str(error)) < 1000
    else:
        assert result in (True, False)
    assert time.monotonic() - started < 5


def test_hostile_values() -> None:
    # Nested deeper than MAX_DEPTH: an error, not a crash of the C++ conversion.
    deep = nested_list(100_000)
    with pytest.raises(ExpressionError, match="nests deeper than"):
        evaluate_condition(f"size({P}['d']) == 1", {"d": deep})
    with pytest.raises(ExpressionError, match="nests deeper than"):
        select("size(list_value)", deep)
    assert evaluate_condition(f"size({P}['d']) == 1", {"d": nested_list(expressions.MAX_DEPTH)}) is True
    with pytest.raises(ExpressionError, match="nests deeper than"):
        select("parseJson(string_value)", "[" * 100_000 + "]" * 100_000)
    with pytest.raises(ExpressionError, match="nests deeper than"):
        select("parseJson(string_value)", "[" * (expressions.MAX_DEPTH + 2) + "]" * (expressions.MAX_DEPTH + 2))
    # A comprehension over a large value stops at the iteration budget instead of running on.
    with pytest.raises(ExpressionError, match="budget"):
        evaluate_condition(f"{P}['l'].all(x, {P}['l'].all(y, x >= 0.0))", {"l": list(range(1000))})
    assert evaluate_condition(f"{P}['l'].all(x, x >= 0.0)", {"l": list(range(5000))}) is True
    # Huge values are fine.
    big = {"l": list(range(200_000)), "s": "x" * 5_000_000}
    assert evaluate_condition(f"size({P}['l']) == 200000 && size({P}['s']) == 5000000", big) is True
    # NaN and infinities are ordinary doubles.
    for value in (math.nan, math.inf, -math.inf):
        assert evaluate_condition(f"{P}['x'] == {P}['x']", {"x": value}) is (value == value)
        assert select("number_value", value) == value or math.isnan(value)


def test_random_garbage_never_escapes() -> None:
    rng = random.Random(SEED + 2)
    alphabet = "()[]{}!&|=<>+-*/%.,:?'\"\\ abcxyz019_ue\n\t"
    snippets = [f"{P}['x']", "int(", "double(", "parseJson(", "true", "null", "1u", "2.5", "'s'", "size(", "in "]
    for _ in range(500):
        parts = [rng.choice(snippets) if rng.random() < 0.3 else rng.choice(alphabet) for _ in range(rng.randint(1, 30))]
        expression = "".join(parts)
        values = {"x": rng.choice([1, 2.5, "s", True, None, [1], {"a": 1}, math.nan])}
        for call in (lambda: evaluate_condition(expression, values), lambda: select(expression, values["x"])):
            try:
                call()
            except ExpressionError as error:
                assert "\n" not in str(error)


# ---------------------------------------------------------------------------------------------
# Compiled once, fast, thread-safe


def test_programs_are_cached_and_fast() -> None:
    expression = (f"!({P}['pipelinechannel--flip-Output'] == 'heads') && "
                  f"int({P}['pipelinechannel--n']) > 2 && {P}['pipelinechannel--f'] >= 0.5")
    values = {"pipelinechannel--flip-Output": "tails", "pipelinechannel--n": 3, "pipelinechannel--f": 0.5}
    assert evaluate_condition(expression, values) is True
    before = expressions._compiled.cache_info()
    rounds = 300
    started = time.perf_counter()
    for _ in range(rounds):
        evaluate_condition(expression, values)
    condition_seconds = (time.perf_counter() - started) / rounds
    after = expressions._compiled.cache_info()
    assert after.misses == before.misses  # never compiled again
    assert after.hits >= before.hits + rounds
    selector = 'parseJson(string_value)["a"]'
    select(selector, {"a": 1})
    started = time.perf_counter()
    for _ in range(rounds):
        select(selector, {"a": 1, "b": "text"})
    select_seconds = (time.perf_counter() - started) / rounds
    assert condition_seconds < 1e-3 and select_seconds < 1e-3, (condition_seconds, select_seconds)


def test_threads() -> None:
    expression = f"int({P}['n']) % 2 == 0"
    failures: list = []

    def work(offset: int) -> None:
        for n in range(offset, offset + 300):
            if evaluate_condition(expression, {"n": n}) is not (n % 2 == 0):
                failures.append(n)
            if select("number_value", n) != float(n):
                failures.append(-n)

    threads = [threading.Thread(target=work, args=(i * 1000,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
