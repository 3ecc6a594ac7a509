#!/usr/bin/env python3
"""Static checks of the container image definition and the rendered
Kubernetes manifests, for .ci/checks/40-deploy-manifests.sh.

    deploy_manifests.py dockerfile BINARY
        The Dockerfile and .dockerignore at the workspace root: non-root
        numeric USER, `heartrule` as ENTRYPOINT, a HEALTHCHECK on /health
        with the tool it needs installed, COPY sources that exist and are
        not ignored, the config folder where HEARTRULE_CONFIG_DIR points,
        and every shared library BINARY links provided by the runtime stage.

    deploy_manifests.py manifests RENDER_DIR OUT_DIR
        RENDER_DIR holds `<overlay>.yaml` and `<overlay>-migration.yaml` as
        rendered by kustomize. Checks the hardening and wiring the manifests
        claim, and writes to OUT_DIR: `<overlay>.env` (the ConfigMap as
        environment, for `heartrule check-config`), `<overlay>.rules.yml`
        (the PrometheusRule's groups, for `promtool check rules`) and
        `<overlay>-core.yaml` (the resources Kubernetes' own schemas cover,
        for kubernetes-validate; the Prometheus Operator kinds are checked
        here instead).

    deploy_manifests.py healthcheck
        Prints the runtime stage's HEALTHCHECK command, one argument a line.

    deploy_manifests.py checkov-ids
        The required checkov check ids, comma-separated (for --check).

    deploy_manifests.py checkov REPORT.json
        Every required checkov check passed at least once, on each kind it
        is required for, and none failed.

Each failure is printed; the exit status is 1 if there was any.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
FAILURES: list[str] = []

# The image's user; the manifests must agree with the Dockerfile.
IMAGE_UID = 10001
POD_KINDS = ("Deployment", "Job", "CronJob")
SECRET_NAME = "heartrule-secrets"
# Environment variable names that carry credentials: only ever from a Secret.
SECRET_ENV = re.compile(r"(DATABASE_URL|REDIS_URL|API_KEY|PASSWORD|TOKEN|SECRET)", re.I)
OPERATOR_GROUP = "monitoring.coreos.com/"
# Well-formed values for the variables the Secret provides, so that the
# configuration check exercises their parsing too.
SECRET_STAND_INS = {
    "DATABASE_URL": "postgres://heartrule@db.invalid:5432/heartrule",
    "REDIS_URL": "redis://cache.invalid:6379",
}


def fail(message: str) -> None:
    FAILURES.append(message)
    print(f"FAIL: {message}", file=sys.stderr)


def expect(condition: bool, message: str) -> bool:
    if not condition:
        fail(message)
    return condition


# --------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments
    and parser directives dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions:
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def dockerignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        patterns.append((negate, line.lstrip("!").rstrip("/")))
    return patterns


def ignored(path: str, patterns: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a
    parent folder excludes everything below it."""
    path = path.rstrip("/")
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for negate, pattern in patterns:
        pattern = pattern.replace("**/", "*/") if pattern.startswith("**/") else pattern
        hit = any(fnmatch.fnmatchcase(p, pattern) for p in prefixes)
        if pattern.startswith("*/"):
            hit = hit or any(fnmatch.fnmatchcase(p, pattern[2:]) for p in prefixes)
        if hit:
            result = not negate
    return result


def copy_args(arguments: str) -> tuple[dict[str, str], list[str]]:
    words = shlex.split(arguments)
    flags = {}
    rest = []
    for word in words:
        if word.startswith("--"):
            key, _, value = word[2:].partition("=")
            flags[key] = value
        else:
            rest.append(word)
    return flags, rest


