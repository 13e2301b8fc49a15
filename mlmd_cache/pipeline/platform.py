"""The platform spec of a compiled pipeline (kfp-kubernetes): what can run on a host, what cannot.

A pipeline that uses ``kfp.kubernetes`` (``mount_pvc``, ``use_secret_as_env``, ``add_node_selector``,
...) compiles to a YAML file with a second document, its *platform spec*::

    platforms:
      kubernetes:
        deploymentSpec:
          executors:
            exec-train:                     # an executor label of the first document's deploymentSpec
              pvcMount: [{mountPath: /data, pvcNameParameter: ...}]
              nodeSelector: {labels: {gpu: 'yes'}}

KFP's driver turns each executor's settings into the task's pod spec (``backend/src/v2/driver/k8s.go``).
:func:`check_platform_spec` refuses, before anything runs, every setting that a task on this host
cannot have, naming it as the user wrote it (``kubernetes.mount_pvc``) and the task that uses it; the
settings that only tell Kubernetes *where* or *how* to start a pod, and so do not change what a task
computes on a host, are accepted and ignored (:data:`IGNORED` says why for each). Unknown settings and
unknown platforms are refused too: a setting this module does not know may change what a task sees.

kfp-kubernetes' ``CreatePVC`` and ``DeletePVC`` are tasks, not settings: container components whose
image is ``argostub/createpvc`` / ``argostub/deletepvc`` with no command, which KFP's driver executes
itself by calling the Kubernetes API. They are refused as ``kubernetes.CreatePVC`` /
``kubernetes.DeletePVC`` whether or not the pipeline has a platform spec.
"""
from __future__ import annotations

import re
from typing import Any, Iterator, Mapping, Optional

from .compiled import CompiledPipeline, PipelineSpecError, UnsupportedPipelineError, iter_tasks

__all__ = ["check_platform_spec", "executor_timeouts", "REFUSED", "IGNORED", "ACCEPTED", "PVC_STEPS"]

# Settings that cannot be had on a host: the feature as the user wrote it, and why.
REFUSED: dict[str, tuple[str, str]] = {
    "pvcMount": ("kubernetes.mount_pvc", "a PersistentVolumeClaim mounted in the pod"),
    "secretAsEnv": ("kubernetes.use_secret_as_env", "environment variables from a Kubernetes Secret"),
    "secretAsVolume": ("kubernetes.use_secret_as_volume", "a Kubernetes Secret mounted in the pod"),
    "configMapAsEnv": ("kubernetes.use_config_map_as_env", "environment variables from a Kubernetes ConfigMap"),
    "configMapAsVolume": ("kubernetes.use_config_map_as_volume", "a Kubernetes ConfigMap mounted in the pod"),
    "fieldPathAsEnv": ("kubernetes.use_field_path_as_env", "environment variables from the pod's own fields"),
    "emptyDirMounts": ("kubernetes.empty_dir_mount", "an emptyDir volume mounted in the pod"),
    "genericEphemeralVolume": ("kubernetes.add_ephemeral_volume", "an ephemeral volume mounted in the pod"),
    "nodeSelector": ("kubernetes.add_node_selector", "a node with these labels"),
    "nodeAffinity": ("kubernetes.add_node_affinity", "a node matching a required node affinity"),
    "podAffinity": ("pod affinity (kubernetes podAffinity)", "a node chosen by the pods already on it"),
    "securityContext": ("kubernetes.set_security_context", "a pod running as another user or group"),
    "initContainers": ("kubernetes.add_init_container", "init containers run from their images"),
}

# Settings that are accepted and ignored: what they do in a cluster, and why that does not matter here.
IGNORED: dict[str, tuple[str, str]] = {
    "podMetadata": ("kubernetes.add_pod_label/add_pod_annotation",
                    "labels and annotations on the pod's metadata: read by cluster tools (and by the "
                    "downward API, which is refused as kubernetes.use_field_path_as_env), never by the task"),
    "imagePullPolicy": ("kubernetes.set_image_pull_policy",
                        "when the kubelet pulls the image: run-pipeline never pulls images"),
    "imagePullSecret": ("kubernetes.set_image_pull_secrets",
                        "registry credentials for pulling the image: run-pipeline never pulls images"),
    "tolerations": ("kubernetes.add_toleration",
                    "a toleration *allows* the pod onto tainted nodes and requires nothing: a pod with "
                    "tolerations runs unchanged on a node without taints, which a host is"),
    "enabledSharedMemory": ("shared memory (kubernetes enabledSharedMemory)",
                            "a memory-backed /dev/shm for the pod: a host already has its own /dev/shm"),
}

# Settings that are accepted and passed on to the runner: `activeDeadlineSeconds` (kubernetes.set_timeout),
# the pod's deadline. A task that ends within it behaves the same on a host; one that does not must
# be stopped and FAILED there as the kubelet does in a cluster, so the runner enforces it
# (:func:`executor_timeouts`). Refusing it would refuse a pure upper bound; ignoring it would let a
# task that KFP fails complete here and become a cache source.
ACCEPTED: dict[str, tuple[str, str]] = {
    "activeDeadlineSeconds": ("kubernetes.set_timeout", "the pod's deadline: enforced by the runner"),
}

