"""The platform spec (kfp-kubernetes settings, the compiled YAML's second document): pipelines compiled
here with the real kfp-kubernetes, checked by mlmd_cache.pipeline.platform.check_platform_spec."""
# (no `from __future__ import annotations`: KFP reads the components' annotations as types)

import copy
from pathlib import Path
from typing import Callable, Optional

import pytest
import yaml
from google.protobuf import json_format
from kfp import compiler, dsl
from kfp.local import utils as local_utils
from kfp.pipeline_spec import pipeline_spec_pb2

from mlmd_cache.pipeline.spec import CompiledPipeline, PipelineSpecError, UnsupportedPipelineError
from mlmd_cache.pipeline.platform import ACCEPTED, IGNORED, PVC_STEPS, REFUSED, check_platform_spec, executor_timeouts

kubernetes = pytest.importorskip("kfp.kubernetes", reason="kfp-kubernetes is a test extra (setup.cfg [test])")
from kfp.kubernetes import kubernetes_executor_config_pb2  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's default base image notice

IMAGE = "python:3.11"


@dsl.component(base_image=IMAGE)
def work(x: str = "a") -> str:
    return x


@dsl.container_component
def shout(message: str):
    return dsl.ContainerSpec(image="alpine:3.19", command=["echo"], args=[message])


def compile_documents(tmp_path: Path, pipeline) -> tuple[CompiledPipeline, Optional[dict]]:
    """The pipeline compiled to YAML, as (first document loaded, second document or None). Loaded as
    load_pipeline does, without its checks (which refuse a CreatePVC step before this module names it)."""
    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(pipeline, str(path))
    documents = list(yaml.safe_load_all(path.read_text()))
    assert len(documents) in (1, 2)
    spec = json_format.ParseDict(documents[0], pipeline_spec_pb2.PipelineSpec())
    executors = {name: local_utils.struct_to_executor_spec(struct)
                 for name, struct in spec.deployment_spec["executors"].items()}
    return CompiledPipeline(spec, executors), (documents[1] if len(documents) == 2 else None)


def check(tmp_path: Path, pipeline) -> None:
    check_platform_spec(*reversed(compile_documents(tmp_path, pipeline)))


def one_task(configure: Callable) -> Callable:
    @dsl.pipeline(name="k8s")
    def pipeline(name: str = "from-a-param"):
        configure(work(), name)

    return pipeline


# (feature named in the message, how the user wrote it)
REFUSED_CASES = [
    ("kubernetes.mount_pvc", lambda t, p: kubernetes.mount_pvc(t, pvc_name="my-pvc", mount_path="/data")),
    ("kubernetes.mount_pvc", lambda t, p: kubernetes.mount_pvc(t, pvc_name=p, mount_path="/data")),
    ("kubernetes.use_secret_as_env",
     lambda t, p: kubernetes.use_secret_as_env(t, secret_name="creds", secret_key_to_env={"user": "USER"})),
    ("kubernetes.use_secret_as_volume", lambda t, p: kubernetes.use_secret_as_volume(t, secret_name=p, mount_path="/s")),
    ("kubernetes.use_secret_as_volume",
     lambda t, p: kubernetes.use_secret_as_volume(t, secret_name="creds", mount_path="/s", optional=True)),
    ("kubernetes.use_config_map_as_env",
     lambda t, p: kubernetes.use_config_map_as_env(t, config_map_name="cm", config_map_key_to_env={"k": "K"})),
    ("kubernetes.use_config_map_as_volume",
     lambda t, p: kubernetes.use_config_map_as_volume(t, config_map_name="cm", mount_path="/cm")),
    ("kubernetes.use_field_path_as_env",
     lambda t, p: kubernetes.use_field_path_as_env(t, env_name="POD", field_path="metadata.name")),
    ("kubernetes.empty_dir_mount", lambda t, p: kubernetes.empty_dir_mount(t, volume_name="scratch", mount_path="/x")),
    ("kubernetes.add_ephemeral_volume",
     lambda t, p: kubernetes.add_ephemeral_volume(t, volume_name="v", mount_path="/v", access_modes=["ReadWriteOnce"],
                                                  size="1Gi")),
    ("kubernetes.add_node_selector",
     lambda t, p: kubernetes.add_node_selector(t, label_key="cloud.google.com/gke-accelerator", label_value="t4")),
    ("kubernetes.add_node_selector_json", lambda t, p: kubernetes.add_node_selector_json(t, {"disk": "ssd"})),
]
# Not in kfp-kubernetes 2.13; in 2.17 (each end checks the functions of its own kfp-kubernetes).
PREFERRED_TERM = {"weight": 3, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}}
if hasattr(kubernetes, "add_node_affinity"):
    REFUSED_CASES += [
        ("kubernetes.add_node_affinity", lambda t, p: kubernetes.add_node_affinity(
            t, match_expressions=[{"key": "zone", "operator": "In", "values": ["a"]}])),
        ("kubernetes.add_node_affinity", lambda t, p: kubernetes.add_node_affinity(  # a required term beside a preferred
            kubernetes.add_node_affinity(t, match_fields=[{"key": "metadata.name", "operator": "In", "values": ["n"]}]),
            match_expressions=[{"key": "zone", "operator": "In", "values": ["a"]}], weight=5)),
    ]
