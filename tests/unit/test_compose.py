"""docker-compose.yml and Dockerfile, checked by parsing (no Docker engine needed).

The monitoring services (prometheus, alertmanager, grafana) are checked against the
files they mount from ops/: what Prometheus scrapes and where it sends alerts must
be services and ports of this file, the rule file it loads must be mounted, and
Grafana's provisioning must find the dashboard and the Prometheus service.

Each check is a ``*_problems(...)`` function returning human-readable problems;
the tests assert the real files have none, and ``test_checks_catch_mistakes``
breaks a copy of the real compose file in one way per check to prove every
check can fail.
"""
from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from loopline.streams.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PYPROJECT = REPO / "pyproject.toml"

REQUIRED_SERVICES = ("kafka", "schema-registry", "worker", "review", "prometheus", "alertmanager", "grafana",
                     "postgres", "audit")


# ------------------------------------------------------------------ loading
def load_compose() -> dict:
    with COMPOSE_FILE.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def interpolate(value):
    """Compose variable interpolation with defaults only (never the host env,
    so the tests see what a fresh checkout sees): ``${X:-d}``/``${X-d}`` -> d,
    ``${X}``/``$X`` -> '', ``$$`` -> '$'."""
    if not isinstance(value, str):
        return value
    value = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}",
                   lambda m: m.group(1) or "", value.replace("$$", "\0"))
    value = re.sub(r"\$[A-Za-z_][A-Za-z0-9_]*", "", value)
    return value.replace("\0", "$")


def service_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(interpolate(v)) for k, v in env.items()}


def settings_env_names() -> set[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in Settings.model_fields}


def console_scripts() -> dict[str, str]:
    with PYPROJECT.open("rb") as fh:
        return tomllib.load(fh)["project"]["scripts"]


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs; comments dropped, continuations joined."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            word, _, args = current.strip().partition(" ")
            out.append((word.upper(), args.strip()))
        current = ""
    return out


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    return instructions[starts[-1]:] if starts else instructions


def command_words(args: str) -> list[str]:
    """A CMD/ENTRYPOINT/compose command in exec (JSON) or shell form, as words."""
    args = args.strip()
    if args.startswith("["):
        return json.loads(args)
    return shlex.split(args)


def as_words(command) -> list[str]:
    return list(command) if isinstance(command, list) else shlex.split(command)


def host_port(address: str) -> tuple[str, int]:
    """'PLAINTEXT://kafka:9092' / 'kafka:9092' / 'http://x:8081' -> (host, port)."""
    address = address.split("://", 1)[-1].rstrip("/")
    host, _, port = address.rpartition(":")
    return host, int(port)


def parse_listeners(value: str) -> dict[str, tuple[str, int]]:
    """'PLAINTEXT://kafka:9092,HOST://localhost:29092' -> {name: (host, port)}."""
    out = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, _, _ = item.partition("://")
        out[name] = host_port(item)
    return out


def builds_from_repo(service: dict) -> bool:
    return "build" in service


# ------------------------------------------------------------------ checks
def missing_services_problems(compose: dict) -> list[str]:
    services = compose.get("services") or {}
    return [f"service {name!r} is missing" for name in REQUIRED_SERVICES if name not in services]


def mount_problems(compose: dict) -> list[str]:
    """Bind-mounted host paths exist; named volumes are declared."""
    problems = []
    declared = set((compose.get("volumes") or {}).keys())
    for name, svc in (compose.get("services") or {}).items():
        for vol in svc.get("volumes") or []:
            if isinstance(vol, dict):
                source = vol.get("source")
                kind = vol.get("type", "volume")
            else:
                source = vol.split(":", 1)[0] if ":" in vol else None
                kind = "bind" if source and source.startswith((".", "/", "~")) else "volume"
            source = interpolate(source) if source else source
            if not source:
                continue  # anonymous volume
            if kind == "bind" or source.startswith(("./", "../", "/")):
                path = (REPO / source).resolve()
                if not path.exists():
                    problems.append(f"{name}: mounted host path {source} does not exist")
            elif kind == "volume" and source not in declared:
                problems.append(f"{name}: named volume {source!r} is not declared under top-level volumes")
        for env_file in ([svc["env_file"]] if isinstance(svc.get("env_file"), str) else svc.get("env_file") or []):
            path = env_file["path"] if isinstance(env_file, dict) else env_file
            required = env_file.get("required", True) if isinstance(env_file, dict) else True
            if required and not (REPO / path).exists():
                problems.append(f"{name}: env_file {path} does not exist")
    for section in ("configs", "secrets"):
        for key, spec in (compose.get(section) or {}).items():
            if isinstance(spec, dict) and "file" in spec and not (REPO / spec["file"]).exists():
                problems.append(f"{section}.{key}: file {spec['file']} does not exist")
    return problems