# kfp-kubernetes' steps that KFP's driver executes itself (image, no command): feature names.
PVC_STEPS = {"argostub/createpvc": "kubernetes.CreatePVC", "argostub/deletepvc": "kubernetes.DeletePVC"}

_JSON_VARIANTS = {  # the *_json setters write another field of the same setting
    ("nodeSelector", "nodeSelectorJson"): "kubernetes.add_node_selector_json",
    ("nodeAffinity", "nodeAffinityJson"): "kubernetes.add_node_affinity_json",
    ("tolerations", "tolerationJson"): "kubernetes.add_toleration_json",
}


def _camel(name: str) -> str:
    """A proto field name as protojson writes it (``pvc_mount`` -> ``pvcMount``); camelCase stays."""
    return re.sub(r"_([a-z0-9])", lambda match: match.group(1).upper(), name)


def check_platform_spec(platform_spec: Optional[Mapping], pipeline: CompiledPipeline) -> None:
    """Refuse, before anything runs, the Kubernetes settings and steps a host cannot have.

    ``platform_spec`` is the compiled YAML file's second document (``{"platforms": {...}}``), or
    ``None`` when there is none; ``pipeline`` is the first document, loaded. Raises
    :class:`~mlmd_cache.pipeline.compiled.UnsupportedPipelineError` with a one-line message naming the
    feature as the user wrote it and the task (its path, the IR task key inside nested DAGs:
    ``condition-1/train``), or :class:`~mlmd_cache.pipeline.compiled.PipelineSpecError` for a second
    document that is not a platform spec.

    Refused (:data:`REFUSED`): anything that gives the task something only a cluster has: volumes
    (``mount_pvc``, ``empty_dir_mount``, ``add_ephemeral_volume``: a mount at an absolute path of the
    pod), Secrets and ConfigMaps as environment variables or files, the downward API
    (``use_field_path_as_env``), required scheduling constraints (``add_node_selector``, required node
    or pod affinity: they may ask for hardware this host lacks, and a pod that fits no node never
    runs), the pod's security context (another user), init containers (images), and the
    ``CreatePVC``/``DeletePVC`` steps. Every key this module does not know is refused by name.

    Ignored (:data:`IGNORED`): pod labels and annotations, the image pull policy and pull secrets
    (images are never pulled here), tolerations (they permit, never require), the shared-memory
    size; preferred (weighted) node or pod affinity terms, which a scheduler may ignore too, and an
    ``add_node_affinity_json`` constant with only preferred terms.

    Accepted for the runner (:data:`ACCEPTED`): ``set_timeout`` (``activeDeadlineSeconds``), which
    the runner must enforce: see :func:`executor_timeouts`.
    """
    tasks_by_executor: dict[str, list[str]] = {}
    for path, _task, component in iter_tasks(pipeline):
        if component.WhichOneof("implementation") == "executor_label":
            tasks_by_executor.setdefault(component.executor_label, []).append(path)

    def refuse(executor: str, feature: str, why: str) -> None:
        tasks = tasks_by_executor.get(executor) or [f"(executor {executor})"]
        raise UnsupportedPipelineError(f"pipeline {pipeline.name!r}, task {tasks[0]!r}: {feature} is not supported "
                                       f"by run-pipeline ({why})")

    for tasks in tasks_by_executor.values():
        tasks.sort()  # protobuf maps have no order: name the same task every time
    # The PVC steps: image only, run by KFP's driver itself.
    for executor, tasks in sorted(tasks_by_executor.items(), key=lambda item: item[1][0]):
        spec = pipeline.executors.get(executor)
        if spec is None or spec.WhichOneof("spec") != "container":
            continue
        container = spec.container  # KFP's driver and compiler match the image exactly (argocompiler/argo.go)
        if container.image in PVC_STEPS and not container.command and not container.args:
            refuse(executor, PVC_STEPS[container.image], "KFP's driver calls the Kubernetes API for this step")

    if platform_spec is None:
        return
    for platform, executor, settings in _executor_settings(platform_spec, pipeline.name):
        if platform != "kubernetes":
            refuse(executor, f"the platform {platform!r} (its settings for executor {executor!r})",
                   "only kfp-kubernetes settings are known")
        for key, value in settings.items():
            name = _camel(key)
            if _is_empty(value):
                continue
            if name in IGNORED or name in ACCEPTED:
                if name == "activeDeadlineSeconds":
                    _timeout(value, executor, pipeline.name)
                continue
            if name in ("nodeAffinity", "podAffinity") and _all_preferred(value):
                continue  # preferredDuringScheduling only: a wish, never a requirement
            if name in REFUSED:
                feature, why = REFUSED[name]
                if isinstance(value, Mapping):
                    for (setting, field), variant in _JSON_VARIANTS.items():
                        if setting == name and any(_camel(k) == field for k in value):
                            feature = variant
                elif isinstance(value, list):
                    for (setting, field), variant in _JSON_VARIANTS.items():
                        if setting == name and any(isinstance(item, Mapping) and any(_camel(k) == field for k in item)
                                                   for item in value):
                            feature = variant
                refuse(executor, feature, f"it needs {why}")
            refuse(executor, f"the Kubernetes setting {key!r}", "unknown to run-pipeline")