if hasattr(kubernetes, "add_node_affinity_json"):
    REFUSED_CASES += [
        ("kubernetes.add_node_affinity_json", lambda t, p: kubernetes.add_node_affinity_json(t, {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}})),
        ("kubernetes.add_node_affinity_json", lambda t, p: kubernetes.add_node_affinity_json(t, p)),
        ("kubernetes.add_node_affinity_json", lambda t, p: kubernetes.add_node_affinity_json(t, {
            "preferred_during_scheduling_ignored_during_execution": [PREFERRED_TERM],
            "required_during_scheduling_ignored_during_execution": {"node_selector_terms": [
                {"match_expressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}})),
    ]
if hasattr(kubernetes, "set_security_context"):
    REFUSED_CASES += [
        ("kubernetes.set_security_context", lambda t, p: kubernetes.set_security_context(t, run_as_user=1000)),
        ("kubernetes.set_security_context", lambda t, p: kubernetes.set_security_context(t, run_as_non_root=True)),
    ]


@pytest.mark.parametrize("feature, configure", REFUSED_CASES, ids=[f"{f}-{i}" for i, (f, _) in enumerate(REFUSED_CASES)])
def test_a_feature_a_host_cannot_have_is_refused_naming_it_and_the_task(tmp_path, feature, configure):
    with pytest.raises(UnsupportedPipelineError) as raised:
        check(tmp_path, one_task(configure))
    message = str(raised.value)
    assert message.startswith(f"pipeline 'k8s', task 'work': {feature} is not supported by run-pipeline (")
    assert "\n" not in message


@pytest.mark.parametrize("configure", [
    lambda t, p: kubernetes.add_pod_label(t, "team", "ml"),
    lambda t, p: kubernetes.add_pod_annotation(t, "owner", "me"),
    lambda t, p: kubernetes.set_image_pull_policy(t, "Always"),
    lambda t, p: kubernetes.set_image_pull_secrets(t, ["registry-creds"]),
    lambda t, p: kubernetes.add_toleration(t, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"),
    lambda t, p: kubernetes.add_toleration_json(t, [{"key": "k", "operator": "Equal", "value": "v"}]),
    lambda t, p: kubernetes.add_toleration_json(t, p),
    lambda t, p: kubernetes.set_timeout(t, 0),
], ids=["pod-label", "pod-annotation", "pull-policy", "pull-secrets", "toleration", "toleration-json",
        "toleration-json-param", "timeout-0"])
def test_what_only_places_or_tags_the_pod_is_ignored(tmp_path, configure):
    pipeline, platform = compile_documents(tmp_path, one_task(configure))
    check_platform_spec(platform, pipeline)
    assert executor_timeouts(platform) == {}


@pytest.mark.skipif(not hasattr(kubernetes, "add_node_affinity"), reason="this kfp-kubernetes has no add_node_affinity")
def test_a_preferred_node_affinity_is_ignored(tmp_path):
    """add_node_affinity with a weight: a preferred term, which a scheduler may ignore too."""
    def configure(task, _):
        kubernetes.add_node_affinity(task, match_expressions=[{"key": "zone", "operator": "In", "values": ["a"]}],
                                     weight=10)
        kubernetes.add_node_affinity(task, match_fields=[{"key": "metadata.name", "operator": "In", "values": ["n"]}],
                                     weight=1)

    pipeline, platform = compile_documents(tmp_path, one_task(configure))
    assert [term["weight"] for term in executor(platform)["nodeAffinity"]] == [10, 1]
    check_platform_spec(platform, pipeline)


@pytest.mark.skipif(not hasattr(kubernetes, "add_node_affinity_json"),
                    reason="this kfp-kubernetes has no add_node_affinity_json")
@pytest.mark.parametrize("affinity", [
    {"preferredDuringSchedulingIgnoredDuringExecution": [PREFERRED_TERM]},
    {"preferred_during_scheduling_ignored_during_execution": [PREFERRED_TERM],
     "required_during_scheduling_ignored_during_execution": {}},
], ids=["camel", "snake-with-an-empty-required"])
def test_a_node_affinity_json_with_only_preferred_terms_is_ignored(tmp_path, affinity):
    pipeline, platform = compile_documents(tmp_path, one_task(lambda t, p: kubernetes.add_node_affinity_json(t, affinity)))
    assert "nodeAffinityJson" in executor(platform)["nodeAffinity"][0]
    check_platform_spec(platform, pipeline)


def test_a_timeout_is_accepted_and_handed_to_the_runner(tmp_path):
    def configure(task, _):
        kubernetes.set_timeout(kubernetes.add_pod_label(task, "a", "b"), 20)

    pipeline, platform = compile_documents(tmp_path, one_task(configure))
    check_platform_spec(platform, pipeline)
    assert platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-work"]["activeDeadlineSeconds"] == "20"
    assert executor_timeouts(platform) == {"exec-work": 20.0}
    assert executor_timeouts(None) == {}


def test_no_platform_spec_is_nothing_to_refuse(tmp_path):
    pipeline, platform = compile_documents(tmp_path, one_task(lambda t, p: None))
    assert platform is None
    check_platform_spec(None, pipeline)


@dsl.pipeline(name="pvc")
def pvc_pipeline():
    pvc = kubernetes.CreatePVC(pvc_name_suffix="-scratch", access_modes=["ReadWriteOnce"], size="1Gi")
    task = work()
    kubernetes.mount_pvc(task, pvc_name=pvc.outputs["name"], mount_path="/data")
    kubernetes.DeletePVC(pvc_name=pvc.outputs["name"]).after(task)


@dsl.pipeline(name="delete-only")
def delete_pvc_pipeline():
    kubernetes.DeletePVC(pvc_name="left-over")


def test_the_pvc_steps_are_refused_by_their_names(tmp_path):
    with pytest.raises(UnsupportedPipelineError,
                       match=r"^pipeline 'pvc', task 'createpvc': kubernetes.CreatePVC is not supported"):
        check(tmp_path, pvc_pipeline)
    pipeline, platform = compile_documents(tmp_path, delete_pvc_pipeline)
    assert platform is None  # DeletePVC alone needs no platform spec: refused all the same
    assert pipeline.executors["exec-deletepvc"].container.image == "argostub/deletepvc"
    with pytest.raises(UnsupportedPipelineError,
                       match=r"^pipeline 'delete-only', task 'deletepvc': kubernetes.DeletePVC is not supported"):
        check_platform_spec(None, pipeline)
    assert set(PVC_STEPS) == {"argostub/createpvc", "argostub/deletepvc"}


@dsl.pipeline(name="inner")
def inner():
    kubernetes.use_secret_as_env(work(), secret_name="creds", secret_key_to_env={"k": "K"})


@dsl.pipeline(name="outer")
def outer(flag: bool = True):
    kubernetes.add_pod_label(shout(message="hi"), "a", "b")
    with dsl.If(flag == True):  # noqa: E712 (a KFP condition)
        inner()


def test_a_task_inside_nested_dags_is_named_by_its_path(tmp_path):
    with pytest.raises(UnsupportedPipelineError,
                       match=r"^pipeline 'outer', task 'condition-1/inner/work': kubernetes.use_secret_as_env "):
        check(tmp_path, outer)


@dsl.pipeline(name="loop")
def loop():
    with dsl.ParallelFor(["a", "b"]) as item:
        kubernetes.empty_dir_mount(work(x=item), volume_name="scratch", mount_path="/scratch")


def test_a_task_in_a_loop_is_named_by_its_static_path(tmp_path):
    with pytest.raises(UnsupportedPipelineError, match=r"task 'for-loop-2/work': kubernetes.empty_dir_mount "):
        check(tmp_path, loop)


def hand_edited(tmp_path: Path, edit: Callable[[dict], None]) -> tuple[CompiledPipeline, dict]:
    pipeline, platform = compile_documents(tmp_path, one_task(lambda t, p: kubernetes.add_pod_label(t, "a", "b")))
    platform = copy.deepcopy(platform)
    edit(platform)
    return pipeline, platform


def executor(platform: dict) -> dict:
    return platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-work"]


@pytest.mark.parametrize("key, value, feature", [
    ("shinyNewThing", {"a": 1}, "the Kubernetes setting 'shinyNewThing'"),
    ("securityContext", {"runAsUser": 1000}, "kubernetes.set_security_context"),
    ("initContainers", [{"name": "i", "image": "busybox"}], "kubernetes.add_init_container"),
    ("nodeAffinity", [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}],
     "kubernetes.add_node_affinity"),
    ("nodeAffinity", [{"nodeAffinityJson": {"componentInputParameter": "name"}}], "kubernetes.add_node_affinity_json"),
    ("podAffinity", [{"matchPodLabels": {"app": "db"}, "topologyKey": "kubernetes.io/hostname"}], "pod affinity"),
    ("pvc_mount", [{"mountPath": "/d", "constant": "x"}], "kubernetes.mount_pvc"),  # proto field names too
])
def test_settings_written_by_hand_or_by_a_newer_kfp_kubernetes(tmp_path, key, value, feature):
    pipeline, platform = hand_edited(tmp_path, lambda p: executor(p).__setitem__(key, value))
    with pytest.raises(UnsupportedPipelineError, match=r"^pipeline 'k8s', task 'work': " + feature.replace("(", r"\(")):
        check_platform_spec(platform, pipeline)


def test_preferred_affinity_and_shared_memory_are_ignored(tmp_path):
    def edit(platform):
        executor(platform)["nodeAffinity"] = [{"weight": 10, "matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a"]}]}]
        executor(platform)["podAffinity"] = [{"weight": 5, "matchPodLabels": {"app": "db"},
                                              "topologyKey": "kubernetes.io/hostname", "anti": True}]
        executor(platform)["enabledSharedMemory"] = {"volumeName": "shm", "size": "1Gi"}

    check_platform_spec(*reversed(hand_edited(tmp_path, edit)))


def test_another_platform_and_pipeline_level_settings_are_refused(tmp_path):
    pipeline, platform = hand_edited(tmp_path, lambda p: p["platforms"].__setitem__(
        "openshift", {"deploymentSpec": {"executors": {"exec-work": {"scc": "anyuid"}}}}))
    with pytest.raises(UnsupportedPipelineError, match=r"task 'work': the platform 'openshift'"):
        check_platform_spec(platform, pipeline)
    pipeline, platform = hand_edited(tmp_path, lambda p: p["platforms"]["kubernetes"].__setitem__(
        "pipelineConfig", {"workspace": {"size": "1Gi"}}))
    with pytest.raises(UnsupportedPipelineError, match=r"kubernetes platform setting 'pipelineConfig'"):
        check_platform_spec(platform, pipeline)


@pytest.mark.parametrize("document, what", [
    (["not", "a", "mapping"], "a list, not a mapping"),
    ({"platforms": {}, "extra": 1}, "unknown key 'extra'"),
    ({"platforms": {"kubernetes": {"deploymentSpec": {"executors": {"exec-work": "text"}}}}}, "not a mapping"),
])
def test_a_second_document_that_is_no_platform_spec_is_an_error(tmp_path, document, what):
    pipeline, _ = compile_documents(tmp_path, one_task(lambda t, p: None))
    with pytest.raises(PipelineSpecError, match="the second YAML document is not a KFP platform spec") as raised:
        check_platform_spec(document, pipeline)
    assert what in str(raised.value) and not isinstance(raised.value, UnsupportedPipelineError)


def test_a_bad_timeout_is_an_error(tmp_path):
    pipeline, platform = hand_edited(tmp_path, lambda p: executor(p).__setitem__("activeDeadlineSeconds", "-3"))
    with pytest.raises(PipelineSpecError, match="kubernetes.set_timeout '-3' is not a positive number of seconds"):
        check_platform_spec(platform, pipeline)


def test_every_kubernetes_setting_of_this_kfp_kubernetes_is_classified():
    """A new field of KubernetesExecutorConfig (a new kfp-kubernetes) fails here until it is refused,
    ignored or accepted on purpose (it is refused as unknown meanwhile)."""
    fields = {field.json_name for field in kubernetes_executor_config_pb2.KubernetesExecutorConfig.DESCRIPTOR.fields}
    classified = set(REFUSED) | set(IGNORED) | set(ACCEPTED)
    assert fields <= classified, sorted(fields - classified)
    assert not (set(REFUSED) & set(IGNORED)) and not (set(ACCEPTED) & (set(REFUSED) | set(IGNORED)))


COVERED = {"mount_pvc", "use_secret_as_env", "use_secret_as_volume", "use_config_map_as_env", "use_config_map_as_volume",
           "use_field_path_as_env", "empty_dir_mount", "add_ephemeral_volume", "add_node_selector",
           "add_node_selector_json", "add_pod_label", "add_pod_annotation", "set_image_pull_policy",
           "set_image_pull_secrets", "add_toleration", "add_toleration_json", "set_timeout", "CreatePVC", "DeletePVC"}
COVERED |= {name for name in ("add_node_affinity", "add_node_affinity_json", "set_security_context")
            if any(feature == f"kubernetes.{name}" for feature, _ in REFUSED_CASES)}


def test_every_function_of_kfp_kubernetes_is_tested():
    assert set(kubernetes.__all__) <= COVERED, sorted(set(kubernetes.__all__) - COVERED)
