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


def web_config_folder(pod, container):
    """{file name: text, or None for a Secret's key} of the projected volume holding the container's
    CMX_WEB_CONFIG_FILE, and "config": that file's name; None without a web config."""
    env = {variable["name"]: variable.get("value") for variable in container["env"]}
    if "CMX_WEB_CONFIG_FILE" not in env:
        return None
    folder, _, name = env["CMX_WEB_CONFIG_FILE"].rpartition("/")
    (mount,) = [mount for mount in container["volumeMounts"] if mount["mountPath"] == folder]
    (volume,) = [volume for volume in pod["volumes"] if volume["name"] == mount["name"]]
    files = {}
    for source in volume["projected"]["sources"]:
        if "configMap" in source:
            (data,) = [document["data"] for document in of_kind("ConfigMap")
                       if document["metadata"]["name"] == source["configMap"]["name"]]
            files.update(data)
        if "secret" in source:  # a TLS Secret, made with kubectl create secret tls
            files.update(dict.fromkeys(("tls.crt", "tls.key")))
    return {**files, "config": name}
