"""Reading deploy/kubernetes: its documents, and the pods and containers in them."""

from .support import DEPLOY, load_yaml_documents

MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
# Kinds from the Prometheus Operator's CRDs: kubernetes-validate has no schema for them.
CRD_API_GROUPS = {"monitoring.coreos.com"}
EXPORTER = "cmx-connect-exporter"


def documents():
    """(file name, document) for every document of every manifest."""
    return [(path.name, document) for path in MANIFESTS for document in load_yaml_documents(path)]


def of_kind(kind):
    return [document for _, document in documents() if document["kind"] == kind]


def is_crd(document):
    return document["apiVersion"].split("/")[0] in CRD_API_GROUPS


def pod_specs():
    """(file name, pod spec) of every Pod and of every workload's pod template."""
    for name, document in documents():
        if document["kind"] == "Pod":
            yield name, document["spec"]
        elif document["kind"] in {"Deployment", "StatefulSet", "DaemonSet"}:
            yield name, document["spec"]["template"]["spec"]


def exporter_containers():
    """(file name, pod spec, container) of every exporter container."""
    return [(name, spec, container) for name, spec in pod_specs()
            for container in spec["containers"] if container["name"] == EXPORTER]
