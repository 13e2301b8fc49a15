"""The pipeline whose all-CACHED re-run tests/test_startup.py checks imports no KFP SDK: integer, string,
list and artifact outputs, a condition, a loop with its collected outputs and a nested pipeline.
(no `from __future__ import annotations`: KFP reads the annotations as types)"""

from kfp import dsl

from tests.pipelines import add, copy_ds, count_chars, join_ints, make_ds, square


@dsl.pipeline(name="startup-inner")
def inner(x: int) -> int:
    return square(x=x).output


@dsl.pipeline(name="startup-cached")
def startup_pipeline(n: int = 3):
    squared = square(x=n)
    made = make_ds(x=squared.output)
    copied = copy_ds(src=made.outputs["out"])
    with dsl.If(squared.output > 4):
        count_chars(data=copied.outputs["out"])
    with dsl.ParallelFor(items=[1, 2]) as item:
        looped = square(x=item)
    join_ints(xs=dsl.Collected(looped.output))
    add(a=inner(x=n).output, b=squared.output)