def build_problems(compose: dict) -> list[str]:
    problems = []
    for name, svc in (compose.get("services") or {}).items():
        build = svc.get("build")
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = REPO / interpolate(build.get("context", "."))
        dockerfile = context / interpolate(build.get("dockerfile", "Dockerfile"))
        if not context.is_dir():
            problems.append(f"{name}: build context {build.get('context')} is not a directory")
        elif not dockerfile.is_file():
            problems.append(f"{name}: dockerfile {dockerfile.relative_to(REPO)} does not exist")
    return problems


def depends_on_problems(compose: dict) -> list[str]:
    services = compose.get("services") or {}
    problems = []
    for name, svc in services.items():
        deps = svc.get("depends_on") or []
        for target in (deps.keys() if isinstance(deps, dict) else deps):
            if target not in services:
                problems.append(f"{name}: depends_on {target!r}, which is not a service")
            if target == name:
                problems.append(f"{name}: depends on itself")
    return problems


def loopline_env_problems(compose: dict, dockerfile_text: str = "") -> list[str]:
    """Every LOOPLINE_* variable names a Settings field (catches typos that pydantic would ignore)."""
    known = settings_env_names()
    problems = []
    sources = [(name, service_env(svc)) for name, svc in (compose.get("services") or {}).items()]
    for key, value in compose.items():  # x-* extension blocks (YAML anchors)
        if key.startswith("x-") and isinstance(value, dict):
            sources.append((key, {k: v for k, v in value.items() if isinstance(k, str)}))
    for word, args in dockerfile_instructions(dockerfile_text):
        if word == "ENV":
            sources.append(("Dockerfile", dict(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", args))))
    for where, env in sources:
        for var in env:
            if var.startswith("LOOPLINE_") and var not in known:
                problems.append(f"{where}: {var} is not a Settings field (known: {sorted(known)})")
    return problems


def kafka_internal_listener(compose: dict) -> tuple[str, int]:
    """(host, port) other containers must use: the one advertised listener named by the service's
    host name (the inter-broker listener is bound to 127.0.0.1 inside the container, issue #24)."""
    env = service_env(compose["services"]["kafka"])
    advertised = parse_listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    hostname = compose["services"]["kafka"].get("hostname", "kafka")
    named = [n for n, (host, _) in advertised.items() if host == hostname]
    assert len(named) == 1, f"kafka: {len(named)} advertised listeners name the host {hostname}, expected one"
    name = named[0]
    bound = parse_listeners(env.get("KAFKA_LISTENERS", ""))
    if bound:
        assert name in bound and bound[name][1] == advertised[name][1], (
            f"kafka: listener {name} is advertised on port {advertised[name][1]} but bound as {bound.get(name)}")
    return advertised[name]


def kafka_bootstrap_problems(compose: dict) -> list[str]:
    services = compose["services"]
    host, port = kafka_internal_listener(compose)
    kafka_names = {"kafka", services["kafka"].get("hostname", "kafka")}
    problems = []
    if host not in kafka_names:
        problems.append(f"kafka advertises its internal listener as {host}, not as the service name")
    users = {name: service_env(svc).get("LOOPLINE_KAFKA_BOOTSTRAP") for name, svc in services.items()}
    if not users.get("worker"):
        problems.append("worker: LOOPLINE_KAFKA_BOOTSTRAP is not set (it would start an embedded broker)")
    registry_env = service_env(services.get("schema-registry", {}))
    if registry_env.get("SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"):
        users["schema-registry"] = registry_env["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"]
    for name, bootstrap in users.items():
        for address in filter(None, (bootstrap or "").split(",")):
            if host_port(address) != (host, port):
                problems.append(f"{name}: bootstrap {address} is not the kafka internal listener {host}:{port}")
    return problems


def schema_registry_url_problems(compose: dict) -> list[str]:
    services = compose["services"]
    listeners = service_env(services["schema-registry"]).get("SCHEMA_REGISTRY_LISTENERS", "http://0.0.0.0:8081")
    port = host_port(listeners.split(",")[0])[1]
    problems = []
    for name, svc in services.items():
        url = service_env(svc).get("LOOPLINE_SCHEMA_REGISTRY_URL")
        if url and host_port(url) != ("schema-registry", port):
            problems.append(f"{name}: LOOPLINE_SCHEMA_REGISTRY_URL={url} is not http://schema-registry:{port}")
    return problems


def image_pin_problems(compose: dict) -> list[str]:
    problems = []
    for name, svc in (compose.get("services") or {}).items():
        image = interpolate(svc.get("image"))
        if image is None:
            if not builds_from_repo(svc):
                problems.append(f"{name}: neither image nor build")
            continue
        if "@sha256:" in image:
            continue
        last = image.rsplit("/", 1)[-1]
        if ":" not in last:
            problems.append(f"{name}: image {image} has no tag")
        elif last.rsplit(":", 1)[1] in ("", "latest"):
            problems.append(f"{name}: image {image} is not pinned")
    return problems


def loopline_command_problems(compose: dict) -> list[str]:
    """Services built from the repo run a real `loopline` subcommand."""
    from loopline.connectors.cli.main import build_parser

    scripts = console_scripts()
    problems = []
    for name, svc in (compose.get("services") or {}).items():
        if not builds_from_repo(svc) or "command" not in svc:
            continue
        words = as_words(svc["command"])
        if not words or words[0] not in scripts:
            problems.append(f"{name}: command {words} does not start with a console script {sorted(scripts)}")
            continue
        try:
            build_parser().parse_args(words[1:])
        except SystemExit:
            problems.append(f"{name}: `{' '.join(words)}` is not a valid loopline command line")
    return problems


def worker_web_problems(compose: dict, dockerfile_text: str) -> list[str]:
    worker = compose["services"]["worker"]
    env = service_env(worker)
    port = int(env.get("LOOPLINE_WEB_PORT", Settings.model_fields["web_port"].default))
    problems = []
    if env.get("LOOPLINE_WEB_HOST", "0.0.0.0") != "0.0.0.0":
        problems.append("worker: LOOPLINE_WEB_HOST must be 0.0.0.0 to be reachable from outside the container")
    targets = []
    for entry in worker.get("ports") or []:
        if isinstance(entry, dict):
            targets.append(int(entry["target"]))
        else:
            targets.append(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
            if str(entry).count(":") >= 1 and str(entry).split(":")[-2] != "":
                problems.append(f"worker: port {entry} binds a fixed host port; `--scale worker=2` would fail")
        if isinstance(entry, dict) and entry.get("published"):
            problems.append(f"worker: port {entry} binds a fixed host port; `--scale worker=2` would fail")
    if targets and port not in targets:
        problems.append(f"worker: LOOPLINE_WEB_PORT={port} but the published container ports are {targets}")
    exposed = {int(p.split("/")[0]) for word, args in dockerfile_instructions(dockerfile_text)
               if word == "EXPOSE" for p in args.split()}
    if port not in exposed:
        problems.append(f"Dockerfile: EXPOSE {sorted(exposed)} does not include the worker web port {port}")
    if "deploy" in worker and "replicas" in (worker["deploy"] or {}):
        problems.append("worker: use `docker compose up --scale worker=N`, not deploy.replicas")
    return problems


def bind_mounts(service: dict) -> dict[str, Path]:
    """container path -> host path (resolved) of a service's bind mounts."""
    out = {}
    for vol in service.get("volumes") or []:
        if isinstance(vol, dict):
            if vol.get("type") == "bind":
                out[vol["target"]] = (REPO / vol["source"]).resolve()
            continue
        parts = vol.split(":")
        if len(parts) >= 2 and parts[0].startswith((".", "/")):
            out[parts[1]] = (REPO / parts[0]).resolve()
    return out


def mounted_file(service: dict, container_path: str) -> Path | None:
    """The host file a container path comes from (a file mount or a file inside a mounted folder)."""
    for target, source in sorted(bind_mounts(service).items(), key=lambda kv: -len(kv[0])):
        if container_path == target:
            return source
        if container_path.startswith(target.rstrip("/") + "/"):
            return source / container_path[len(target.rstrip("/")) + 1:]
    return None


def command_flag(service: dict, flag: str, default: str) -> str:
    for word in as_words(service.get("command") or []):
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return default


def prometheus_problems(compose: dict) -> list[str]:
    """Prometheus loads a mounted config whose rule files are mounted and whose scrape and
    alerting targets are services of this file on the ports they listen on."""
    services = compose.get("services") or {}
    prom = services.get("prometheus")
    if prom is None:
        return ["service 'prometheus' is missing"]
    config_path = command_flag(prom, "--config.file", "/etc/prometheus/prometheus.yml")
    host_config = mounted_file(prom, config_path)
    if host_config is None or not host_config.is_file():
        return [f"prometheus: {config_path} is not mounted from a file of the repository"]
    config = yaml.safe_load(host_config.read_text(encoding="utf-8"))
    problems = []
    for rule_file in config.get("rule_files") or []:
        container = rule_file if rule_file.startswith("/") else str(Path(config_path).parent / rule_file)
        host = mounted_file(prom, container)
        if host is None or not host.is_file():
            problems.append(f"prometheus: rule file {container} is not mounted")
    if not config.get("rule_files"):
        problems.append("prometheus: loads no rule files")
    ports = {
        "worker": int(service_env(services.get("worker", {})).get("LOOPLINE_WEB_PORT", 6066)),
        "review": int(service_env(services.get("review", {})).get("LOOPLINE_REVIEW_PORT", 6070)),
        "audit": int(service_env(services.get("audit", {})).get("LOOPLINE_AUDIT_PORT", 6071)),
        "alertmanager": 9093, "prometheus": 9090,
    }
    targets = []
    for job in config.get("scrape_configs") or []:
        for sc in job.get("static_configs") or []:
            targets += [(job["job_name"], t) for t in sc.get("targets", [])]
        for sd in job.get("dns_sd_configs") or []:
            targets += [(job["job_name"], f"{name}:{sd.get('port')}") for name in sd.get("names", [])]
    for am in (config.get("alerting") or {}).get("alertmanagers") or []:
        for sc in am.get("static_configs") or []:
            targets += [("alertmanagers", t) for t in sc.get("targets", [])]
    jobs = {job for job, _ in targets}
    for needed in ("loopline-worker", "loopline-review", "loopline-audit-sink", "alertmanagers"):
        if needed not in jobs:
            problems.append(f"prometheus: nothing configured for {needed}")
    for job, target in targets:
        host, port = host_port(target)
        if host == "localhost" and job == "prometheus":
            continue
        if host not in services:
            problems.append(f"prometheus: {job} target {target} is not a service of docker-compose.yml")
        elif host in ports and ports[host] != port:
            problems.append(f"prometheus: {job} target {target} but {host} listens on {ports[host]}")
    return problems


def grafana_problems(compose: dict) -> list[str]:
    """Grafana's provisioning is mounted, finds the dashboards folder and the Prometheus service."""
    services = compose.get("services") or {}
    grafana = services.get("grafana")
    if grafana is None:
        return ["service 'grafana' is missing"]
    problems = []
    prov = mounted_file(grafana, "/etc/grafana/provisioning")
    if prov is None or not prov.is_dir():
        return ["grafana: /etc/grafana/provisioning is not mounted from a folder of the repository"]
    for path in sorted((prov / "dashboards").glob("*.y*ml")):
        for provider in yaml.safe_load(path.read_text(encoding="utf-8")).get("providers", []):
            folder = mounted_file(grafana, provider["options"]["path"])
            if folder is None or not list(folder.glob("*.json")):
                problems.append(f"grafana: dashboard path {provider['options']['path']} holds no mounted dashboard")
    datasources = []
    for path in sorted((prov / "datasources").glob("*.y*ml")):
        datasources += yaml.safe_load(path.read_text(encoding="utf-8")).get("datasources", [])
    if not datasources:
        problems.append("grafana: no datasource provisioned")
    for ds in datasources:
        host, port = host_port(ds["url"])
        if host not in services or (host == "prometheus" and port != 9090):
            problems.append(f"grafana: datasource {ds['name']} points at {ds['url']}, not a compose service")
    return problems


def alertmanager_problems(compose: dict) -> list[str]:
    services = compose.get("services") or {}
    am = services.get("alertmanager")
    if am is None:
        return ["service 'alertmanager' is missing"]
    path = command_flag(am, "--config.file", "/etc/alertmanager/alertmanager.yml")
    host = mounted_file(am, path)
    if host is None or not host.is_file():
        return [f"alertmanager: {path} is not mounted from a file of the repository"]
    config = yaml.safe_load(host.read_text(encoding="utf-8"))
    receivers = {r["name"] for r in config.get("receivers", [])}
    routes = [config["route"], *config["route"].get("routes", [])]
    return [f"alertmanager: route to unknown receiver {r['receiver']}" for r in routes
            if r.get("receiver") and r["receiver"] not in receivers]


# ------------------------------------------------------------------ tests
@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


@pytest.fixture(scope="module")
def dockerfile_text() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


def test_required_services_exist(compose):
    assert missing_services_problems(compose) == []


def test_bind_mounts_and_named_volumes(compose):
    assert mount_problems(compose) == []


def test_build_contexts_and_dockerfiles_exist(compose):
    assert build_problems(compose) == []


def test_depends_on_targets_are_services(compose):
    assert depends_on_problems(compose) == []


def test_loopline_env_vars_are_settings_fields(compose, dockerfile_text):
    assert loopline_env_problems(compose, dockerfile_text) == []


@pytest.mark.parametrize("service", ["topics", "worker"])
def test_loopline_env_values_are_valid_settings(compose, service, monkeypatch):
    """The values parse too (e.g. LOOPLINE_PARTITIONS is an int >= 1)."""
    env = {k: v for k, v in service_env(compose["services"][service]).items() if k.startswith("LOOPLINE_")}
    assert env, f"{service} sets no LOOPLINE_* variables"
    for var in list(os.environ):
        if var.startswith("LOOPLINE_"):
            monkeypatch.delenv(var)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    Settings()  # raises ValidationError on a bad value


def test_bootstraps_use_kafka_internal_listener(compose):
    assert kafka_bootstrap_problems(compose) == []


def test_schema_registry_url_matches_registry_listener(compose):
    assert schema_registry_url_problems(compose) == []


def test_images_are_pinned(compose):
    assert image_pin_problems(compose) == []


def test_loopline_services_run_real_cli_commands(compose):
    assert loopline_command_problems(compose) == []


def test_worker_web_port_is_reachable_and_scalable(compose, dockerfile_text):
    assert worker_web_problems(compose, dockerfile_text) == []


def test_dockerfile_runs_the_console_script(dockerfile_text):
    """CMD (or ENTRYPOINT) runs the `loopline` console script from [project.scripts]."""
    from loopline.connectors.cli.main import build_parser

    scripts = console_scripts()
    stage = final_stage(dockerfile_instructions(dockerfile_text))
    entry = [args for word, args in stage if word == "ENTRYPOINT"]
    cmd = [args for word, args in stage if word == "CMD"]
    assert cmd or entry, "Dockerfile has neither CMD nor ENTRYPOINT"
    words = command_words(entry[-1]) if entry else []
    words += command_words(cmd[-1]) if cmd else []
    assert words[0] in scripts, f"Dockerfile runs {words[0]!r}, not one of {sorted(scripts)}"
    assert words == ["loopline", "worker"], f"default command is {words}, expected `loopline worker`"
    build_parser().parse_args(words[1:])  # exits (fails the test) on an unknown subcommand


def test_dockerfile_healthcheck_and_user(dockerfile_text):
    stage = final_stage(dockerfile_instructions(dockerfile_text))
    health = [args for word, args in stage if word == "HEALTHCHECK"]
    assert health and "/healthz" in health[-1], "no HEALTHCHECK on /healthz"
    users = [args for word, args in stage if word == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"


def test_dockerfile_base_images_are_pinned(dockerfile_text):
    instructions = dockerfile_instructions(dockerfile_text)
    stages = set()
    for word, args in instructions:
        if word != "FROM":
            continue
        parts = [p for p in args.split() if not p.startswith("--")]
        image = parts[0]
        if len(parts) >= 3 and parts[1].upper() == "AS":
            stages.add(parts[2])
        if image in stages:
            continue
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert tag and tag != "latest", f"FROM {image} is not pinned"


def _dockerignored(rel: str, patterns: list[str]) -> bool:
    """Approximation of .dockerignore matching (last matching pattern wins)."""
    ignored = False
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/")
        candidates = [pat, pat[3:]] if pat.startswith("**/") else [pat]
        for prefix in prefixes:
            tails = [prefix, prefix.rsplit("/", 1)[-1]] if pat.startswith("**/") else [prefix]
            if any(fnmatch.fnmatchcase(t, c) for t in tails for c in candidates):
                ignored = not negate
    return ignored


def test_build_context_holds_what_pip_install_needs():
    """`pip wheel .` in the image needs pyproject.toml, its readme and the packages."""
    with PYPROJECT.open("rb") as fh:
        project = tomllib.load(fh)
    needed = ["pyproject.toml"]
    readme = project["project"].get("readme")
    if isinstance(readme, dict):
        readme = readme.get("file")
    if readme:
        needed.append(readme)
    needed += sorted(project["tool"]["setuptools"]["package-dir"].values())
    needed += [f"schemas/{p.name}" for p in sorted((REPO / "schemas").glob("*.avsc"))][:1]
    patterns = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    for rel in needed:
        assert (REPO / rel).exists(), f"{rel} is needed by `pip install .` in the image but does not exist"
        assert not _dockerignored(rel, patterns), f".dockerignore excludes {rel}, which the image build needs"
    for rel in (".venv", ".git", "streams/__pycache__", ".loopline", "out", "loopline.egg-info", "benchmarks", "tests"):
        assert _dockerignored(rel, patterns), f".dockerignore should exclude {rel}"


def test_prometheus_config_matches_the_services(compose):
    assert prometheus_problems(compose) == []


def test_grafana_provisioning_is_mounted(compose):
    assert grafana_problems(compose) == []


def test_alertmanager_config_is_mounted(compose):
    assert alertmanager_problems(compose) == []


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) is not installed")
def test_prometheus_config_is_valid():
    result = subprocess.run(["promtool", "check", "config", str(REPO / "ops" / "prometheus" / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("amtool") is None, reason="amtool (Debian package prometheus-alertmanager) is not installed")
def test_alertmanager_config_is_valid():
    result = subprocess.run(["amtool", "check-config", str(REPO / "ops" / "alertmanager" / "alertmanager.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _docker_compose_available() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def audit_problems(compose: dict) -> list[str]:
    """The audit sink runs ``loopline audit-sink`` and, with the review server, uses the postgres service of
    this file with the user, password, database and port that service is configured with, starting only
    once it is healthy."""
    from urllib.parse import urlsplit

    services = compose.get("services") or {}
    audit, pg = services.get("audit"), services.get("postgres")
    if audit is None or pg is None:
        return ["services 'audit' and 'postgres' are both needed"]
    problems = []
    if as_words(audit.get("command")) != ["loopline", "audit-sink"]:
        problems.append(f"audit: command {audit.get('command')} is not `loopline audit-sink`")
    pg_env = service_env(pg)
    for name, var in (("audit", "LOOPLINE_AUDIT_DB_URL"), ("review", "LOOPLINE_REVIEW_DB_URL")):
        svc = services.get(name) or {}
        url = urlsplit(service_env(svc).get(var, ""))
        if url.scheme not in ("postgresql", "postgres"):
            problems.append(f"{name}: {var} is not a postgresql:// URL ({url.scheme!r})")
            continue
        if url.hostname != "postgres" or (url.port or 5432) != int(pg_env.get("PGPORT", 5432)):
            problems.append(f"{name}: {var} points at {url.hostname}:{url.port}, not postgres:5432")
        if url.username != pg_env.get("POSTGRES_USER", "postgres"):
            problems.append(f"{name}: user {url.username!r} is not POSTGRES_USER {pg_env.get('POSTGRES_USER')!r}")
        if url.password != pg_env.get("POSTGRES_PASSWORD"):
            problems.append(f"{name}: the URL's password is not the postgres service's POSTGRES_PASSWORD")
        if url.path.lstrip("/") != pg_env.get("POSTGRES_DB", pg_env.get("POSTGRES_USER", "postgres")):
            problems.append(f"{name}: database {url.path!r} is not POSTGRES_DB {pg_env.get('POSTGRES_DB')!r}")
        deps = svc.get("depends_on")
        dep = deps.get("postgres") if isinstance(deps, dict) else None
        if not dep or dep.get("condition") != "service_healthy":
            problems.append(f"{name}: does not wait for postgres to be healthy")
    if not (pg.get("healthcheck") or {}).get("test"):
        problems.append("postgres: no healthcheck for the audit sink to wait on")
    return problems


def test_audit_sink_is_wired_to_postgres(compose):
    assert audit_problems(compose) == []


@pytest.mark.parametrize("service", ["audit", "review"])
def test_audit_env_values_are_valid_settings(compose, service, monkeypatch):
    env = {k: v for k, v in service_env(compose["services"][service]).items() if k.startswith("LOOPLINE_")}
    for var in list(os.environ):
        if var.startswith("LOOPLINE_"):
            monkeypatch.delenv(var)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    s = Settings()
    assert (s.audit_url if service == "audit" else s.review_db_url).startswith("postgresql://")


def test_docker_compose_config_parses():
    if not _docker_compose_available():
        pytest.skip("the `docker compose` CLI plugin is not installed; compose file checked by parsing only")
    result = subprocess.run(["docker", "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------ the checks can fail
def _break_mount(c):
    c["services"]["worker"].setdefault("volumes", []).append("./does-not-exist/rules.yml:/etc/rules.yml:ro")


def _break_named_volume(c):
    c["services"]["worker"]["volumes"] = ["undeclared-volume:/var/lib/loopline"]


def _break_build(c):
    c["services"]["worker"]["build"] = {"context": ".", "dockerfile": "Dockerfile.missing"}


def _break_depends_on(c):
    c["services"]["worker"]["depends_on"] = {"kafak": {"condition": "service_healthy"}}


def _break_env(c):
    c["services"]["worker"]["environment"]["LOOPLINE_KAFKA_BOOTSTRAPS"] = "kafka:9092"


def _break_bootstrap(c):
    c["services"]["worker"]["environment"]["LOOPLINE_KAFKA_BOOTSTRAP"] = "kafka:29092"


def _break_registry_url(c):
    c["services"]["worker"]["environment"]["LOOPLINE_SCHEMA_REGISTRY_URL"] = "http://schema-registry:8082"


def _break_image(c):
    c["services"]["kafka"]["image"] = "apache/kafka:latest"


def _break_untagged_image(c):
    c["services"]["schema-registry"]["image"] = "confluentinc/cp-schema-registry"


def _break_command(c):
    c["services"]["worker"]["command"] = ["loopline", "wrker"]


def _break_fixed_port(c):
    c["services"]["worker"]["ports"] = ["6066:6066"]


def _drop_service(c):
    del c["services"]["schema-registry"]


def _break_rules_mount(c):
    c["services"]["prometheus"]["volumes"] = [v for v in c["services"]["prometheus"]["volumes"] if "alerts.yml" not in v]


def _break_scrape_port(c):
    c["services"]["worker"]["environment"]["LOOPLINE_WEB_PORT"] = "7077"


def _break_review_service(c):
    del c["services"]["review"]


def _break_dashboards_mount(c):
    c["services"]["grafana"]["volumes"] = [v for v in c["services"]["grafana"]["volumes"] if "dashboards" not in v]


def _break_grafana_provisioning(c):
    c["services"]["grafana"]["volumes"] = [v for v in c["services"]["grafana"]["volumes"] if "provisioning" not in v]


def _break_alertmanager_config(c):
    c["services"]["alertmanager"]["command"] = ["--config.file=/etc/alertmanager/other.yml"]


def _break_audit_host(c):
    env = c["services"]["audit"]["environment"]
    env["LOOPLINE_AUDIT_DB_URL"] = env["LOOPLINE_AUDIT_DB_URL"].replace("@postgres:", "@postgress:")


def _break_audit_db_name(c):
    c["services"]["postgres"]["environment"]["POSTGRES_DB"] = "other"


def _break_audit_wait(c):
    c["services"]["audit"]["depends_on"]["postgres"] = {"condition": "service_started"}


def _break_review_db(c):
    del c["services"]["review"]["environment"]["LOOPLINE_REVIEW_DB_URL"]


def _break_review_wait(c):
    del c["services"]["review"]["depends_on"]["postgres"]


def _break_audit_scrape(c):
    c["services"]["audit"]["environment"]["LOOPLINE_AUDIT_PORT"] = "7071"


@pytest.mark.parametrize("breaker, check", [
    (_drop_service, missing_services_problems),
    (_break_mount, mount_problems),
    (_break_named_volume, mount_problems),
    (_break_build, build_problems),
    (_break_depends_on, depends_on_problems),
    (_break_env, loopline_env_problems),
    (_break_bootstrap, kafka_bootstrap_problems),
    (_break_registry_url, schema_registry_url_problems),
    (_break_image, image_pin_problems),
    (_break_untagged_image, image_pin_problems),
    (_break_command, loopline_command_problems),
    (_break_fixed_port, lambda c: worker_web_problems(c, DOCKERFILE.read_text(encoding="utf-8"))),
    (_break_rules_mount, prometheus_problems),
    (_break_scrape_port, prometheus_problems),
    (_break_review_service, prometheus_problems),
    (_break_dashboards_mount, grafana_problems),
    (_break_grafana_provisioning, grafana_problems),
    (_break_alertmanager_config, alertmanager_problems),
    (_break_audit_host, audit_problems),
    (_break_audit_db_name, audit_problems),
    (_break_audit_wait, audit_problems),
    (_break_audit_scrape, prometheus_problems),
    (_break_review_db, audit_problems),
    (_break_review_wait, audit_problems),
], ids=lambda x: getattr(x, "__name__", "check"))
def test_checks_catch_mistakes(compose, breaker, check):
    broken = copy.deepcopy(compose)
    breaker(broken)
    assert check(broken), f"{breaker.__name__} went unnoticed"


# ------------------------------------------------------------------ every part (issue #22)
LOOPLINE_SERVICES = ("worker", "learner", "review")


def every_part_problems(compose: dict) -> list[str]:
    """Workers, one learner and the review server run; each mounts the policy file it is
    told to read, needs the HMAC key from the environment (no development default)."""
    services = compose.get("services") or {}
    problems = []
    for name in LOOPLINE_SERVICES:
        svc = services.get(name)
        if svc is None:
            problems.append(f"service {name!r} is missing")
            continue
        env = service_env(svc)
        key = str(env.get("LOOPLINE_SNAPSHOT_HMAC_KEY", ""))
        if not re.fullmatch(r"\$\{LOOPLINE_SNAPSHOT_HMAC_KEY:\?[^}]+\}", key):
            problems.append(f"{name}: LOOPLINE_SNAPSHOT_HMAC_KEY must be required (${{VAR:?message}}), not {key!r}")
        policy = env.get("LOOPLINE_POLICY_FILE")
        host = mounted_file(svc, policy) if policy else None
        if host is None or not host.is_file():
            problems.append(f"{name}: LOOPLINE_POLICY_FILE {policy!r} is not mounted from a file of the repository")
    learner = service_env(services.get("learner", {}))
    if learner.get("LOOPLINE_AGENTS") != "learn":
        problems.append("learner: LOOPLINE_AGENTS must be exactly 'learn'")
    if learner.get("LOOPLINE_APP_ID") in (None, service_env(services.get("worker", {})).get("LOOPLINE_APP_ID", "loopline-worker")):
        problems.append("learner: needs its own LOOPLINE_APP_ID (consumer group)")
    if "learn" in str(service_env(services.get("worker", {})).get("LOOPLINE_AGENTS", "route,feedback,drift")):
        problems.append("worker: runs the learn agent (only the learner service may)")
    if "LOOPLINE_EXPECTED_WORKERS" not in service_env(services.get("worker", {})):
        problems.append("worker: LOOPLINE_EXPECTED_WORKERS is not set")
    return problems


def compose_variables(text: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))


def test_every_part_runs_with_policy_and_required_secret(compose):
    assert every_part_problems(compose) == []


def test_every_variable_of_the_compose_file_is_documented():
    """Each ${VAR} the file reads is named in its header, and each LOOPLINE_* it sets is in
    docs/configuration.md."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    header = text.split("\nname:", 1)[0]
    for var in compose_variables(text):
        assert var in header, f"{var} is used by docker-compose.yml but not described in its header"
    config_doc = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    for var in set(re.findall(r"^\s+(LOOPLINE_[A-Z0-9_]+):", text, flags=re.M)):
        assert var in config_doc, f"{var} is not in docs/configuration.md"


def _drop_learner(c):
    del c["services"]["learner"]


def _default_hmac(c):
    c["services"]["review"]["environment"]["LOOPLINE_SNAPSHOT_HMAC_KEY"] = "${LOOPLINE_SNAPSHOT_HMAC_KEY:-change-me}"


def _unmount_policy(c):
    c["services"]["worker"]["volumes"] = [v for v in c["services"]["worker"]["volumes"] if "policy" not in v]


@pytest.mark.parametrize("breaker", [_drop_learner, _default_hmac, _unmount_policy])
def test_every_part_check_catches_mistakes(compose, breaker):
    broken = copy.deepcopy(compose)
    breaker(broken)
    assert every_part_problems(broken), f"{breaker.__name__} went unnoticed"
