"""Compiled KFP v2 pipelines (the IR YAML/JSON of ``kfp.compiler.Compiler().compile``): loading,
checking what the local runner supports, and reading a run's arguments (``--param``, ``--artifact``,
``--task-staleness``). The pipeline itself and its parameters' types are :mod:`.compiled`."""
from __future__ import annotations

import datetime
import graphlib
import itertools
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

from google.protobuf import json_format

from .._protobuf import is_repeated
from ..durations import parse_duration
from ..key import json_values
from ..store import ids
from . import expressions
from .compiled import (CompiledPipeline, ExecutorSpec, PipelineSpecError, UnsupportedPipelineError, iter_tasks,
                       pipeline_spec_pb2, upstream_tasks)
from .platform import check_platform_spec, executor_timeouts

__all__ = ["CompiledPipeline", "load_pipeline", "iter_tasks", "upstream_tasks", "UnsupportedPipelineError",
           "PipelineSpecError", "check_new_fields", "IGNORED_FIELDS", "REFUSED_FIELDS", "REFUSED_ENUM_VALUES",
           "parse_assignments", "parse_artifact_references", "parse_task_durations"]


def _yaml_loader() -> Any:
    """libyaml's parser where PyYAML has it (a compiled pipeline of thousands of tasks loads in a
    fraction of the time): ``_YAML_LOADER``, set on first use, so that PyYAML (~10 ms) is imported only
    when a pipeline is parsed, not when :mod:`mlmd_cache.pipeline.parsed_pipelines` has it parsed already."""
    loader = globals().get("_YAML_LOADER")
    if loader is None:
        import yaml

        loader = globals()["_YAML_LOADER"] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return loader


def __getattr__(name: str) -> Any:  # PEP 562: _YAML_LOADER, on first use
    if name == "_YAML_LOADER":
        return _yaml_loader()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_COMPILE_COMMAND = "kfp dsl compile --py PIPELINE.py --output PIPELINE.yaml"


def _what_it_is_instead(document: Any) -> str:
    """What to tell a user whose file parsed but is no compiled KFP v2 pipeline."""
    if isinstance(document, dict):
        if str(document.get("apiVersion", "")).startswith("argoproj.io/") or document.get("kind") == "Workflow":
            return ("a KFP v1 pipeline (an Argo Workflow), which is not supported: mlmd-cache runs KFP v2 "
                    f"pipelines; compile the pipeline with KFP SDK 2.x ({_COMPILE_COMMAND})")
        if isinstance(document.get("implementation"), dict):
            return ("a KFP v1 component (component.yaml), not a compiled pipeline: use it in a @dsl.pipeline "
                    f"(kfp.components.load_component_from_file), then compile that: {_COMPILE_COMMAND}")
    return ("not a compiled KFP v2 pipeline (it has no root and deploymentSpec); compile one with the KFP SDK: "
            f"{_COMPILE_COMMAND}")


