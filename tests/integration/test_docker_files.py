"""The Docker packaging (``docker/``), checked without a Docker engine.

No Docker engine runs on the CI machines and no image can be pulled, so nothing here
builds or starts a container. Instead:

* the Dockerfile is read by a small line parser: pinned base image, copied sources that
  exist and are in the build context, no remote ``ADD``, a health check, the plugin's
  dependencies installed, no secrets;
* the compose file is read with PyYAML, its ``${VAR:-default}`` interpolation resolved,
  and the configuration each Orthanc container would run with is rebuilt the way the
  ``orthancteam/orthanc`` start-up scripts document it (every ``/etc/orthanc/*.json``,
  then the ``ORTHANC__*`` variables, ``__`` meaning nesting). That configuration is then
  checked with the plugin's own parsers: peers pointing at each other on port 8042,
  credentials matching the other side's ``RegisteredUsers``, ``RemoteSelf`` consistent,
  the ``PythonScript`` being the copied ``plugin/transfers.py``, the C++ transfers plugin
  unable to start;
* the scripts of ``docker/`` run for real: the build step that removes the C++ plugin on
  a fake image tree, and, on two local Orthanc servers started with the configuration
  rebuilt from the compose file (host names mapped to loopback ports), the demo loader,
  the health check, a push from orthanc-a to orthanc-b and a pull-mode send from
  orthanc-b to orthanc-a.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from orthanc_transfers.config import OPTIONS, ORTHANC, parse_peers, parse_transfers_config
from packaging.requirements import Requirement

from devkit.orthanc_server import OrthancServer, resources

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = DOCKER / "Dockerfile.dockerignore"
COMPOSE_FILE = DOCKER / "docker-compose.yml"
ENV_EXAMPLE = DOCKER / ".env.example"

ORTHANC_SERVICES = ("orthanc-a", "orthanc-b")
LOADER = "demo-loader"
ORTHANC_HTTP_PORT = 8042
STORAGE_DIRECTORY = "/var/lib/orthanc/db"        # the image's StorageDirectory
CONFIG_DIRECTORY = "/etc/orthanc/"               # read by the image's start-up scripts
BASE_IMAGE = "orthancteam/orthanc"
# How the image enables its own C++ transfers plugin (documented variables; the legacy
# TRANSFERS_* variables also set options of the Transfers section).
CPP_PLUGIN_VARIABLES = ("TRANSFERS_PLUGIN_ENABLED", "TRANSFERS_ENABLED")
PLACEHOLDER = "change-me"


def known_transfers_options() -> set[str]:
    """The options of the Transfers section that the plugin reads: its table of options
    (so a new option needs no change here)."""
    return {option.name for option in OPTIONS if option.origin != ORTHANC}


KNOWN_TRANSFERS_OPTIONS = known_transfers_options()


# -- Dockerfile ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comments and blank lines dropped."""
    instructions: list[Instruction] = []
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue                          # also inside a continuation, as Docker does
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer += line[:-1].strip() + " "
            continue
        buffer += line
        keyword, _, arguments = buffer.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
        buffer = ""
    assert not buffer, "the Dockerfile ends inside a continuation line"
    return instructions


def words(arguments: str) -> list[str]:
    """Exec form (JSON array) or shell form, without the ``--flag=...`` options."""
    parts: list[str] = (json.loads(arguments) if arguments.startswith("[")
                        else shlex.split(arguments))
    return [p for p in parts if not p.startswith("--")]


@dataclass(frozen=True)
class Copy:
    sources: tuple[str, ...]
    destination: str