def check_dockerfile(binary: Path) -> None:
    instructions = dockerfile_instructions((ROOT / "Dockerfile").read_text())
    all_stages = stages(instructions)
    expect(len(all_stages) >= 2, "Dockerfile: not a multi-stage build")
    runtime = all_stages[-1]
    names = {
        i[1].split()[-1].lower()
        for stage in all_stages
        for i in stage[:1]
        if " as " in i[1].lower()
    }

    # The build: a release build of the server package, locked to Cargo.lock,
    # after a dependency-only layer.
    runs = [args for stage in all_stages[:-1] for word, args in stage if word == "RUN"]
    expect(any("cargo chef cook" in r and "--release" in r for r in runs),
           "Dockerfile: no cached dependency layer (cargo chef cook --release)")
    expect(any("cargo build" in r and "--release" in r and "--locked" in r
               and "-p heartrule-server" in r for r in runs),
           "Dockerfile: no `cargo build --release --locked -p heartrule-server`")

    users = [args for word, args in runtime if word == "USER"]
    if expect(users, "Dockerfile: the runtime stage sets no USER (it would run as root)"):
        user = users[-1].split(":")[0]
        expect(user.isdigit() and int(user) == IMAGE_UID,
               f"Dockerfile: USER {users[-1]} is not the numeric non-root UID {IMAGE_UID} "
               "that the manifests' runAsUser expects")

    entrypoints = [args for word, args in runtime if word == "ENTRYPOINT"]
    if expect(entrypoints, "Dockerfile: no ENTRYPOINT in the runtime stage"):
        try:
            entry = json.loads(entrypoints[-1])
        except json.JSONDecodeError:
            entry = None
        expect(entry == ["heartrule"],
               f"Dockerfile: ENTRYPOINT {entrypoints[-1]} is not the exec form [\"heartrule\"]")

    env: dict[str, str] = {}
    for word, args in runtime:
        if word == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", args):
                env[key] = value
    port = env.get("API_PORT", "8000")
    expect(any(w == "EXPOSE" and a.split("/")[0] == port for w, a in runtime),
           f"Dockerfile: EXPOSE does not match API_PORT {port}")

    healthchecks = [args for word, args in runtime if word == "HEALTHCHECK"]
    if expect(healthchecks, "Dockerfile: no HEALTHCHECK in the runtime stage"):
        check = healthchecks[-1]
        expect("/health" in check, "Dockerfile: HEALTHCHECK does not probe /health")
        expect("curl" not in check or any(
            w == "RUN" and re.search(r"apt-get install[^&]*\bcurl\b", a) for w, a in runtime),
            "Dockerfile: HEALTHCHECK uses curl, which the runtime stage does not install")

    # COPY sources exist and reach the build context; the config folder is
    # copied to where HEARTRULE_CONFIG_DIR points; the binary is on PATH.
    patterns = dockerignore_patterns()
    destinations: dict[str, str] = {}
    for stage in all_stages:
        for word, args in stage:
            if word not in ("COPY", "ADD"):
                continue
            flags, paths = copy_args(args)
            *sources, destination = paths
            if "from" in flags:
                expect(flags["from"].lower() in names,
                       f"Dockerfile: COPY --from={flags['from']} names no stage")
                if stage is runtime:
                    destinations[sources[0]] = destination
                continue
            for source in sources:
                if source == ".":
                    continue
                expect((ROOT / source).exists(), f"Dockerfile: COPY source {source} does not exist")
                expect(not ignored(source, patterns),
                       f"Dockerfile: COPY source {source} is excluded by .dockerignore")
                if stage is runtime:
                    destinations[source.rstrip("/")] = destination.rstrip("/")
    config_dir = env.get("HEARTRULE_CONFIG_DIR")
    expect(config_dir is not None and destinations.get("config") == config_dir,
           f"Dockerfile: HEARTRULE_CONFIG_DIR={config_dir} is not where config/ is copied "
           f"({destinations.get('config')})")
    expect(destinations.get("/out/heartrule") == "/usr/local/bin/heartrule",
           "Dockerfile: the binary is not copied to /usr/local/bin/heartrule")
    # What the build reads at compile time must be in the context.
    for needed in ("Cargo.toml", "Cargo.lock", "crates", "migrations", "config", "README.md"):
        expect(not ignored(needed, patterns), f".dockerignore excludes {needed}, which the build reads")

    # Every shared library the binary needs comes from the runtime stage.
    provided_by_base = {"linux-vdso.so.1", "libc.so.6", "libm.so.6", "libgcc_s.so.1",
                        "ld-linux-x86-64.so.2", "libpthread.so.0", "libdl.so.2", "librt.so.1"}
    by_package = {"libssl.so.3": "libssl3", "libcrypto.so.3": "libssl3"}
    installed = " ".join(a for w, a in runtime if w == "RUN")
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libraries = [line.split()[0].rsplit("/", 1)[-1] for line in ldd.splitlines() if line.strip()]
    expect(libraries, f"ldd listed no library for {binary}")
    for library in libraries:
        if library in provided_by_base:
            continue
        package = by_package.get(library)
        expect(package is not None and re.search(rf"\b{re.escape(package)}\b", installed),
               f"Dockerfile: the binary links {library}, which the runtime stage does not install"
               + (f" (Debian package {package})" if package else ""))


