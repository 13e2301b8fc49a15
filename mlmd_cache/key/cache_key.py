"""KFP v2 cache keys and their fingerprints.

:class:`CacheKey` wraps the ``ml_pipelines.CacheKey`` protobuf message of KFP's
``api/v2alpha1/cache_key.proto``, built on the real ``RuntimeArtifact`` and ``Value`` messages of
``kfp-pipeline-spec``. Its fingerprint is the one KFP computes: protojson, re-marshalled by Go's
``encoding/json`` (see :mod:`mlmd_cache.key.gojson`), then SHA-256.

>>> key = CacheKey.build(image="python:3.11", command=["sh", "ec"], args=["run"],
...                      input_artifacts={"dataset": [10]},
...                      output_parameters={"output_parameter": "DOUBLE"})
>>> key.fingerprint()
'3d9a2a778fa3174c6cfc6e639c507c265b5f21ef6e5b1dd70b236462cc6da464'
>>> custom_fingerprint("my-component", "custom-key")
'7a5348ebd8b216ba326ef72a8cfa070636c903428e429684b03e42dd1e772641'
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any, Mapping, Sequence, Union

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory, struct_pb2

from . import json_values
from ..errors import CacheKeyError
from .gojson import go_marshal

__all__ = ["CacheKey", "custom_fingerprint", "RuntimeArtifact", "ArtifactTypeSchema"]

_PIPELINE_SPEC_PB2 = "kfp.pipeline_spec.pipeline_spec_pb2"


def _pipeline_spec_messages() -> ModuleType:
    """kfp-pipeline-spec's generated ``pipeline_spec_pb2`` module, without running ``kfp/__init__.py``.

    kfp-pipeline-spec installs its module into the ``kfp`` package, whose ``__init__`` imports the
    whole KFP SDK, its client and the Kubernetes client (about half a second), while the generated
    module needs only protobuf. So, unless kfp is already imported, the file is loaded by its location
    (importlib's "importing a source file directly" recipe), under a name of mlmd-cache's own: under
    kfp's name it would sit in ``sys.modules`` without its parent packages, and ``import
    kfp.pipeline_spec.pipeline_spec_pb2`` would then not bind it as their attribute. When kfp later
    imports the file under its name, protobuf accepts the identical descriptor again and returns the
    message classes it made the first time (one class per descriptor, in all its implementations), so
    ``RuntimeArtifact`` here and kfp's are one class. Where no such file is found (kfp in a zip file,
    say), the ordinary import.
    """
    loaded = sys.modules.get(_PIPELINE_SPEC_PB2)
    if loaded is not None:
        return loaded
    # kfp is a pkgutil-style namespace package: its parts are the kfp/ directories on sys.path, in order.
    for entry in sys.path:
        location = os.path.join(entry or os.curdir, "kfp", "pipeline_spec", "pipeline_spec_pb2.py")
        if os.path.isfile(location):
            spec = importlib.util.spec_from_file_location("mlmd_cache._pipeline_spec_pb2", location)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.modules[spec.name] = module
            return module
    return importlib.import_module(_PIPELINE_SPEC_PB2)


pipeline_spec_pb2 = _pipeline_spec_messages()
RuntimeArtifact = pipeline_spec_pb2.RuntimeArtifact
ArtifactTypeSchema = pipeline_spec_pb2.ArtifactTypeSchema

_FieldProto = descriptor_pb2.FieldDescriptorProto


def _cache_key_file() -> descriptor_pb2.FileDescriptorProto:
    """The descriptor of KFP's cache_key.proto (package ml_pipelines), built against the
    pipeline_spec.proto that kfp-pipeline-spec registers, so the nested messages are the real ones."""
    file = descriptor_pb2.FileDescriptorProto(
        name="mlmd_cache/cache_key.proto",
        package="ml_pipelines",
        syntax="proto3",
        dependency=["google/protobuf/struct.proto", pipeline_spec_pb2.DESCRIPTOR.name],
    )

    def add_field(message, name, number, type_, type_name=None, repeated=False, json_name=None):
        field = message.field.add(name=name, number=number, type=type_, json_name=json_name or name)
        field.label = _FieldProto.LABEL_REPEATED if repeated else _FieldProto.LABEL_OPTIONAL
        if type_name:
            field.type_name = type_name

    def add_map(message, name, number, value_type, value_type_name=None, json_name=None):
        entry = message.nested_type.add(name=name[0].upper() + name[1:].replace("_", "") + "Entry")
        entry.options.map_entry = True
        add_field(entry, "key", 1, _FieldProto.TYPE_STRING)
        add_field(entry, "value", 2, value_type, value_type_name)
        add_field(message, name, number, _FieldProto.TYPE_MESSAGE,
                  f".ml_pipelines.CacheKey.{entry.name}", repeated=True, json_name=json_name)

    container = file.message_type.add(name="ContainerSpec")
    add_field(container, "image", 1, _FieldProto.TYPE_STRING)
    add_field(container, "cmdArgs", 2, _FieldProto.TYPE_STRING, repeated=True)
    add_field(container, "pvcNames", 3, _FieldProto.TYPE_STRING, repeated=True)

    names = file.message_type.add(name="ArtifactNameList")
    add_field(names, "artifactNames", 1, _FieldProto.TYPE_STRING, repeated=True)

    key = file.message_type.add(name="CacheKey")
    add_map(key, "inputArtifactNames", 1, _FieldProto.TYPE_MESSAGE, ".ml_pipelines.ArtifactNameList")
    add_map(key, "inputParameters", 2, _FieldProto.TYPE_MESSAGE, ".ml_pipelines.Value")
    add_map(key, "outputArtifactsSpec", 3, _FieldProto.TYPE_MESSAGE, ".ml_pipelines.RuntimeArtifact")
    add_map(key, "outputParametersSpec", 4, _FieldProto.TYPE_STRING)
    add_field(key, "containerSpec", 5, _FieldProto.TYPE_MESSAGE, ".ml_pipelines.ContainerSpec")
    add_map(key, "input_parameter_values", 6, _FieldProto.TYPE_MESSAGE, ".google.protobuf.Value",
            json_name="inputParameterValues")
    return file


def _load_messages():
    pool = descriptor_pool.Default()
    try:
        file = pool.FindFileByName("mlmd_cache/cache_key.proto")
    except KeyError:
        file = pool.Add(_cache_key_file()) or pool.FindFileByName("mlmd_cache/cache_key.proto")
    return {name: message_factory.GetMessageClass(file.message_types_by_name[name])
            for name in ("CacheKey", "ContainerSpec", "ArtifactNameList")}


_MESSAGES = _load_messages()
CacheKeyMessage = _MESSAGES["CacheKey"]

OutputArtifactSpec = Union[str, RuntimeArtifact, Mapping[str, Any]]


def custom_fingerprint(component_name: str, cache_key: str) -> str:
    """The fingerprint KFP uses when a task sets a custom cache key (``cachingOptions.cacheKey``):
    SHA-256 of ``component_name + "\\x00" + cache_key``, or of ``cache_key`` alone without a component
    name. Nothing else about the task counts.

    >>> custom_fingerprint("my-component", "my-custom-cache-key")
    'ad05e747b67b95e4fc4ce080cdb5850f89744360a85753b90a1a434d46dedd2e'
    """
    if not cache_key:
        raise CacheKeyError("a custom cache key must not be empty")
    text = f"{component_name}\x00{cache_key}" if component_name else cache_key
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _artifact_spec(name: str, spec: OutputArtifactSpec) -> RuntimeArtifact:
    if isinstance(spec, RuntimeArtifact):
        artifact = RuntimeArtifact()
        artifact.CopyFrom(spec)
        artifact.ClearField("uri")  # KFP wipes the per-run URI from the key.
        return artifact
    if isinstance(spec, str):
        return RuntimeArtifact(type=ArtifactTypeSchema(schema_title=spec))
    if isinstance(spec, Mapping):
        try:
            return json_format.ParseDict(dict(spec), RuntimeArtifact())
        except json_format.ParseError as error:
            raise CacheKeyError(f"output artifact {name!r}: {_one_line(error)}") from None
    raise CacheKeyError(f"output artifact {name!r}: expected a schema title, a dict or a RuntimeArtifact, "
                        f"got {type(spec).__name__}")


class CacheKey:
    """A KFP v2 cache key: what a task runs, on which inputs, promising which outputs.

    Build one from its parts with :meth:`build` or parse KFP's JSON form with :meth:`from_json`.
    Equal keys (same fingerprint) compare equal.
    """

    __slots__ = ("_message", "_hashed")

    def __init__(self, message: Any = None) -> None:
        self._message = CacheKeyMessage()
        if message is not None:
            self._message.CopyFrom(message)
        self._hashed: bytes | None = None

    @classmethod
    def build(
        cls,
        *,
        image: str,
        command: Sequence[str] = (),
        args: Sequence[str] = (),
        pvc_names: Sequence[str] = (),
        input_artifacts: Mapping[str, Union[int, Sequence[int]]] | None = None,
        input_parameters: Mapping[str, Any] | None = None,
        output_artifacts: Mapping[str, OutputArtifactSpec] | None = None,
        output_parameters: Mapping[str, str] | None = None,
    ) -> "CacheKey":
        """Build the key KFP's driver builds for a container task.

        ``command`` and ``args`` are the component's, unresolved (placeholders stay as written).
        ``input_artifacts`` maps an input name to the MLMD ID(s) of its artifact(s);
        ``input_parameters`` maps a name to a JSON value (numbers become float64, as in KFP);
        ``output_artifacts`` maps an output name to a schema title such as ``"system.Model"`` (or a
        ``RuntimeArtifact``/its JSON dict with ``type`` and ``metadata``); ``output_parameters`` maps a
        name to a parameter type name (``STRING``, ``NUMBER_DOUBLE``, ...).
        """
        message = CacheKeyMessage()
        message.containerSpec.image = image
        message.containerSpec.cmdArgs.extend([*command, *args])
        message.containerSpec.pvcNames.extend(sorted(set(pvc_names)))
        for name, ids in (input_artifacts or {}).items():
            id_list = [ids] if isinstance(ids, int) else list(ids)
            for artifact_id in id_list:
                if isinstance(artifact_id, bool) or not isinstance(artifact_id, int) or artifact_id <= 0:
                    raise CacheKeyError(f"input artifact {name!r}: {artifact_id!r} is not an MLMD artifact ID")
            message.inputArtifactNames[name].artifactNames.extend(str(i) for i in id_list)
        for name, value in (input_parameters or {}).items():
            json_values.check(value, f"input parameter {name!r}", error=CacheKeyError)
            try:
                parsed = json_format.ParseDict(value, struct_pb2.Value())
            except (json_format.Error, TypeError, ValueError) as error:
                raise CacheKeyError(f"input parameter {name!r}: {value!r:.60} is not a JSON value "
                                    f"({_one_line(error)})") from None
            message.input_parameter_values[name].CopyFrom(parsed)
        for name, spec in (output_artifacts or {}).items():
            message.outputArtifactsSpec[name].CopyFrom(_artifact_spec(name, spec))
        for name, type_name in (output_parameters or {}).items():
            message.outputParametersSpec[name] = type_name
        return cls(message)

    @classmethod
    def from_json(cls, source: Union[str, bytes, Mapping[str, Any]]) -> "CacheKey":
        """Parse KFP's protojson form (JSON names or proto field names). Unknown fields are errors.

        Numbers are read as KFP's Go code reads them: an integer a float64 cannot hold exactly is the
        nearest float64 (KFP hashes ``12345678901234567890`` as ``12345678901234567000``)."""
        # A parameter value sits two levels down (inputParameterValues.NAME): it may nest MAX_DEPTH more.
        depth = json_values.MAX_DEPTH + 2
        if isinstance(source, (str, bytes)):
            document = json_values.loads(source, "cache key", error=CacheKeyError, max_depth=depth,
                                         kfp_numbers=True)
        else:
            document = json_values.to_kfp_numbers(dict(source))
            json_values.check(document, "cache key", error=CacheKeyError, max_depth=depth)
        if not isinstance(document, dict):
            raise CacheKeyError(f"a cache key is a JSON object, not {type(document).__name__}")
        try:
            return cls(json_format.ParseDict(document, CacheKeyMessage()))
        except json_format.ParseError as error:
            raise CacheKeyError(f"not a KFP cache key: {_one_line(error)}") from None

    @property
    def message(self) -> Any:
        """A copy of the underlying ``ml_pipelines.CacheKey`` protobuf message."""
        copy = CacheKeyMessage()
        copy.CopyFrom(self._message)
        return copy

    def to_dict(self) -> dict[str, Any]:
        """The protojson form as Python values: JSON names, empty fields omitted, int64 as strings."""
        return json_format.MessageToDict(self._message)

    def to_json(self) -> str:
        """The canonical JSON text of the key: exactly the bytes KFP hashes, decoded."""
        return self.hashed_bytes().decode("utf-8")

    def hashed_bytes(self) -> bytes:
        """The exact bytes KFP hashes: the protojson form re-marshalled by Go's encoding/json."""
        if self._hashed is None:
            try:
                self._hashed = go_marshal(self.to_dict())
            except ValueError as error:
                raise CacheKeyError(str(error)) from None
        return self._hashed

    def fingerprint(self) -> str:
        """The KFP fingerprint: lowercase hex SHA-256 of :meth:`hashed_bytes`."""
        return hashlib.sha256(self.hashed_bytes()).hexdigest()

    @property
    def image(self) -> str:
        return self._message.containerSpec.image

    @property
    def command_args(self) -> list[str]:
        return list(self._message.containerSpec.cmdArgs)

    @property
    def pvc_names(self) -> list[str]:
        return list(self._message.containerSpec.pvcNames)

    @property
    def input_artifact_ids(self) -> dict[str, list[int]]:
        """Input name -> MLMD artifact IDs. Raises :class:`CacheKeyError` for names that are not IDs."""
        result = {}
        for name, names in self._message.inputArtifactNames.items():
            try:
                result[name] = [int(text) for text in names.artifactNames]
            except ValueError:
                raise CacheKeyError(f"input artifact {name!r}: {list(names.artifactNames)} are not MLMD IDs") from None
        return result

    @property
    def input_parameters(self) -> dict[str, Any]:
        """Input parameter values as JSON values, from ``inputParameterValues`` and, for keys written
        by old KFP versions, the deprecated ``inputParameters``."""
        values = {name: json_format.MessageToDict(value) for name, value in self._message.inputParameters.items()}
        values.update(json_format.MessageToDict(self._message)["inputParameterValues"]
                      if self._message.input_parameter_values else {})
        return values

    @property
    def output_artifact_types(self) -> dict[str, str]:
        """Output name -> schema title (``system.Artifact`` when the type names none)."""
        return {name: _schema_title(spec.type) for name, spec in self._message.outputArtifactsSpec.items()}

    @property
    def output_parameter_types(self) -> dict[str, str]:
        return dict(self._message.outputParametersSpec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CacheKey) and self.hashed_bytes() == other.hashed_bytes()

    def __hash__(self) -> int:
        return hash(self.hashed_bytes())

    def __repr__(self) -> str:
        return f"CacheKey({self.to_json()})"


def _one_line(error: Exception) -> str:
    # protobuf's ParseError lists every known field on a second line: keep the sentence that matters.
    return str(error).splitlines()[0].strip()


def _schema_title(schema: ArtifactTypeSchema) -> str:
    if schema.schema_title:
        return schema.schema_title
    # An instance schema is YAML whose "title:" line names the type (KFP's own convention).
    for line in schema.instance_schema.splitlines():
        if line.startswith("title:"):
            return line.partition(":")[2].strip()
    return "system.Artifact"