@dataclass(frozen=True)
class Dockerfile:
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    @property
    def copies(self) -> list[Copy]:
        result = []
        for instruction in self.all("COPY"):
            assert "--from" not in instruction.arguments, instruction
            parts = words(instruction.arguments)
            result.append(Copy(tuple(parts[:-1]), parts[-1]))
        return result

    @property
    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            parts = shlex.split(instruction.arguments)
            if "=" not in parts[0]:                    # legacy form: ENV NAME value
                values[parts[0]] = " ".join(parts[1:])
                continue
            for part in parts:
                name, _, value = part.partition("=")
                values[name] = value
        return values

    def container_to_repo(self, container_path: str) -> Path:
        """The repository file that a COPY puts at ``container_path``."""
        for copy in self.copies:
            for source in copy.sources:
                if copy.destination.endswith("/") and source.endswith("/"):
                    if container_path.startswith(copy.destination):
                        return REPO / source / container_path[len(copy.destination):]
                elif container_path == copy.destination:
                    return REPO / source
        raise AssertionError(f"no COPY puts anything at {container_path}")


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return Dockerfile(parse_dockerfile(DOCKERFILE.read_text()))


# -- compose file and the configuration each container runs with --------------------------

INTERPOLATION = re.compile(
    r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\})")


def interpolate(value: Any, environment: Mapping[str, str]) -> Any:
    """Compose's ``${VAR}``, ``${VAR-default}``, ``${VAR:-default}`` and ``$$``."""
    if isinstance(value, dict):
        return {k: interpolate(v, environment) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, environment) for v in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, default = match["name"], match["op"], match["default"]
        if op == ":-":
            return environment.get(name) or default
        if op == "-":
            return environment.get(name, default)
        return environment.get(name, "")

    result = INTERPOLATION.sub(replace, value)
    assert "${" not in result, f"unsupported interpolation in {value!r}"
    return result


def variables_used(value: Any) -> dict[str, str | None]:
    """Every interpolated variable with its default (None when it has none)."""
    found: dict[str, str | None] = {}
    if isinstance(value, dict):
        for v in value.values():
            found.update(variables_used(v))
    elif isinstance(value, list):
        for v in value:
            found.update(variables_used(v))
    elif isinstance(value, str):
        for match in INTERPOLATION.finditer(value):
            if match["name"]:
                found[match["name"]] = match["default"]
    return found


def raw_compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


def service_environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {str(k): str(v) for k, v in environment.items()}


def camel_case(token: str) -> str:
    """The image's rule: ``ORTHANC_PEERS`` -> ``OrthancPeers``."""
    return "".join(word[:1] + word[1:].lower() for word in token.split("_"))