def load_pipeline(path: str, text: Optional[str] = None) -> CompiledPipeline:
    """Read a compiled pipeline (YAML or JSON) and check that every feature it uses is supported.
    ``text``: the file's content, already read (then ``path`` only names it in messages)."""
    if str(path).endswith(".py") and os.path.isfile(path):
        raise PipelineSpecError(f"{path} is Python source, not a compiled pipeline: compile it with the KFP SDK "
                                f"first (kfp dsl compile --py {path} --output {str(path)[:-3]}.yaml), then run the YAML")
    loader = _yaml_loader()
    import yaml

    try:
        if text is None:
            with open(path, encoding="utf-8") as file:
                text = file.read()
        # A pipeline with Kubernetes settings has a second document, its platform spec.
        documents = list(itertools.islice(yaml.load_all(text, Loader=loader), 3))
    except OSError as error:
        raise PipelineSpecError(f"{path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise PipelineSpecError(f"{path}: not YAML or JSON ({str(error).splitlines()[0]})") from None
    except UnicodeDecodeError:
        raise PipelineSpecError(f"{path}: not a text file (YAML or JSON)") from None
    except RecursionError:
        raise PipelineSpecError(f"{path}: nested too deeply to be a compiled pipeline") from None
    if len(documents) > 2:
        raise PipelineSpecError(f"{path}: more than two YAML documents (a pipeline and its platform spec)")
    document = documents[0] if documents else None
    platform_spec = documents[1] if len(documents) > 1 else None
    if not isinstance(document, dict) or "root" not in document or "deploymentSpec" not in document:
        raise PipelineSpecError(f"{path}: {_what_it_is_instead(document)}")
    _check_constants(path, document)
    check_new_fields(document, platform_spec)
    spec = pipeline_spec_pb2.PipelineSpec()
    try:
        json_format.ParseDict(document, spec, ignore_unknown_fields=False)
    except (json_format.ParseError, TypeError, ValueError, OverflowError, RecursionError) as error:
        raise PipelineSpecError(f"{path}: not a KFP PipelineSpec: {(str(error).splitlines() or [type(error).__name__])[0]}") from None
    # A protobuf map iterates in an order that follows how its keys were inserted. Decoded from the
    # binary encoding with sorted keys, the order is a function of the content alone: the same whether
    # this parse made the message or the parsed-pipeline cache (mlmd_cache.pipeline.parsed_pipelines) read it.
    spec = _decoded(spec)
    try:
        executors = {name: _executor_spec(struct) for name, struct in spec.deployment_spec["executors"].items()}
    except (ValueError, KeyError, TypeError, json_format.ParseError) as error:
        raise PipelineSpecError(f"{path}: not a KFP PipelineSpec: its executors: {str(error).splitlines()[0]}") from None
    pipeline = CompiledPipeline(spec, executors)
    check_platform_spec(platform_spec, pipeline)
    pipeline = CompiledPipeline(spec, executors, executor_timeouts(platform_spec, pipeline.name))
    _check_supported(pipeline)
    return pipeline


def _executor_spec(struct: Any) -> Any:
    """An executor of the deployment spec (a Struct) as its message: kfp.local's
    ``utils.struct_to_executor_spec``, without importing the KFP SDK."""
    return _decoded(json_format.ParseDict(json_format.MessageToDict(struct), ExecutorSpec()))


def _decoded(message: Any) -> Any:
    """``message`` as decoded from its deterministic (sorted-key) binary encoding: its maps then
    iterate in an order that depends on their content only (see load_pipeline)."""
    return message.FromString(message.SerializeToString(deterministic=True))


# == Fields of the IR that the installed kfp-pipeline-spec may not know ================================
#
# An SDK newer than the installed kfp-pipeline-spec writes fields and enum values that it does not
# know (kfp 2.14-2.17.3 against 0.6.0: the list below); ParseDict would fail on the first with a
# protobuf message, and ignoring them all would run a pipeline that asks for something run-pipeline
# does not do. So the raw document is walked against the installed descriptors first
# (:func:`check_new_fields`): a field listed as harmless is dropped, whether or not the installed
# package knows it; a listed behavioural field that is set is refused by the feature the user wrote,
# known or not (a newer kfp-pipeline-spec would parse it, and the runner would still ignore it); any
# other unknown field or enum value is refused by its path, naming the SDK that wrote the document.
# Keys: (full name of the message or enum, field as the IR's JSON spells it / the enum value).

# New fields that do not change what a task computes here: why each is ignored.
IGNORED_FIELDS: dict[tuple[str, str], str] = {
    ("ml_pipelines.ComponentInputsSpec.ParameterSpec", "literals"):
        "the values a typing.Literal input allows: a check of the arguments, not a change to what runs "
        "(no SDK up to 2.17.3 writes it)",
    ("ml_pipelines.PipelineConfig", "resourceTtlOnCompletion"):
        "dsl.PipelineConfig(ttl_seconds_after_finished=): how long Kubernetes keeps a finished run's pods",
    ("ml_pipelines.PipelineConfig", "resourceTtlOnSuccess"):
        "dsl.PipelineConfig(ttl_seconds_after_success=): how long Kubernetes keeps a succeeded run's pods",
    ("ml_pipelines.PipelineConfig", "resourceTtlOnFailure"):
        "dsl.PipelineConfig(ttl_seconds_after_failure=): how long Kubernetes keeps a failed run's pods",
}

# New fields that change what runs and that run-pipeline cannot honour: (the feature as the user
# wrote it, what it needs). Refused when set (a field at its default asks for nothing).
REFUSED_FIELDS: dict[tuple[str, str], tuple[str, str]] = {
    ("ml_pipelines.ComponentSpec", "taskConfigPassthroughs"):
        ("dsl.component(task_config_passthroughs=...)",
         "the task's Kubernetes settings (resources, env, volumes, ...) handed to the component as a "
         "dsl.TaskConfig or applied to its pod"),
    ("ml_pipelines.PipelineConfig", "workspace"):
        ("dsl.PipelineConfig(workspace=...)",
         "a volume shared by the run's tasks at dsl.WORKSPACE_PATH_PLACEHOLDER"),
    ("ml_pipelines.PipelineConfig", "activeDeadlineSeconds"):
        ("dsl.PipelineConfig(active_deadline_seconds=...)",
         "a deadline for the whole run, after which KFP fails it; run-pipeline does not enforce one"),
    ("ml_pipelines.PipelineDeploymentConfig.ImporterSpec", "downloadToWorkspace"):
        ("dsl.importer(download_to_workspace=True)", "the imported artifact copied into the run's workspace volume"),
}

# New enum values that change what runs: (the feature, what it needs).
REFUSED_ENUM_VALUES: dict[tuple[str, str], tuple[str, str]] = {
    ("ml_pipelines.ParameterType.ParameterTypeEnum", "TASK_CONFIG"):
        ("a dsl.TaskConfig input", "the task's Kubernetes settings, which KFP's backend fills in"),
}

_LISTED_FIELDS = set(IGNORED_FIELDS) | set(REFUSED_FIELDS)


@dataclass(frozen=True)
class _Finding:
    """A field (``value`` is ``None`` for an enum value) of the raw document that is unknown or listed."""

    path: str  # where, as a user reads it: components.comp-train.taskConfigPassthroughs
    key: tuple[str, str]  # (message or enum full name, JSON field name or enum value)
    known: bool  # whether the installed kfp-pipeline-spec knows it
    container: Optional[dict] = None  # the dict holding the field, and its key there, to drop it
    name: str = ""


def _camel(name: str) -> str:
    """A proto field name as protojson writes it (``task_config_passthroughs`` -> ``taskConfigPassthroughs``)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _fields_by_any_name(descriptor: Any) -> dict[str, Any]:
    """A message's fields by JSON name and proto name, as ParseDict takes them (cached per message)."""
    fields = _FIELDS.get(descriptor.full_name)
    if fields is None:
        fields = {**descriptor.fields_by_name, **{field.json_name: field for field in descriptor.fields}}
        _FIELDS[descriptor.full_name] = fields
    return fields


_FIELDS: dict[str, dict[str, Any]] = {}


def _walk(message: Any, descriptor: Any, path: str, found: list[_Finding]) -> None:
    """Collect the unknown and listed fields and enum values of ``message`` (a raw dict) against
    ``descriptor``. Shapes that do not fit are left to ParseDict, which reports them in one line."""
    if not isinstance(message, dict):
        return
    fields = _fields_by_any_name(descriptor)
    for name, value in message.items():
        where = f"{path}.{name}" if path else str(name)
        field = fields.get(name)
        if field is None or (descriptor.full_name, field.json_name) in _LISTED_FIELDS:
            json_name = field.json_name if field is not None else _camel(str(name))
            found.append(_Finding(where, (descriptor.full_name, json_name), field is not None, message, name))
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for key, item in (value.items() if isinstance(value, dict) else ()):
                _walk_value(item, value_field, f"{where}.{key}", found)
        elif is_repeated(field):
            for index, item in enumerate(value if isinstance(value, list) else ()):
                _walk_value(item, field, f"{where}[{index}]", found)
        else:
            _walk_value(value, field, where, found)


def _walk_value(value: Any, field: Any, where: str, found: list[_Finding]) -> None:
    if field.message_type is not None:
        if not field.message_type.full_name.startswith("google.protobuf."):  # Struct, Value, ...: anything goes
            _walk(value, field.message_type, where, found)
    elif field.enum_type is not None and isinstance(value, str):
        known = field.enum_type.values_by_name.get(value) is not None
        if not known or (field.enum_type.full_name, value) in REFUSED_ENUM_VALUES:
            found.append(_Finding(f"{where}: {value}", (field.enum_type.full_name, value), known))


def _is_unset(value: Any) -> bool:
    """A field at its proto default: absent, as far as protobuf is concerned."""
    return value is None or value is False or value == 0 or value == "" or value == {} or value == []


def check_new_fields(document: dict, platform_spec: Any = None) -> None:
    """Drop the harmless fields of :data:`IGNORED_FIELDS` (and unknown fields left at their default)
    from a raw compiled pipeline and its platform spec, in place; refuse, in one line, a set field of
    :data:`REFUSED_FIELDS`, an enum value of :data:`REFUSED_ENUM_VALUES`, and any other field or
    enum value the installed kfp-pipeline-spec does not know, naming the SDK that compiled it and, for
    a field of a component or an executor, the first task that runs it."""
    found: list[_Finding] = []
    try:
        _walk(document, pipeline_spec_pb2.PipelineSpec.DESCRIPTOR, "", found)  # deploymentSpec: a Struct
        executors = _field(_field(document, "deploymentSpec", "deployment_spec"), "executors", "executors")
        for label, executor in (executors.items() if isinstance(executors, dict) else ()):
            _walk(executor, ExecutorSpec.DESCRIPTOR, f"deploymentSpec.executors.{label}", found)
        platforms = _field(platform_spec, "platforms", "platforms")
        for platform, single in (platforms.items() if isinstance(platforms, dict) else ()):
            config = _field(single, "pipelineConfig", "pipeline_config")
            _walk(config, pipeline_spec_pb2.PipelineConfig.DESCRIPTOR, f"platforms.{platform}.pipelineConfig", found)
    except RecursionError:
        raise PipelineSpecError("the pipeline is nested too deeply to be a compiled pipeline") from None
    name = _field(document.get("pipelineInfo", document.get("pipeline_info")), "name", "name")
    pipeline = f"pipeline {name!r}" if isinstance(name, str) else "the pipeline"
    sdk = document.get("sdkVersion", document.get("sdk_version"))
    written = f"compiled by {sdk}" if isinstance(sdk, str) and sdk else "compiled by an unknown SDK (no sdkVersion)"
    for finding in found:
        if finding.container is not None:  # a field: dropped when harmless or left at its default
            if finding.key in IGNORED_FIELDS or _is_unset(finding.container[finding.name]):
                del finding.container[finding.name]
                continue
        task = _task_of(document, finding.path)
        where = f"{pipeline}, task {task!r}" if task is not None else pipeline
        listed = REFUSED_FIELDS.get(finding.key) or REFUSED_ENUM_VALUES.get(finding.key)
        if listed is not None:
            feature, needs = listed
            raise UnsupportedPipelineError(f"{where}: {feature} ({finding.path}, {written}) is not supported by "
                                           f"run-pipeline: it needs {needs}")
        what = "enum value" if finding.container is None else "field"
        raise UnsupportedPipelineError(
            f"{where}: the {what} {finding.path} ({written}) is not supported by run-pipeline: the installed "
            f"kfp-pipeline-spec {_installed_pipeline_spec()} does not know it, and it may change what runs")


def _task_of(document: dict, path: str) -> Optional[str]:
    """The first task (by path, ``outer/inner``) that runs the component or executor a finding's path
    is in (``components.comp-train...``, ``deploymentSpec.executors.exec-train...``): a component's
    setting is the user's setting of a task. None for the pipeline's own fields, or an unused one."""
    components = _field(document, "components", "components")
    if not isinstance(components, dict):
        return None

    def owner(prefix: str, names: Any) -> Optional[str]:  # the longest key: a name may contain dots
        matches = [name for name in names if isinstance(name, str) and path.startswith(f"{prefix}{name}.")]
        return max(matches, key=len) if matches else None

    wanted: set[str] = set()
    component = owner("components.", components)
    if component is not None:
        wanted.add(component)
    else:
        executors = _field(_field(document, "deploymentSpec", "deployment_spec"), "executors", "executors")
        executor = owner("deploymentSpec.executors.", executors if isinstance(executors, dict) else ())
        if executor is None:
            return None
        wanted = {name for name, spec in components.items()
                  if isinstance(spec, dict) and spec.get("executorLabel", spec.get("executor_label")) == executor}
    paths: list[str] = []
    seen: set[int] = set()

    def visit(dag_owner: Any, prefix: str) -> None:
        if id(dag_owner) in seen:  # a hand-made document may nest a component in itself
            return
        seen.add(id(dag_owner))
        tasks = _field(_field(dag_owner, "dag", "dag"), "tasks", "tasks")
        for name, task in (tasks.items() if isinstance(tasks, dict) else ()):
            reference = _field(_field(task, "componentRef", "component_ref"), "name", "name")
            if not isinstance(reference, str):
                continue
            if reference in wanted:
                paths.append(f"{prefix}{name}")
            visit(components.get(reference), f"{prefix}{name}/")
        seen.discard(id(dag_owner))

    try:
        visit(_field(document, "root", "root"), "")
    except RecursionError:
        return None
    return min(paths) if paths else None


def _installed_pipeline_spec() -> str:
    from importlib import metadata

    try:
        return metadata.version("kfp-pipeline-spec")
    except metadata.PackageNotFoundError:
        return "(version unknown)"


def _field(message: Any, json_name: str, proto_name: str) -> Any:
    """A field of a raw document, by its JSON or proto name (ParseDict takes both); {} when absent or not a dict."""
    if not isinstance(message, dict):
        return {}
    value = message.get(json_name, message.get(proto_name))
    return value if value is not None else {}


def _check_constants(path: str, document: Mapping[str, Any]) -> None:
    """Every parameter value written in the file (defaults, task constants, loop items) is one KFP and
    MLMD can hold (:mod:`mlmd_cache.key.json_values`), checked in the raw document: protobuf would keep a
    NaN, round a huge integer or raise on one, and fail later on a lone surrogate or a deep value."""
    components = _field(document, "components", "components")
    scopes = [("the pipeline", _field(document, "root", "root"))]
    if isinstance(components, dict):
        scopes += [(f"component {name!r}", component) for name, component in components.items()]
    for scope, component in scopes:
        parameters = _field(_field(component, "inputDefinitions", "input_definitions"), "parameters", "parameters")
        for name, spec in (parameters.items() if isinstance(parameters, dict) else ()):
            if isinstance(spec, dict) and ("defaultValue" in spec or "default_value" in spec):
                json_values.check(_field(spec, "defaultValue", "default_value"),
                                  f"{path}: {scope}, parameter {name!r}: the default", error=PipelineSpecError)
        tasks = _field(_field(component, "dag", "dag"), "tasks", "tasks")
        for task_name, task in (tasks.items() if isinstance(tasks, dict) else ()):
            inputs = _field(_field(task, "inputs", "inputs"), "parameters", "parameters")
            for name, spec in (inputs.items() if isinstance(inputs, dict) else ()):
                runtime = _field(spec, "runtimeValue", "runtime_value")
                if isinstance(runtime, dict) and "constant" in runtime:
                    json_values.check(runtime["constant"], f"{path}: task {task_name!r}, input {name!r}: the constant",
                                      error=PipelineSpecError)
            items = _field(_field(_field(task, "parameterIterator", "parameter_iterator"), "items", "items"),
                           "raw", "raw")
            if isinstance(items, str):
                json_values.loads(items, f"{path}: task {task_name!r}: the dsl.ParallelFor items",
                                  error=PipelineSpecError)


_WORKSPACE_PATH = "{{$.workspace_path}}"  # dsl.WORKSPACE_PATH_PLACEHOLDER of kfp 2.17
# An input or output artifact placeholder with no .uri, .path or .metadata after it (the list as a whole).
_WHOLE_ARTIFACT = re.compile(r"\{\{\$\.(inputs|outputs)\.artifacts\['([^']*)'\]\}\}")


def _check_supported(pipeline: CompiledPipeline) -> None:
    """Refuse, before anything runs, what the runner cannot do, naming the feature."""
    def refuse(task: str, feature: str) -> None:
        raise UnsupportedPipelineError(f"pipeline {pipeline.name!r}, task {task!r}: {feature} is not supported "
                                       "by run-pipeline")

    dags = [("", pipeline.spec.root)] + [(path + "/", component) for path, _, component in iter_tasks(pipeline)
                                         if component.WhichOneof("implementation") == "dag"]
    for prefix, component in dags:
        _check_graph(pipeline, prefix, component)
    for path, task, component in iter_tasks(pipeline):
        try:
            if task.trigger_policy.condition:
                expressions.check("condition", task.trigger_policy.condition)
            for spec in task.inputs.parameters.values():
                if spec.parameter_expression_selector:
                    expressions.check("selector", spec.parameter_expression_selector)
        except expressions.ExpressionError as error:
            raise PipelineSpecError(f"pipeline {pipeline.name!r}, task {path!r}: {error}") from None
        if component.WhichOneof("implementation") == "dag":
            continue  # a nested pipeline, condition, loop or exit handler: its tasks are checked in turn
        executor = pipeline.executors.get(component.executor_label)
        if executor is None:
            raise PipelineSpecError(f"task {path!r}: no executor {component.executor_label!r}")
        if executor.WhichOneof("spec") not in ("container", "importer"):
            refuse(path, f"an executor of kind {executor.WhichOneof('spec')!r}")
        if executor.WhichOneof("spec") == "container" and not executor.container.command \
                and not executor.container.args:
            refuse(path, f"a container with no command or args (image {executor.container.image!r}: its "
                         "entrypoint is not known on the host)")
        # A workspace itself is refused with the pipeline's config (check_new_fields); its placeholder
        # left without one (a hand-edited file) would fail in kfp.local's resolver after the run began.
        if executor.WhichOneof("spec") == "container" and any(
                _WORKSPACE_PATH in item for item in (*executor.container.command, *executor.container.args)):
            refuse(path, f"dsl.WORKSPACE_PATH_PLACEHOLDER ({_WORKSPACE_PATH}: the run's workspace volume)")
        for artifact in component.output_definitions.artifacts.values():
            if artifact.is_artifact_list:
                refuse(path, "a list of output artifacts")
        if executor.WhichOneof("spec") == "container":
            for item in (*executor.container.command, *executor.container.args):
                match = _WHOLE_ARTIFACT.search(item)
                if match:
                    side, name = match.group(1), match.group(2)
                    refuse(path, f"{match.group()}, {side[:-1]} {name!r} as a whole (KFP's launcher replaces only "
                                 f"{{{{$.{side}.artifacts['{name}'].uri}}}} and .path, of its first artifact, and "
                                 "leaves this as written)")


def _check_graph(pipeline: CompiledPipeline, prefix: str, component: pipeline_spec_pb2.ComponentSpec) -> None:
    """The tasks of one DAG name only tasks and inputs that exist, and depend on each other without a cycle."""
    tasks = component.dag.tasks
    inputs = component.input_definitions
    graph: dict[str, set[str]] = {}

    def bad(task: str, what: str) -> PipelineSpecError:
        return PipelineSpecError(f"pipeline {pipeline.name!r}, task {prefix + task!r}: {what}")

    for name, task in tasks.items():
        for input_name, spec in task.inputs.parameters.items():
            if spec.WhichOneof("kind") == "component_input_parameter" \
                    and spec.component_input_parameter not in inputs.parameters:
                raise bad(name, f"input {input_name!r} reads {spec.component_input_parameter!r}, which its DAG "
                                "does not have")
        for input_name, spec in task.inputs.artifacts.items():
            if spec.WhichOneof("kind") == "component_input_artifact" \
                    and spec.component_input_artifact not in inputs.artifacts:
                raise bad(name, f"input {input_name!r} reads artifact {spec.component_input_artifact!r}, which its "
                                "DAG does not have")
        upstream = upstream_tasks(task)
        unknown = sorted(upstream - set(tasks))
        if unknown:
            raise bad(name, f"depends on {unknown[0]!r}, which is not a task of its DAG")
        graph[name] = upstream
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        cycle = error.args[1]
        raise PipelineSpecError(f"pipeline {pipeline.name!r}: tasks depend on each other in a cycle: "
                                + " -> ".join(prefix + name for name in cycle)) from None


def parse_assignments(items: Sequence[str], option: str = "--param") -> dict[str, str]:
    """``NAME=VALUE`` strings as a dict; a malformed item or a repeated name is an error."""
    result: dict[str, str] = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not name or not equals:
            raise PipelineSpecError(f"{option} {item!r}: expected NAME=VALUE")
        if name in result:
            raise PipelineSpecError(f"{option} {name!r} given twice")
        result[name] = value
    return result


def parse_artifact_references(items: Sequence[str]) -> dict[str, Union[int, str]]:
    """``--artifact NAME=ID`` (an MLMD artifact ID: ``12``, ``a:12`` or ``#12``, see
    :func:`mlmd_cache.store.ids.parse_id`) or ``NAME=URI`` (anything else).

    >>> parse_artifact_references(["data=12", "labels=#13", "model=gs://bucket/model"])
    {'data': 12, 'labels': 13, 'model': 'gs://bucket/model'}
    """
    references: dict[str, Union[int, str]] = {}
    for name, value in parse_assignments(items, "--artifact").items():
        if not value:
            raise PipelineSpecError(f"--artifact {name}=: expected an MLMD artifact ID or a URI")
        references[name] = (ids.parse_id(value, only=ids.ARTIFACT, label=f"--artifact {name}=").id
                            if ids.looks_like_id(value) else value)
    return references


def parse_task_durations(assignments: Sequence[str], what: str) -> dict[str, datetime.timedelta]:
    """``TASK=DURATION`` items (``train=12h``) as a dict; a task named twice is an error.

    >>> parse_task_durations(["train=12h", "outer/eval=P1D"], "--task-staleness")["outer/eval"].days
    1
    """
    return {task: parse_duration(text, f"{what} {task}=") for task, text in parse_assignments(assignments, what).items()}
