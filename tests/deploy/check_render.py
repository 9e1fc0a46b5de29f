#!/usr/bin/env python3
"""Checks what `helm template` made of deploy/helm/trainyard for one set of values.

    check_render.py CASE RENDERED.yaml      CASE: default | production | inline-db

Beyond schema validity (kubernetes-validate does that), these are the chart's promises:
a non-root pod with a read-only root filesystem whose only writable paths are volumes,
the probes and ports the server has, secrets only through Secrets (never a ConfigMap or a
literal env value), and what each case's values ask for. Prints one line per failed
promise and exits 1 when there is any.
"""

import base64
import sys
import tomllib

import yaml

SECRET_ENV = {
    "TRAINYARD_DATABASE_URL",
    "TRAINYARD_ADMIN_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}
DATA_MOUNT = "/var/lib/trainyard"
INLINE_DB_URL = "postgres://trainyard:s3cr3t-pw@db.example.com:5432/trainyard"

problems = []


def check(cond, what):
    if not cond:
        problems.append(what)
    return cond


def main():
    case, path = sys.argv[1], sys.argv[2]
    with open(path) as f:
        text = f.read()
    docs = [d for d in yaml.safe_load_all(text) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    deps = by_kind.get("Deployment", [])
    if not check(len(deps) == 1, f"one Deployment expected, got {len(deps)}"):
        return
    dep = deps[0]
    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    annotations = dep["spec"]["template"]["metadata"].get("annotations") or {}
    selector = dep["spec"]["selector"]["matchLabels"]
    check(all(labels.get(k) == v for k, v in selector.items()), "pod labels miss the selector")
    containers = pod["containers"]
    check(len(containers) == 1, "one container expected")
    c = containers[0]
    env = {e["name"]: e for e in c.get("env", [])}

    # Non-root, read-only root filesystem, nothing to escalate with.
    psc = pod.get("securityContext", {})
    csc = c.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True, "pod runAsNonRoot is not true")
    check(psc.get("runAsUser") not in (None, 0), "pod runAsUser unset or 0")
    check(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem is not true")
    check(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation is not false")
    check("ALL" in (csc.get("capabilities", {}).get("drop") or []), "capabilities not dropped")
    check(pod.get("automountServiceAccountToken") is False, "service account token mounted")

    # Writable paths are volumes: the data dir's volume and /tmp.
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for p in (DATA_MOUNT, "/tmp"):
        m = mounts.get(p)
        if check(m is not None, f"{p} is not a volume"):
            check(m["name"] in volumes, f"{p} mounts an undefined volume {m['name']}")
            check(not m.get("readOnly"), f"{p} is mounted read-only")
    data_dir = env.get("TRAINYARD_DATA_DIR", {}).get("value", "")
    check(data_dir.startswith(DATA_MOUNT + "/"),
          f"TRAINYARD_DATA_DIR {data_dir!r} is not a subfolder of the data volume")

    # The server's addresses, ports and probes.
    check(env.get("TRAINYARD_LISTEN", {}).get("value") == "0.0.0.0:8080", "TRAINYARD_LISTEN")
    check(env.get("TRAINYARD_GRPC_LISTEN", {}).get("value") == "0.0.0.0:8081",
          "TRAINYARD_GRPC_LISTEN")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    check(ports == {"http": 8080, "grpc": 8081}, f"container ports {ports}")
    for probe, path_ in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                         ("startupProbe", "/healthz")):
        g = (c.get(probe) or {}).get("httpGet") or {}
        check(g.get("path") == path_ and g.get("port") == "http", f"{probe} is not GET {path_}")
    check(c.get("args") == ["up"], f"container args {c.get('args')}")

    # Secrets only from Secrets.
    for name in SECRET_ENV & env.keys():
        check("secretKeyRef" in (env[name].get("valueFrom") or {}),
              f"{name} is not taken from a Secret")
    for cm in by_kind.get("ConfigMap", []):
        blob = yaml.safe_dump(cm.get("data", {}))
        check("postgres://" not in blob and "postgresql://" not in blob,
              f"ConfigMap {cm['metadata']['name']} holds a database URL")
        check("SECRET" not in blob.upper(), f"ConfigMap {cm['metadata']['name']} mentions a secret")

    # The Service reaches the pods on both ports; the ServiceAccount is the pod's.
    svcs = by_kind.get("Service", [])
    if check(len(svcs) == 1, "one Service expected"):
        s = svcs[0]["spec"]
        check(all(labels.get(k) == v for k, v in s["selector"].items()),
              "Service selector does not match the pods")
        sp = {p["name"]: p["targetPort"] for p in s["ports"]}
        check(sp == {"http": "http", "grpc": "grpc"}, f"Service ports {sp}")
    sas = by_kind.get("ServiceAccount", [])
    if check(len(sas) == 1, "one ServiceAccount expected"):
        check(sas[0]["metadata"]["name"] == pod.get("serviceAccountName"),
              "pod does not use the chart's ServiceAccount")

    pvcs = by_kind.get("PersistentVolumeClaim", [])
    secrets = by_kind.get("Secret", [])
    data_volume = volumes.get(mounts.get(DATA_MOUNT, {}).get("name"), {})

    if case in ("default", "inline-db"):
        check(dep["spec"]["replicas"] == 1, "replicas is not 1")
        check(dep["spec"].get("strategy", {}).get("type") == "Recreate",
              "one server does not use the Recreate strategy")
        claim = (data_volume.get("persistentVolumeClaim") or {}).get("claimName")
        check(claim is not None, "the data volume is not a PersistentVolumeClaim")
        check([p["metadata"]["name"] for p in pvcs] == [claim], "the claim is not rendered")
        if pvcs:
            check(pvcs[0]["metadata"].get("annotations", {}).get("helm.sh/resource-policy")
                  == "keep", "the claim is not kept on uninstall")
        check("TRAINYARD_BLOBS_URL" not in env, "blobs are not local")
        check("TRAINYARD_ADMIN_TOKEN" not in env, "an admin token is injected")
        check(not by_kind.get("ConfigMap"), "a ConfigMap without config.toml")

    if case == "default":
        check("TRAINYARD_DATABASE_URL" not in env, "a database URL without database values")
        check(not secrets, "a Secret without database.url")

    if case == "inline-db":
        check(INLINE_DB_URL not in text, "the database URL appears in clear in the manifests")
        if check(len(secrets) == 1, "database.url makes one Secret"):
            sec = secrets[0]
            raw = base64.b64decode(sec["data"]["database-url"]).decode()
            check(raw == INLINE_DB_URL, "the Secret holds another URL")
            ref = (env.get("TRAINYARD_DATABASE_URL", {}).get("valueFrom") or {}).get(
                "secretKeyRef", {})
            check(ref == {"name": sec["metadata"]["name"], "key": "database-url"},
                  f"TRAINYARD_DATABASE_URL refers to {ref}")
        check("checksum/secret" in annotations, "no checksum/secret annotation")

    if case == "production":
        check(dep["spec"]["replicas"] == 2, "replicas is not 2")
        check(dep["spec"].get("strategy", {}).get("type") == "RollingUpdate",
              "several servers do not roll")
        check("emptyDir" in data_volume, "several servers share a data volume")
        check(not pvcs, "a claim rendered for several servers")
        check(not secrets, "a Secret rendered although every secret exists already")

        def ref(name):
            return (env.get(name, {}).get("valueFrom") or {}).get("secretKeyRef", {})

        check(ref("TRAINYARD_DATABASE_URL") == {"name": "trainyard-postgres", "key": "url"},
              "TRAINYARD_DATABASE_URL secret")
        check(ref("AWS_ACCESS_KEY_ID") == {"name": "trainyard-s3", "key": "AWS_ACCESS_KEY_ID"},
              "AWS_ACCESS_KEY_ID secret")
        check(ref("AWS_SECRET_ACCESS_KEY")
              == {"name": "trainyard-s3", "key": "AWS_SECRET_ACCESS_KEY"},
              "AWS_SECRET_ACCESS_KEY secret")
        check(ref("TRAINYARD_ADMIN_TOKEN") == {"name": "trainyard-admin", "key": "token"},
              "TRAINYARD_ADMIN_TOKEN secret")
        check(env.get("TRAINYARD_BLOBS_URL", {}).get("value") == "s3://ml-artifacts/trainyard/prod",
              "TRAINYARD_BLOBS_URL")
        check(env.get("AWS_REGION", {}).get("value") == "eu-central-1", "AWS_REGION")
        check(env.get("AWS_ENDPOINT_URL", {}).get("value")
              == "https://s3.eu-central-1.amazonaws.com", "AWS_ENDPOINT_URL")
        check(env.get("TRAINYARD_CPUS", {}).get("value") == "8", "TRAINYARD_CPUS")
        check(env.get("TRAINYARD_MEMORY_MB", {}).get("value") == "28000", "TRAINYARD_MEMORY_MB")
        cms = by_kind.get("ConfigMap", [])
        if check(len(cms) == 1, "config.toml makes one ConfigMap"):
            toml_text = cms[0]["data"]["trainyard.toml"]
            try:
                parsed = tomllib.loads(toml_text)
                check(parsed.get("serve", {}).get("memory_limit") == "4GiB",
                      "trainyard.toml lost [serve] memory_limit")
            except tomllib.TOMLDecodeError as e:
                check(False, f"trainyard.toml does not parse: {e}")
            cfg = env.get("TRAINYARD_CONFIG", {}).get("value", "")
            m = mounts.get("/etc/trainyard")
            check(cfg == "/etc/trainyard/trainyard.toml" and m is not None and m.get("readOnly"),
                  "the ConfigMap is not mounted where TRAINYARD_CONFIG points")
            if m is not None:
                cmv = volumes.get(m["name"], {}).get("configMap", {})
                check(cmv.get("name") == cms[0]["metadata"]["name"],
                      "the config volume is another ConfigMap")
        check("checksum/config" in annotations, "no checksum/config annotation")
        check(pod.get("nodeSelector") and pod.get("tolerations"), "nodeSelector/tolerations")
        check(c.get("resources", {}).get("limits", {}).get("memory") == "32Gi", "resources")
        check("/etc/slurm-jwt" in mounts, "extraVolumeMounts")

    return


main()
if problems:
    for p in problems:
        print(f"  {p}")
    sys.exit(1)