def deep_merge(target: dict[str, Any], source: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            deep_merge(target[key], value)
        else:
            target[key] = value
    return target


def effective_configuration(dockerfile: Dockerfile, service: dict[str, Any]) -> dict[str, Any]:
    """What the image's start-up scripts would generate for ``service``: the JSON files
    copied to /etc/orthanc/, then the ORTHANC__* variables of the Dockerfile and of the
    service (later wins; a value that parses as JSON is taken as JSON)."""
    configuration: dict[str, Any] = {}
    for copy in dockerfile.copies:
        if copy.destination.startswith(CONFIG_DIRECTORY):
            for source in copy.sources:
                assert source.endswith(".json"), source
                deep_merge(configuration, json.loads((REPO / source).read_text()))
    for name, value in {**dockerfile.env, **service_environment(service)}.items():
        if not name.startswith("ORTHANC__"):
            continue
        path = [camel_case(token) for token in name[len("ORTHANC__"):].split("__")]
        try:
            parsed: Any = json.loads(value)
        except ValueError:
            parsed = value
        for key in reversed(path):
            parsed = {key: parsed}
        deep_merge(configuration, parsed)
    return configuration


@dataclass(frozen=True)
class Deployment:
    """The compose file under one environment, with each Orthanc's configuration."""

    compose: dict[str, Any]
    configurations: dict[str, dict[str, Any]]

    @property
    def services(self) -> dict[str, Any]:
        services: dict[str, Any] = self.compose["services"]
        return services


def deployment(dockerfile: Dockerfile, environment: Mapping[str, str]) -> Deployment:
    compose = interpolate(raw_compose(), environment)
    configurations = {name: effective_configuration(dockerfile, compose["services"][name])
                      for name in ORTHANC_SERVICES}
    return Deployment(compose, configurations)


@pytest.fixture(scope="module", params=["defaults", "variables set"])
def deployed(request: pytest.FixtureRequest, dockerfile: Dockerfile) -> Deployment:
    """The compose file with its placeholder defaults, then with every variable set to a
    distinct value (what a docker/.env does): each check must hold in both."""
    names = variables_used(raw_compose())
    environment = {} if request.param == "defaults" else {n: f"{n.lower()}-x" for n in names}
    return deployment(dockerfile, environment)


# -- the Dockerfile -----------------------------------------------------------------------


def test_base_image_is_pinned(dockerfile: Dockerfile) -> None:
    bases = dockerfile.all("FROM")
    assert len(bases) == 1, "one stage, FROM the Orthanc image"
    base = bases[0]
    image = words(base.arguments)[0]
    assert "$" not in image, "the base image must be written out, not an ARG"
    name, _, tag = image.partition(":")
    assert name == BASE_IMAGE
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"pin a release tag, not {tag!r}"


def test_copied_sources_exist_and_are_in_the_build_context(dockerfile: Dockerfile) -> None:
    included = [line[1:].rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()
                if line.startswith("!")]
    assert dockerfile.copies
    for copy in dockerfile.copies:
        for source in copy.sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            bare = source.rstrip("/")
            assert any(bare == p or bare.startswith(p + "/") for p in included), (
                f"COPY {source}: excluded from the build context by {DOCKERIGNORE.name}")


def test_no_remote_add(dockerfile: Dockerfile) -> None:
    for instruction in dockerfile.all("ADD"):
        for word in words(instruction.arguments):
            assert not re.match(r"(https?|ftp|git|ssh)://|git@", word), instruction


def test_healthcheck_runs_the_copied_script(dockerfile: Dockerfile) -> None:
    healthchecks = dockerfile.all("HEALTHCHECK")
    assert len(healthchecks) == 1, "the Dockerfile needs one HEALTHCHECK"
    healthcheck = healthchecks[0]
    assert healthcheck.arguments.upper() != "NONE"
    options, _, command = healthcheck.arguments.partition("CMD ")
    assert command, healthcheck
    script = next(w for w in words(command) if w.endswith(".py"))
    assert dockerfile.container_to_repo(script) == DOCKER / "healthcheck.py"
    assert "--start-period=" in options


def test_python_plugin_enabled_on_the_copied_script(dockerfile: Dockerfile) -> None:
    env = dockerfile.env
    assert env.get("PYTHON_PLUGIN_ENABLED") == "true"
    script = env["ORTHANC__PYTHON_SCRIPT"]
    assert dockerfile.container_to_repo(script) == REPO / "plugin" / "transfers.py"
    # the package sits beside the script in the container, as in the repository
    package = script.rsplit("/", 1)[0] + "/orthanc_transfers/__init__.py"
    assert dockerfile.container_to_repo(package).is_file()


def _plugin_imports() -> set[str]:
    """Top-level third-party modules that the plugin's modules import (the command-line
    client, which runs outside Orthanc, aside)."""
    names: set[str] = set()
    for path in (REPO / "plugin" / "orthanc_transfers").glob("*.py"):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"orthanc", "__future__"}


