"""The Binder demo: what repo2docker builds from ``binder/``, the build rehearsed, and ``start``.

repo2docker (the package Binder builds with) is asked, without Docker, which build pack and Python it
picks for this checkout and which Dockerfile it renders: Python 3.11 from ``binder/runtime.txt``,
``binder/requirements.txt`` installed, then ``binder/postBuild``, with ``binder/start`` as entrypoint.

The rehearsal does what that image does in a new virtualenv (nothing from the test environment leaks
in): requirements, postBuild, then ``start`` given an nbval run of the tour instead of JupyterLab, so
the demo cannot rot. ``start`` runs its command as a child and stops the stack when it ends or when
``start`` is stopped: checked by the processes left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from workbench.testing.process import processes_mentioning, wait_until_gone

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ALL_PORTS_FREE = ("--domain-port 0 --commits-port 0 --inventory-socket state --inventory-web-port 0 "
                  "--clusters-port 0")


def run(argv: list[str], **options) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, **options)
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def kill_what_is_left(state_dir: Path) -> None:
    """After a failed check, stop a stack start left behind, so no test leaks processes."""
    stack_file = state_dir / "stack.json"
    if stack_file.exists():
        try:
            os.kill(json.loads(stack_file.read_text())["pid"], signal.SIGINT)
        except ProcessLookupError:
            pass
    wait_until_gone(str(state_dir), 60)


def test_binder_environment_starts_the_stack_and_runs_the_tour(tmp_path):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    python = str(venv / "bin" / "python")
    # What Binder does with requirements.txt, plus the rehearsal's own tools (pytest, nbval).
    run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-r", str(ROOT / "binder" / "requirements.txt"), "pytest>=7.4", "nbval>=0.11"], timeout=1200)
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
           "WORKBENCH_UP_OPTIONS": ALL_PORTS_FREE, "JUPYTER_PLATFORM_DIRS": "1"}
    run(["bash", str(ROOT / "binder" / "postBuild")], cwd=ROOT, env=env, timeout=600)
    check = run([python, "-c", "import workbench, workbench_jupyter; print(workbench.__file__)"], env=env)
    assert check.stdout.strip().startswith(str(ROOT))
    overrides = run([python, "-c", "from workbench.lab import installed_app_settings_dir as d; "
                     "print((d() / 'overrides.json').read_text())"], env=env)
    assert json.loads(overrides.stdout)["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"

    state_dir = home / ".workbench"
    described_copy = tmp_path / "stack-seen-by-the-command.json"
    try:
        # The command keeps the stack file it was pointed at: start removes it with the stack after.
        tour = subprocess.run(
            ["bash", str(ROOT / "binder" / "start"), "bash", "-c", 'cp "$WORKBENCH_STACK" "$0" && exec "$@"',
             str(described_copy), python, "-m", "pytest", "--nbval", "--nbval-current-env",
             "--nbval-sanitize-with", "notebooks/sanitize.cfg", "-p", "no:cacheprovider", "-q",
             "notebooks/00-tour.ipynb"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert tour.returncode == 0, tour.stdout[-6000:] + tour.stderr[-3000:]
        assert " passed" in tour.stdout
        described = json.loads(described_copy.read_text())
        assert described["endpoints"]["zdb"]["database"] == "demo"
        stack_pid = described["pid"]
        # The stack stopped with the command that used it (SIGINT from start), children and all.
        assert wait_until_gone(str(state_dir), 60) == {}
        assert stack_pid not in processes_mentioning("workbench")
        assert not (state_dir / "stack.json").exists()
    finally:
        kill_what_is_left(state_dir)



# -- repo2docker: what Binder builds from binder/ ------------------------------------------------

def picked_build_pack(repo: Path):
    """The build pack repo2docker builds ``repo`` with, picked as ``Repo2Docker.build`` picks it.

    repo2docker reads the checkout relative to the working directory, so detection and rendering
    both run inside ``repo``; linux/amd64 is the platform mybinder.org builds for.
    """
    from repo2docker.app import Repo2Docker
    from repo2docker.utils import chdir

    app = Repo2Docker(platform="linux/amd64")
    with chdir(str(repo)):
        for build_pack_class in app.buildpacks:
            build_pack = build_pack_class(base_image=app.base_image)
            if build_pack.detect():
                break
        else:
            build_pack = app.default_buildpack(base_image=app.base_image)
        build_pack.platform = app.platform
        # Everything below reads binder/ files: resolve it all while in the checkout.
        python_version = build_pack.python_version
        script_files = build_pack.get_build_script_files()
        dockerfile = build_pack.render({"NB_USER": "jovyan", "NB_UID": "1000"})
    return build_pack, python_version, script_files, dockerfile


def test_repo2docker_builds_python_3_11_from_binder_files():
    from packaging.specifiers import SpecifierSet
    from repo2docker.buildpacks import PythonBuildPack

    build_pack, python_version, script_files, dockerfile = picked_build_pack(ROOT)
    # With binder/ present repo2docker ignores pyproject.toml's requires-python: runtime.txt decides.
    assert type(build_pack) is PythonBuildPack
    assert python_version == "3.11"
    assert python_version in SpecifierSet(PYPROJECT["project"]["requires-python"])
    environments = [Path(source).name for source, target in script_files.items()
                    if target == "/tmp/env/environment.lock"]
    assert environments == ["environment.py-3.11-linux-64.lock"]

    lines = dockerfile.splitlines()
    requirements = [i for i, line in enumerate(lines)
                    if line.startswith("RUN ") and "pip install" in line and '-r "binder/requirements.txt"' in line]
    post_build = [i for i, line in enumerate(lines) if line == "RUN ./binder/postBuild"]
    assert len(requirements) == 1 and len(post_build) == 1, dockerfile
    # postBuild installs workbench with --no-deps: its dependencies must be in place before it runs.
    assert requirements[0] < post_build[0]
    assert any(line.startswith("RUN ") and "apt-get install" in line and "procps" in line
               for line in dockerfile.replace("\\\n", " ").splitlines())
    assert 'ENV R2D_ENTRYPOINT="${REPO_DIR}/binder/start"' in lines
    assert 'ENTRYPOINT ["/usr/local/bin/repo2docker-entrypoint"]' in lines


# -- binder/start: the stack lives as long as the command ----------------------------------------

def start_environment(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment where ``workbench`` on PATH is this checkout's CLI, and the stack's state dir."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    workbench = bin_dir / "workbench"
    workbench.write_text(f"#!{sys.executable}\nimport sys\nfrom workbench.cli import main\nsys.exit(main())\n")
    workbench.chmod(0o755)
    state_dir = tmp_path / "state"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "extensions")]),
           "WORKBENCH_STATE_DIR": str(state_dir), "WORKBENCH_UP_OPTIONS": ALL_PORTS_FREE}
    return env, state_dir


def test_start_stops_the_stack_when_the_command_ends_and_keeps_its_status(tmp_path):
    env, state_dir = start_environment(tmp_path)
    # The command sees the running stack (its pid answers signal 0), then exits with a status of its own.
    command = ("import json, os, sys; stack = json.load(open(os.environ['WORKBENCH_STACK'])); "
               "os.kill(stack['pid'], 0); print(stack['pid']); sys.exit(3)")
    try:
        ran = subprocess.run(["bash", str(ROOT / "binder" / "start"), sys.executable, "-c", command],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert ran.returncode == 3, ran.stdout + ran.stderr
        stack_pid = int(ran.stdout.split()[-1])
        # start waited for the stack to stop: nothing of it is left the moment start returns.
        assert processes_mentioning(str(state_dir)) == {}
        assert stack_pid not in processes_mentioning("workbench")
        assert not (state_dir / "stack.json").exists()
    finally:
        kill_what_is_left(state_dir)


def repo2docker_entrypoint() -> Path:
    """The entrypoint of every image repo2docker builds: it runs ``$R2D_ENTRYPOINT`` and relays signals."""
    import repo2docker.buildpacks

    return Path(repo2docker.buildpacks.__file__).parent / "repo2docker-entrypoint"


@pytest.mark.parametrize(("signum", "through_entrypoint"),
                         [(signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGTERM, True)],
                         ids=["SIGTERM", "SIGINT", "SIGTERM-via-repo2docker-entrypoint"])
def test_a_signal_to_start_stops_the_command_and_the_stack(tmp_path, signum, through_entrypoint):
    env, state_dir = start_environment(tmp_path)
    ready = tmp_path / "command-ready"
    # A long command, named by its own marker, that says when it runs (the stack is up by then).
    command = f"import pathlib, time; pathlib.Path({str(ready)!r}).touch(); time.sleep(300)"
    marker = str(tmp_path / "long-command")
    argv = [sys.executable, "-c", command, marker]
    if through_entrypoint:
        # As the image runs it: Binder signals repo2docker's entrypoint, which relays to start.
        argv = [sys.executable, str(repo2docker_entrypoint()), *argv]
        env = {**env, "R2D_ENTRYPOINT": str(ROOT / "binder" / "start"), "REPO_DIR": str(tmp_path)}
    else:
        argv = ["bash", str(ROOT / "binder" / "start"), *argv]
    start = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and start.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.exists(), start.stdout.read() if start.poll() is not None else "the command never ran"
        assert processes_mentioning(marker) and processes_mentioning(str(state_dir))
        start.send_signal(signum)
        output, _ = start.communicate(timeout=120)
        # The command died of the signal start passed on, and start says so with its status.
        assert start.returncode == 128 + signum, output
        assert processes_mentioning(marker) == {}
        assert processes_mentioning(str(state_dir)) == {}
        assert not (state_dir / "stack.json").exists()
    finally:
        if start.poll() is None:
            start.kill()
            start.wait()
        for pid in processes_mentioning(marker):
            os.kill(pid, signal.SIGKILL)
        kill_what_is_left(state_dir)

