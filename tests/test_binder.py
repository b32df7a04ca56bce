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
import tomllib
from pathlib import Path

from workbench.testing.process import processes_mentioning, wait_until_gone

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ALL_PORTS_FREE = ("--domain-port 0 --commits-port 0 --inventory-socket state --inventory-web-port 0 "
                  "--clusters-port 0")


def run(argv: list[str], **options) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, **options)
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


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
    try:
        tour = subprocess.run(
            ["bash", str(ROOT / "binder" / "start"), python, "-m", "pytest", "--nbval", "--nbval-current-env",
             "--nbval-sanitize-with", "notebooks/sanitize.cfg", "-p", "no:cacheprovider", "-q",
             "notebooks/00-tour.ipynb"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert tour.returncode == 0, tour.stdout[-6000:] + tour.stderr[-3000:]
        assert " passed" in tour.stdout
        described = json.loads((state_dir / "stack.json").read_text())
        assert described["endpoints"]["zdb"]["database"] == "demo"
        stack_pid = described["pid"]
    finally:
        stack_file = state_dir / "stack.json"
        if stack_file.exists():
            os.kill(json.loads(stack_file.read_text())["pid"], signal.SIGINT)
    # The stack Binder's start left behind stops cleanly on SIGINT, with its children.
    assert wait_until_gone(str(state_dir), 60) == {}
    assert stack_pid not in processes_mentioning("workbench")
    assert not (state_dir / "stack.json").exists()



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