def test_plugin_dependencies_are_installed(dockerfile: Dockerfile) -> None:
    """What the plugin imports is pip-installed at a version pyproject.toml accepts, and
    requests is not (its compiled charset_normalizer does not survive /tools/reset)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {Requirement(d).name.lower(): Requirement(d) for d in project["dependencies"]}
    runs = " ".join(i.arguments for i in dockerfile.all("RUN"))
    pinned = {Requirement(m).name.lower(): Requirement(m)
              for m in re.findall(r'"([A-Za-z0-9_.\-]+==[^"]+)"', runs)}
    assert "--break-system-packages" in runs   # the image's Python is externally managed
    imported = _plugin_imports()
    assert imported == {"urllib3"}
    for name in imported:
        installed = pinned.get(name)
        assert installed is not None, f"{name} is not pip-installed (pinned)"
        (version,) = [s.version for s in installed.specifier]
        assert declared[name].specifier.contains(version), (declared[name], version)
    assert "requests" not in pinned


def test_no_secrets_in_the_image(dockerfile: Dockerfile) -> None:
    for instruction in dockerfile.all("ENV") + dockerfile.all("ARG"):
        assert not re.search(r"PASSWORD|SECRET|TOKEN|CREDENTIAL", instruction.arguments,
                             re.IGNORECASE), instruction
    for copy in dockerfile.copies:
        for source in copy.sources:
            if source.endswith(".json"):
                content = json.loads((REPO / source).read_text())
                assert not {"RegisteredUsers", "OrthancPeers"} & set(content), source


# -- the C++ transfers plugin must never run beside this one -----------------------------


def load_docker_script(name: str) -> ModuleType:
    """Import ``docker/<name>.py`` (not a package) without writing bytecode there."""
    spec = importlib.util.spec_from_file_location(f"docker_{name}", DOCKER / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    previous, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = previous
    return module


def cpp_plugin_enabled(plugin_table: Mapping[str, Any], configuration: Mapping[str, Any],
                       environment: Mapping[str, str]) -> bool:
    """The image's documented rule: a plugin listed in its table starts when its enabling
    variable is set (to anything but "false") or when its section is configured."""
    if "Transfers" not in plugin_table:
        return False
    by_variable = any(environment.get(v, "false") != "false" for v in CPP_PLUGIN_VARIABLES)
    return by_variable or "Transfers" in configuration


def test_no_variable_enables_the_cpp_plugin(dockerfile: Dockerfile,
                                            deployed: Deployment) -> None:
    sets = [dockerfile.env] + [service_environment(s) for s in deployed.services.values()]
    for environment in sets:
        for name, value in environment.items():
            if name in CPP_PLUGIN_VARIABLES:
                assert value == "false", f"{name}={value}"
            else:
                assert not name.startswith("TRANSFERS_"), f"{name}: a C++ plugin option"


@pytest.fixture
def fake_image(tmp_path: Path) -> Path:
    """The part of an orthancteam/orthanc file system that the build step touches."""
    (tmp_path / "startup").mkdir()
    table = {
        "Python": {"enablingRootSetting": "PythonScript",
                   "enablingEnvVar": "PYTHON_PLUGIN_ENABLED", "libs": ["libOrthancPython.so"]},
        "Transfers": {"enablingEnvVar": "TRANSFERS_PLUGIN_ENABLED",
                      "libs": ["libOrthancTransfers.so"]},
        "DicomWeb": {"enablingEnvVar": "DICOM_WEB_PLUGIN_ENABLED",
                     "libs": ["libOrthancDicomWeb.so"]},
    }
    (tmp_path / "startup" / "plugins-def.json").write_text(json.dumps(table))
    available = tmp_path / "usr/share/orthanc/plugins-available"
    available.mkdir(parents=True)
    for library in ("libOrthancPython.so", "libOrthancTransfers.so", "libOrthancDicomWeb.so"):
        (available / library).write_bytes(b"\x7fELF")
    (tmp_path / "usr/share/orthanc/plugins-disabled").symlink_to(available)
    (tmp_path / "usr/share/orthanc/plugins").mkdir()
    return tmp_path


def test_build_step_removes_the_cpp_plugin(fake_image: Path, dockerfile: Dockerfile,
                                           deployed: Deployment) -> None:
    script = load_docker_script("disable_cpp_transfers")
    table_path = fake_image / "startup" / "plugins-def.json"
    for configuration in deployed.configurations.values():
        # without the build step, our Transfers section alone would start the C++ plugin
        assert "Transfers" in configuration
        assert cpp_plugin_enabled(json.loads(table_path.read_text()), configuration, {})

    assert script.main(["--root", str(fake_image)]) == 0
    table = json.loads(table_path.read_text())
    assert set(table) == {"Python", "DicomWeb"}
    available = fake_image / "usr/share/orthanc/plugins-available"
    assert sorted(p.name for p in available.iterdir()) == ["libOrthancDicomWeb.so",
                                                          "libOrthancPython.so"]
    for name, configuration in deployed.configurations.items():
        environment = {**dockerfile.env, **service_environment(deployed.services[name])}
        assert not cpp_plugin_enabled(table, configuration, environment)
        assert not cpp_plugin_enabled(table, configuration, {"TRANSFERS_PLUGIN_ENABLED": "true"})
    assert script.main(["--root", str(fake_image)]) == 0            # idempotent


def test_build_step_fails_on_an_unknown_layout(tmp_path: Path) -> None:
    script = load_docker_script("disable_cpp_transfers")
    assert script.main(["--root", str(tmp_path)]) == 1


def test_dockerfile_runs_the_build_step(dockerfile: Dockerfile) -> None:
    order = [(i.keyword, i.arguments) for i in dockerfile.instructions]
    copied = next(n for n, (k, a) in enumerate(order)
                  if k == "COPY" and "docker/disable_cpp_transfers.py" in a)
    destination = words(order[copied][1])[-1]
    run = next(n for n, (k, a) in enumerate(order) if k == "RUN" and destination in a)
    assert copied < run
    assert f"python3 {destination}" in order[run][1]


# -- JSON configuration files --------------------------------------------------------------


def json_configurations() -> list[Path]:
    return sorted(DOCKER.rglob("*.json"))


def test_there_is_a_json_configuration() -> None:
    assert json_configurations()


@pytest.mark.parametrize("path", json_configurations(), ids=lambda p: p.name)
def test_json_configuration_has_a_valid_transfers_section(path: Path) -> None:
    content = json.loads(path.read_text())
    section = content["Transfers"]
    assert isinstance(section, dict) and section
    unknown = set(section) - KNOWN_TRANSFERS_OPTIONS
    assert not unknown, f"unknown Transfers options in {path.name}: {sorted(unknown)}"
    parse_transfers_config(content)            # raises ConfigurationError on a bad value


# -- the compose file -----------------------------------------------------------------------


def test_services_present() -> None:
    services = raw_compose()["services"]
    assert set(services) == {*ORTHANC_SERVICES, LOADER}


def test_services_build_the_dockerfile() -> None:
    for name, service in raw_compose()["services"].items():
        build = service["build"]
        context = (COMPOSE_FILE.parent / build["context"]).resolve()
        assert context == REPO, name
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE, name
    images = {s["image"] for s in raw_compose()["services"].values()}
    assert len(images) == 1 and ":latest" not in images.pop()


def test_bind_mounts_exist() -> None:
    for name, service in raw_compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_FILE.parent / source).exists(), f"{name}: {volume}"


def test_ports_on_localhost() -> None:
    services = raw_compose()["services"]
    assert services["orthanc-a"]["ports"] == ["127.0.0.1:8042:8042"]
    assert services["orthanc-b"]["ports"] == ["127.0.0.1:8043:8042"]
    assert "ports" not in services[LOADER]


def test_storage_in_named_volumes(deployed: Deployment) -> None:
    declared = set(deployed.compose.get("volumes") or {})
    used = []
    for name in ORTHANC_SERVICES:
        mounts = dict(reversed(v.split(":")[:2]) for v in deployed.services[name]["volumes"])
        volume = mounts[STORAGE_DIRECTORY]
        assert volume in declared, f"{name}: {volume} is not a named volume"
        used.append(volume)
        assert deployed.configurations[name].get("StorageDirectory",
                                                 STORAGE_DIRECTORY) == STORAGE_DIRECTORY
    assert len(set(used)) == len(used), "each server needs its own storage"


def test_configuration_is_valid_for_the_plugin(deployed: Deployment) -> None:
    for name, configuration in deployed.configurations.items():
        assert configuration["Name"] == name
        assert configuration["AuthenticationEnabled"] is True
        assert configuration.get("HttpPort", ORTHANC_HTTP_PORT) == ORTHANC_HTTP_PORT
        assert set(configuration["Transfers"]) <= KNOWN_TRANSFERS_OPTIONS
        parse_transfers_config(configuration)
        # parse_peers leaves malformed entries out: all of them must survive
        assert set(parse_peers(configuration)) == set(configuration["OrthancPeers"])


def test_plugin_script_is_the_copied_one(dockerfile: Dockerfile, deployed: Deployment) -> None:
    for configuration in deployed.configurations.values():
        script = configuration["PythonScript"]
        assert dockerfile.container_to_repo(script) == REPO / "plugin" / "transfers.py"


def test_peers_point_at_each_other_with_matching_credentials(deployed: Deployment) -> None:
    for name, configuration in deployed.configurations.items():
        peers = parse_peers(configuration)
        assert set(peers) == set(ORTHANC_SERVICES) - {name}
        for peer_name, peer in peers.items():
            url = urlsplit(peer.url)
            assert (url.scheme, url.hostname, url.port) == ("http", peer_name,
                                                           ORTHANC_HTTP_PORT), peer.url
            users = deployed.configurations[peer_name]["RegisteredUsers"]
            assert peer.username in users, f"{name}: no {peer.username!r} on {peer_name}"
            assert users[peer.username] == peer.password, f"{name} -> {peer_name}: password"


def test_both_modes_and_remote_self(deployed: Deployment) -> None:
    configurations = deployed.configurations
    # orthanc-a -> orthanc-b: push
    assert "RemoteSelf" not in configurations["orthanc-a"]["OrthancPeers"]["orthanc-b"]
    # orthanc-b -> orthanc-a: pull mode; orthanc-a knows orthanc-b as "orthanc-b"
    assert configurations["orthanc-b"]["OrthancPeers"]["orthanc-a"]["RemoteSelf"] == "orthanc-b"
    for name, configuration in configurations.items():
        for peer_name, peer in parse_peers(configuration).items():
            if peer.remote_self is None:
                continue
            back = parse_peers(configurations[peer_name])[peer.remote_self]
            assert urlsplit(back.url).hostname == name, (
                f"{peer_name} must know {name} as {peer.remote_self!r}")


def test_demo_loader(deployed: Deployment) -> None:
    loader = deployed.services[LOADER]
    assert loader["depends_on"]["orthanc-a"]["condition"] == "service_healthy"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in loader["volumes"]}
    script = next(w for w in loader["entrypoint"] if w.endswith(".py"))
    assert (COMPOSE_FILE.parent / mounts[script]).resolve() == DOCKER / "load_demo.py"
    environment = service_environment(loader)
    url = urlsplit(environment["ORTHANC_URL"])
    assert (url.hostname, url.port) == ("orthanc-a", ORTHANC_HTTP_PORT)
    users = deployed.configurations["orthanc-a"]["RegisteredUsers"]
    assert users[environment["ORTHANC_USER"]] == environment["ORTHANC_PASSWORD"]
    assert loader["healthcheck"] == {"disable": True}


def test_passwords_are_placeholders_documented_in_env_example() -> None:
    used = variables_used(raw_compose())
    assert used
    for name, default in used.items():
        assert default and PLACEHOLDER in default, f"${{{name}}} needs a placeholder default"
    defaults = deployment(Dockerfile(parse_dockerfile(DOCKERFILE.read_text())), {})
    for configuration in defaults.configurations.values():
        for password in configuration["RegisteredUsers"].values():
            assert PLACEHOLDER in password
    example = dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
                   if line and not line.startswith("#"))
    assert set(example) == set(used)
    assert all(PLACEHOLDER in value for value in example.values())


# -- the docker/ scripts, for real, on two local Orthanc servers ---------------------------


def local_configuration(dockerfile: Dockerfile, configuration: dict[str, Any],
                        ports: Mapping[str, int]) -> dict[str, Any]:
    """A container's configuration for a server on this machine: the service host names
    become loopback ports, the script its repository path."""
    local: dict[str, Any] = json.loads(json.dumps(configuration))   # a deep copy
    local["PythonScript"] = str(dockerfile.container_to_repo(configuration["PythonScript"]))
    for entry in local["OrthancPeers"].values():
        url = urlsplit(entry["Url"])
        entry["Url"] = f"http://127.0.0.1:{ports[str(url.hostname)]}{url.path}"
    return local


@pytest.fixture(scope="module")
def local_pair(dockerfile: Dockerfile) -> Iterator[dict[str, OrthancServer]]:
    configurations = deployment(dockerfile, {}).configurations
    servers = {name: OrthancServer(name) for name in ORTHANC_SERVICES}
    ports = {name: server.http_port for name, server in servers.items()}
    for name, server in servers.items():
        local = local_configuration(dockerfile, configurations[name], ports)
        deep_merge(server.config, local)
        server.config["OrthancPeers"] = local["OrthancPeers"]
        server.config["RegisteredUsers"] = local["RegisteredUsers"]
        server.session.auth = ("admin", local["RegisteredUsers"]["admin"])
    try:
        for server in servers.values():
            server.start()
        yield servers
    finally:
        for server in servers.values():
            server.cleanup()


def run_script(name: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-B", str(DOCKER / f"{name}.py"), *arguments],
                          capture_output=True, text=True, timeout=120, check=False)


def test_demo_loader_then_push_and_pull_mode(local_pair: dict[str, OrthancServer]) -> None:
    a, b = local_pair["orthanc-a"], local_pair["orthanc-b"]
    assert a.get_json("/transfers/peers") == {"orthanc-b": "installed"}
    assert b.get_json("/transfers/peers") == {"orthanc-a": "bidirectional"}

    user, password = "admin", a.config["RegisteredUsers"]["admin"]
    loaded = run_script("load_demo", "--url", a.url, "--user", user, "--password", password,
                        "--slices", "6", "--large-mb", "9", "--wait", "30")
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    (study,) = a.get_json("/studies")
    assert f"study {study}: 7 instances" in loaded.stdout
    again = run_script("load_demo", "--url", a.url, "--user", user, "--password", password,
                       "--slices", "6", "--large-mb", "9")
    assert again.returncode == 0 and a.get_json("/studies") == [study]   # same UIDs

    # push: orthanc-a -> orthanc-b (the 9 MiB instance is sliced, the others grouped)
    answer = a.post("/transfers/send", json={"Resources": resources("Study", study),
                                             "Peer": "orthanc-b", "Compression": "gzip"})
    assert answer.status_code == 200, answer.text
    job = a.wait_job(answer.json()["ID"])
    assert job["State"] == "Success" and job["Type"] == "PushTransfer", job
    assert b.instance_md5s() == a.instance_md5s()

    # pull mode: orthanc-b -> orthanc-a, orthanc-a downloads from orthanc-b
    a.request("DELETE", f"/studies/{study}").raise_for_status()
    answer = b.post("/transfers/send", json={"Resources": resources("Study", study),
                                             "Peer": "orthanc-a", "Compression": "gzip"})
    assert answer.status_code == 200, answer.text
    remote = a.wait_job(answer.json()["RemoteJob"])
    assert remote["State"] == "Success" and remote["Type"] == "PullTransfer", remote
    assert a.instance_md5s() == b.instance_md5s()


def test_healthcheck_script(local_pair: dict[str, OrthancServer], tmp_path: Path) -> None:
    a = local_pair["orthanc-a"]
    config = tmp_path / "orthanc.json"
    config.write_text(json.dumps({"HttpPort": a.http_port, "AuthenticationEnabled": True,
                                  "RegisteredUsers": a.config["RegisteredUsers"]}))
    healthy = run_script("healthcheck", "--config", str(config))
    assert healthy.returncode == 0, healthy.stdout
    assert healthy.stdout.startswith("healthy:")

    config.write_text(json.dumps({"HttpPort": a.http_port, "AuthenticationEnabled": True,
                                  "RegisteredUsers": {"admin": "wrong"}}))
    refused = run_script("healthcheck", "--config", str(config))
    assert refused.returncode == 1 and "HTTP 401" in refused.stdout

    plain = OrthancServer("no-plugin", plugin=False)       # Orthanc up, plugin missing
    try:
        plain.start()
        config.write_text(json.dumps({"HttpPort": plain.http_port,
                                      "AuthenticationEnabled": False}))
        missing = run_script("healthcheck", "--config", str(config))
        assert missing.returncode == 1 and "/plugins/transfers" in missing.stdout
    finally:
        plain.cleanup()