# --------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------

def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def pod_spec(resource: dict) -> dict:
    kind = resource["kind"]
    if kind == "CronJob":
        return resource["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return resource["spec"]["template"]["spec"]


def pod_labels(resource: dict) -> dict:
    if resource["kind"] == "CronJob":
        return resource["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    return resource["spec"]["template"]["metadata"]["labels"]


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", text.strip())
    if not match:
        raise ValueError(f"unsupported duration {text!r}")
    return int(match.group(1)) * units[match.group(2)]


def check_pod(where: str, resource: dict, service_accounts: set[str]) -> None:
    spec = pod_spec(resource)
    expect(spec.get("automountServiceAccountToken") is False,
           f"{where}: automountServiceAccountToken is not false")
    account = spec.get("serviceAccountName")
    expect(account in service_accounts,
           f"{where}: serviceAccountName {account!r} is not rendered alongside it")
    security = spec.get("securityContext", {})
    expect(security.get("runAsNonRoot") is True, f"{where}: pod runAsNonRoot is not true")
    expect(security.get("runAsUser") == IMAGE_UID, f"{where}: pod runAsUser is not {IMAGE_UID}")
    expect(security.get("seccompProfile", {}).get("type") == "RuntimeDefault",
           f"{where}: pod seccompProfile is not RuntimeDefault")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        expect(not spec.get(key), f"{where}: {key} is set")
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        name = f"{where} container {container['name']}"
        context = container.get("securityContext", {})
        expect(context.get("allowPrivilegeEscalation") is False,
               f"{name}: allowPrivilegeEscalation is not false")
        expect(context.get("readOnlyRootFilesystem") is True,
               f"{name}: readOnlyRootFilesystem is not true")
        expect(context.get("privileged") in (None, False), f"{name}: privileged")
        expect(context.get("capabilities", {}).get("drop") == ["ALL"],
               f"{name}: capabilities.drop is not [ALL]")
        expect(not context.get("capabilities", {}).get("add"), f"{name}: adds capabilities")
        expect(context.get("runAsUser", IMAGE_UID) == IMAGE_UID and context.get("runAsNonRoot", True),
               f"{name}: runs as another user than {IMAGE_UID}")
        resources = container.get("resources", {})
        for section in ("requests", "limits"):
            for what in ("cpu", "memory"):
                expect(what in resources.get(section, {}), f"{name}: no {section}.{what}")
        image = container.get("image", "")
        expect(re.search(r"[:@]", image.rsplit("/", 1)[-1]) is not None
               and not image.endswith(":latest"),
               f"{name}: image {image!r} has no fixed tag or digest")
        for variable in container.get("env", []):
            if SECRET_ENV.search(variable["name"]):
                reference = variable.get("valueFrom", {}).get("secretKeyRef")
                expect("value" not in variable and reference is not None
                       and reference.get("name") == SECRET_NAME,
                       f"{name}: {variable['name']} is not taken from Secret {SECRET_NAME}")


def check_overlay(render_dir: Path, overlay: str, out_dir: Path) -> None:
    resources = load_all(render_dir / f"{overlay}.yaml")
    migration = load_all(render_dir / f"{overlay}-migration.yaml")
    by_kind: dict[str, list[dict]] = {}
    for resource in resources:
        by_kind.setdefault(resource["kind"], []).append(resource)

    def one(kind: str) -> dict:
        found = by_kind.get(kind, [])
        expect(len(found) == 1, f"{overlay}: {len(found)} {kind} resources, expected 1")
        return found[0] if found else {}

    for resource in resources + migration:
        expect(resource["kind"] != "Secret",
               f"{overlay}: renders Secret {resource['metadata']['name']}: secrets are "
               "created by the operator, never kept in the repository")
    namespaces = {r["metadata"].get("namespace") for r in resources + migration}
    expect(len(namespaces) == 1 and None not in namespaces and "default" not in namespaces,
           f"{overlay}: resources in namespaces {namespaces}, expected one non-default namespace")

    accounts = {r["metadata"]["name"] for r in by_kind.get("ServiceAccount", [])}
    for account in by_kind.get("ServiceAccount", []):
        expect(account.get("automountServiceAccountToken") is False,
               f"{overlay}: ServiceAccount {account['metadata']['name']} mounts its token")

    deployment = one("Deployment")
    configmap = one("ConfigMap")
    service = one("Service")
    hpa = one("HorizontalPodAutoscaler")
    pdb = one("PodDisruptionBudget")
    policy = one("NetworkPolicy")
    cronjob = one("CronJob")
    if not deployment or not configmap:
        return
    config = configmap.get("data", {})
    for key in config:
        expect(not SECRET_ENV.search(key), f"{overlay}: ConfigMap holds {key}, a secret")

    # Deployment: probes, graceful termination, replicas left to the HPA.
    where = f"{overlay} Deployment"
    check_pod(where, deployment, accounts)
    expect("replicas" not in deployment["spec"],
           f"{where}: sets replicas, which every apply would reset under the HPA")
    spec = pod_spec(deployment)
    server = spec["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in server.get("ports", [])}
    for probe, path in (("startupProbe", "/health"), ("livenessProbe", "/health"),
                        ("readinessProbe", "/ready")):
        get = server.get(probe, {}).get("httpGet", {})
        expect(get.get("path") == path, f"{where}: {probe} does not GET {path}")
        expect(get.get("port") in ports or get.get("port") in ports.values(),
               f"{where}: {probe} port {get.get('port')} is not a container port")
    expect(str(ports.get("http")) == config.get("API_PORT", "8000"),
           f"{where}: container port {ports.get('http')} is not the server's port")
    pre_stop = server.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep = int(pre_stop[1]) if len(pre_stop) == 2 and pre_stop[0] == "sleep" else 0
    expect(sleep >= 5, f"{where}: no preStop sleep of at least 5s to let endpoints drain")
    defaults = yaml.safe_load((ROOT / "config" / "default.yaml").read_text())
    grace = duration_seconds(config.get("HEARTRULE__SERVER__SHUTDOWN_GRACE_PERIOD",
                                        defaults["server"]["shutdown_grace_period"]))
    termination = spec.get("terminationGracePeriodSeconds", 30)
    expect(termination >= sleep + grace + 5,
           f"{where}: terminationGracePeriodSeconds {termination} < preStop {sleep}s + "
           f"shutdown_grace_period {grace:g}s + 5s to flush")
    expect(config.get("HEARTRULE__DATABASE__RUN_MIGRATIONS") == "false",
           f"{overlay}: replicas would migrate at start-up; the migration Job does it")
    constraints = spec.get("topologySpreadConstraints", [])
    keys = [(c["topologyKey"], c["whenUnsatisfiable"]) for c in constraints]
    expect({k for k, _ in keys} >= {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
           and len({k for k, _ in keys}) == len(keys),
           f"{where}: topology spread {keys}: want one rule per hostname and zone")
    labels = pod_labels(deployment)
    for constraint in constraints:
        expect(matches(constraint["labelSelector"]["matchLabels"], labels),
               f"{where}: topology spread selector does not match the pods")
    env_from = [e.get("configMapRef", {}).get("name") for e in server.get("envFrom", [])]
    expect(configmap["metadata"]["name"] in env_from, f"{where}: does not read the ConfigMap")

    # Service, HPA, PDB, NetworkPolicy, ServiceMonitor point at these pods.
    expect(matches(service["spec"]["selector"], labels), f"{overlay}: Service selects no server pod")
    expect(all(p["targetPort"] in ports for p in service["spec"]["ports"]),
           f"{overlay}: Service targets a port the container does not name")
    expect(hpa.get("apiVersion") == "autoscaling/v2", f"{overlay}: HPA is not autoscaling/v2")
    expect(hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"],
           f"{overlay}: HPA scales another Deployment")
    expect(1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"],
           f"{overlay}: HPA replica bounds are inverted")
    expect(matches(pdb["spec"]["selector"]["matchLabels"], labels),
           f"{overlay}: PodDisruptionBudget selects no server pod")
    expect(matches(policy["spec"]["podSelector"]["matchLabels"], labels)
           and set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"},
           f"{overlay}: NetworkPolicy does not restrict both directions of the server pods")
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}
    expect({53, 5432, 6379, 443} <= egress_ports,
           f"{overlay}: NetworkPolicy egress lacks DNS, PostgreSQL, Redis or HTTPS: {egress_ports}")
    monitors = by_kind.get("ServiceMonitor", [])
    if expect(len(monitors) == 1, f"{overlay}: no ServiceMonitor"):
        monitor = monitors[0]
        expect(matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]),
               f"{overlay}: ServiceMonitor selects no Service")
        service_ports = {p["name"] for p in service["spec"]["ports"]}
        expect(all(e.get("port") in service_ports and e.get("path") == "/metrics"
                   for e in monitor["spec"]["endpoints"]),
               f"{overlay}: ServiceMonitor scrapes a port or path the Service does not serve")

    # The maintenance CronJob: the same hardening, the agreed command line.
    if cronjob:
        check_pod(f"{overlay} CronJob", cronjob, accounts)
        container = pod_spec(cronjob)["containers"][0]
        expect(container.get("args") == ["maintenance", "cleanup"] and "command" not in container,
               f"{overlay}: the CronJob does not run `heartrule maintenance cleanup`")
        expect(cronjob["spec"].get("concurrencyPolicy") == "Forbid",
               f"{overlay}: maintenance runs may overlap")

    # The migration: same image and namespace as the server, its own SA.
    migration_accounts = {r["metadata"]["name"] for r in migration if r["kind"] == "ServiceAccount"}
    jobs = [r for r in migration if r["kind"] == "Job"]
    if expect(len(jobs) == 1, f"{overlay}-migration: {len(jobs)} Jobs, expected 1"):
        check_pod(f"{overlay}-migration Job", jobs[0], migration_accounts)
        job_container = pod_spec(jobs[0])["containers"][0]
        expect(job_container.get("args") == ["migrate"],
               f"{overlay}-migration: the Job does not run `heartrule migrate`")
        expect(job_container["image"] == server["image"],
               f"{overlay}-migration: image {job_container['image']} differs from the "
               f"server's {server['image']}: update both kustomization files")
        expect(pod_spec(jobs[0]).get("restartPolicy") == "Never",
               f"{overlay}-migration: the Job's pods restart in place")
    expect(any(r["kind"] == "NetworkPolicy" for r in migration),
           f"{overlay}-migration: the Job runs without the NetworkPolicy on a fresh install")

    # The Prometheus Operator resources, which no Kubernetes schema covers.
    rules = by_kind.get("PrometheusRule", [])
    groups = []
    if expect(len(rules) == 1, f"{overlay}: {len(rules)} PrometheusRule resources, expected 1"):
        groups = rules[0].get("spec", {}).get("groups") or []
        expect(bool(groups), f"{overlay}: the PrometheusRule has no groups")
        names = [g.get("name") for g in groups]
        expect(len(names) == len(set(names)), f"{overlay}: PrometheusRule group names repeat")
    for resource in resources:
        if resource["apiVersion"].startswith(OPERATOR_GROUP):
            expect(set(resource) <= {"apiVersion", "kind", "metadata", "spec"}
                   and isinstance(resource.get("spec"), dict),
                   f"{overlay}: {resource['kind']} is not a well-formed custom resource")

    # The server container's environment as the kubelet would set it, with
    # stand-ins of the right form for the Secret's values.
    environment = dict(config)
    for variable in server.get("env", []):
        if "value" in variable:
            environment[variable["name"]] = variable["value"]
        elif "secretKeyRef" in variable.get("valueFrom", {}):
            environment[variable["name"]] = SECRET_STAND_INS.get(
                variable["name"], "ci-stand-in-not-a-secret")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{overlay}.env").write_text(
        "".join(f"{key}={value}\n" for key, value in sorted(environment.items())))
    (out_dir / f"{overlay}.rules.yml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    core = [r for r in resources + migration if not r["apiVersion"].startswith(OPERATOR_GROUP)]
    (out_dir / f"{overlay}-core.yaml").write_text(yaml.safe_dump_all(core, sort_keys=False))


def check_manifests(render_dir: Path, out_dir: Path) -> None:
    overlays = sorted(p.stem for p in render_dir.glob("*.yaml") if not p.stem.endswith("-migration"))
    expect(overlays == ["production", "staging"], f"rendered overlays {overlays}")
    for overlay in overlays:
        check_overlay(render_dir, overlay, out_dir)
    # The overlays must actually differ where they claim to.
    env = {o: dict(l.split("=", 1) for l in (out_dir / f"{o}.env").read_text().splitlines())
           for o in overlays if (out_dir / f"{o}.env").exists()}
    if len(env) == 2:
        expect(env["staging"].get("HEARTRULE__TELEMETRY__ENVIRONMENT") == "staging"
               and env["production"].get("HEARTRULE__TELEMETRY__ENVIRONMENT") == "production",
               "telemetry.environment does not name each overlay's environment")


# --------------------------------------------------------------------------
# checkov
# --------------------------------------------------------------------------

# Check id → kinds it must have passed on. Pod checks are required on the
# server, the migration Job and the maintenance CronJob alike.
PODS = {"Deployment", "Job", "CronJob"}
REQUIRED_CHECKS = {
    "CKV_K8S_8": {"Deployment"},   # liveness probe
    "CKV_K8S_9": {"Deployment"},   # readiness probe
    "CKV_K8S_10": PODS, "CKV_K8S_11": PODS, "CKV_K8S_12": PODS, "CKV_K8S_13": PODS,  # requests/limits
    "CKV_K8S_14": PODS,            # image tag fixed
    "CKV_K8S_15": PODS,            # imagePullPolicy Always
    "CKV_K8S_16": PODS,            # not privileged
    "CKV_K8S_17": PODS, "CKV_K8S_18": PODS, "CKV_K8S_19": PODS,  # no host PID/IPC/network
    "CKV_K8S_20": PODS,            # no privilege escalation
    "CKV_K8S_21": {"Deployment", "Job", "CronJob", "Service", "ConfigMap", "ServiceAccount"},
    "CKV_K8S_22": PODS,            # read-only root filesystem
    "CKV_K8S_23": PODS,            # non-root
    "CKV_K8S_25": PODS,            # no added capabilities
    "CKV_K8S_26": PODS,            # no hostPort
    "CKV_K8S_28": PODS,            # NET_RAW dropped
    "CKV_K8S_29": PODS, "CKV_K8S_30": PODS,  # security contexts
    "CKV_K8S_31": PODS,            # seccomp RuntimeDefault
    "CKV_K8S_37": PODS,            # capabilities dropped
    "CKV_K8S_38": PODS,            # service account token not mounted
    "CKV_K8S_39": PODS,            # no SYS_ADMIN
    "CKV_K8S_40": PODS,            # high UID
    "CKV_K8S_41": {"ServiceAccount"},
    "CKV2_K8S_6": {"Pod"},         # pods covered by a NetworkPolicy
}


def check_checkov(report_path: Path) -> None:
    report = json.loads(report_path.read_text())
    reports = report if isinstance(report, list) else [report]
    passed: dict[str, set[str]] = {}
    for entry in reports:
        results = entry.get("results", {})
        for result in results.get("failed_checks", []):
            fail(f"checkov {result['check_id']} ({result['check_name']}) failed for "
                 f"{result['resource']} in {result['file_path']}")
        for result in results.get("passed_checks", []):
            passed.setdefault(result["check_id"], set()).add(result["resource"].split(".")[0])
    for check_id, kinds in sorted(REQUIRED_CHECKS.items()):
        missing = kinds - passed.get(check_id, set())
        expect(not missing, f"checkov {check_id} did not pass on {sorted(missing)}")
    if not FAILURES:
        total = sum(len(v) for v in passed.values())
        print(f"checkov: {len(REQUIRED_CHECKS)} required checks passed on every kind they "
              f"apply to ({total} check × kind results)")


def main() -> int:
    command, *args = sys.argv[1:] or [""]
    if command == "dockerfile" and len(args) == 1:
        check_dockerfile(Path(args[0]))
    elif command == "manifests" and len(args) == 2:
        check_manifests(Path(args[0]), Path(args[1]))
    elif command == "checkov" and len(args) == 1:
        check_checkov(Path(args[0]))
    elif command == "checkov-ids" and not args:
        print(",".join(sorted(REQUIRED_CHECKS)))
        return 0
    elif command == "healthcheck" and not args:
        # The runtime stage's HEALTHCHECK command, one argument per line,
        # for the shell check to run against the live server.
        runtime = stages(dockerfile_instructions((ROOT / "Dockerfile").read_text()))[-1]
        checks = [a for w, a in runtime if w == "HEALTHCHECK"]
        match = re.search(r"\bCMD\s+(\[.*\])\s*$", checks[-1]) if checks else None
        if not match:
            print("Dockerfile: no exec-form HEALTHCHECK CMD", file=sys.stderr)
            return 1
        print("\n".join(json.loads(match.group(1))))
        return 0
    else:
        print(__doc__, file=sys.stderr)
        return 2
    if FAILURES:
        print(f"{command}: {len(FAILURES)} failure(s)", file=sys.stderr)
        return 1
    print(f"{command}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