def executor_timeouts(platform_spec: Optional[Mapping], pipeline_name: str = "") -> dict[str, float]:
    """``kubernetes.set_timeout`` per executor label: ``{executor: seconds}`` (only executors that
    have one). In a cluster the pod's ``activeDeadlineSeconds`` counts from the pod's start; the
    kubelet then kills it and the task FAILS (no outputs, never a cache source): the runner should
    stop the task's process after this many seconds and fail it in the same way."""
    timeouts: dict[str, float] = {}
    if platform_spec is None:
        return timeouts
    for platform, executor, settings in _executor_settings(platform_spec, pipeline_name):
        for key, value in settings.items():
            if platform == "kubernetes" and _camel(key) == "activeDeadlineSeconds" and not _is_empty(value):
                seconds = _timeout(value, executor, pipeline_name)
                if seconds:
                    timeouts[executor] = seconds
    return timeouts


def _executor_settings(platform_spec: Mapping, pipeline_name: str) -> Iterator[tuple[str, str, Mapping]]:
    """(platform, executor label, settings) of a platform spec document, checking its shape."""
    def bad(what: str) -> PipelineSpecError:
        return PipelineSpecError(f"pipeline {pipeline_name!r}: the second YAML document is not a KFP platform spec "
                                 f"({what})")

    if not isinstance(platform_spec, Mapping):
        raise bad(f"a {type(platform_spec).__name__}, not a mapping")
    unknown = sorted(set(platform_spec) - {"platforms"})
    if unknown:
        raise bad(f"unknown key {unknown[0]!r}")
    platforms = platform_spec.get("platforms") or {}
    if not isinstance(platforms, Mapping):
        raise bad("'platforms' is not a mapping")
    for platform, single in platforms.items():
        if not isinstance(single, Mapping):
            raise bad(f"platform {platform!r} is not a mapping")
        for key, value in single.items():
            name = _camel(key)
            if name == "deploymentSpec" or _is_empty(value):
                continue
            # `platform`, `config` and `pipelineConfig` (pipeline-level settings, e.g. a workspace in
            # later KFP versions): nothing in kfp 2.13 writes them, so they are unknown here.
            raise UnsupportedPipelineError(f"pipeline {pipeline_name!r}: the {platform} platform setting {key!r} is "
                                           "not supported by run-pipeline")
        deployment = single.get("deploymentSpec", single.get("deployment_spec")) or {}
        if not isinstance(deployment, Mapping):
            raise bad(f"{platform}.deploymentSpec is not a mapping")
        unknown = sorted(set(deployment) - {"executors"})
        if unknown:
            raise bad(f"unknown key {platform}.deploymentSpec.{unknown[0]}")
        executors = deployment.get("executors") or {}
        if not isinstance(executors, Mapping):
            raise bad(f"{platform}.deploymentSpec.executors is not a mapping")
        for executor, settings in executors.items():
            if settings is None:
                continue
            if not isinstance(settings, Mapping):
                raise bad(f"the settings of executor {executor!r} are not a mapping")
            yield platform, executor, settings


def _is_empty(value: Any) -> bool:
    return value is None or value == {} or value == [] or value == ""


def _all_preferred(terms: Any) -> bool:
    """Whether every affinity term is a preferred one: weighted, or a constant
    ``add_node_affinity_json`` NodeAffinity that has only preferred terms."""
    return isinstance(terms, list) and all(_preferred(term) for term in terms)


def _preferred(term: Any) -> bool:
    if not isinstance(term, Mapping):
        return False
    json_keys = [key for key in term if _camel(key).endswith("Json")]
    if not json_keys:
        return term.get("weight") is not None
    if len(term) != 1:
        return False
    spec = term[json_keys[0]]
    runtime = spec.get("runtimeValue", spec.get("runtime_value")) if isinstance(spec, Mapping) else None
    affinity = runtime.get("constant") if isinstance(runtime, Mapping) else None
    # A pipeline parameter's NodeAffinity is known only when the run starts: it may require a node.
    # kfp-kubernetes reads the constant's keys in camelCase or snake_case (deserialize_dict_to_k8s_model_keys).
    return isinstance(affinity, Mapping) and bool(affinity) and all(
        _camel(key) == "preferredDuringSchedulingIgnoredDuringExecution" or _is_empty(value)
        for key, value in affinity.items())


def _timeout(value: Any, executor: str, pipeline_name: str) -> float:
    try:
        seconds = float(value)  # protojson writes int64 as a string: '20'
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds >= 0:  # 0: no deadline (KFP's driver sets one only when > 0)
        raise PipelineSpecError(f"pipeline {pipeline_name!r}: executor {executor!r}: kubernetes.set_timeout "
                                f"{value!r} is not a positive number of seconds")
    return seconds
