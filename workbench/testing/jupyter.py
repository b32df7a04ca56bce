"""JupyterLab and headless Chromium (Playwright) fixtures for browser tests.

Fixtures (loaded by ``workbench.testing.plugin``):

``jupyter_lab``  session: a real JupyterLab server on a free loopback port, no token, private
                 Jupyter config/data/runtime dirs, serving a temp ``root_dir``.
``browser``      session: Debian's Chromium (``/usr/bin/chromium``) driven by Playwright, headless.
``lab_page``     function: a fresh context and page; on failure a screenshot and the browser
                 console are attached to the report.

Helpers: :func:`write_notebook`, :func:`open_notebook`, :func:`run_notebook_in_lab`,
:func:`save_screenshot`. Playwright is imported lazily, so this plugin loads (and the other
fixtures work) on machines without it; tests that need it are skipped there.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence
from urllib.parse import quote

import pytest

from workbench.lab import LAB_SETTINGS, lab_argv, merge_settings, write_app_settings
from workbench.testing.process import LOOPBACK, ServiceProcess

if TYPE_CHECKING:  # Playwright is optional: only the type checker needs it here
    from playwright.sync_api import Browser, Locator, Page

CHROMIUM = "/usr/bin/chromium"
#: Flags Chromium needs as root in a container without a display, minus everything that would
#: reach the network on its own. Playwright adds a fresh temporary --user-data-dir per launch.
CHROMIUM_ARGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
)

#: Settings defaults for the test server: those of every workbench Lab (no news prompt), and the
#: kernel starts without the "Select Kernel" dialog, so nothing covers what the test clicks.
LAB_OVERRIDES: dict[str, dict[str, Any]] = merge_settings(
    {"@jupyterlab/notebook-extension:tracker": {"autoStartDefaultKernel": True}}, LAB_SETTINGS)

IDLE_INDICATOR = ".jp-Notebook-ExecutionIndicator[data-status='idle']"
WIDGET = ".jupyter-widgets"


class JupyterLabServer(ServiceProcess):
    """JupyterLab on a loopback port, isolated from the user's Jupyter configuration.

    Config, data, runtime, user-settings and workspaces directories live under ``workdir``; the
    settings overrides go to a per-server ``--LabApp.app_settings_dir`` (instead of the shared
    ``<sys.prefix>/share/jupyter/lab/settings/overrides.json``), so servers never affect each
    other or the installation.
    """

    name = "jupyterlab"
    start_timeout = 90.0  # 3-4 s normally; a cold 2-core CI machine importing everything is slower

    def __init__(self, workdir: Path, root_dir: Path | None = None, host: str = LOOPBACK,
                 port: int | None = None, overrides: Mapping[str, Mapping[str, Any]] | None = None,
                 extra_args: Sequence[str] = (), env: Mapping[str, str] | None = None) -> None:
        super().__init__(workdir, host, port)
        self.root_dir = Path(root_dir if root_dir is not None else self.workdir / "root").resolve()
        self.overrides: dict[str, dict[str, Any]] = merge_settings({}, LAB_OVERRIDES)
        merge_settings(self.overrides, overrides or {})
        self.extra_args = list(extra_args)
        self.extra_env = dict(env or {})
        jupyter = self.workdir / "jupyter"
        self.config_dir = jupyter / "config"
        self.data_dir = jupyter / "data"
        self.runtime_dir = jupyter / "runtime"
        self.app_settings_dir = jupyter / "app-settings"
        self.user_settings_dir = jupyter / "user-settings"
        self.workspaces_dir = jupyter / "workspaces"
        self._xsrf: str | None = None

    @property
    def url(self) -> str:
        """Base URL of the server, without a trailing slash."""
        return f"http://{self.host}:{self.port}"

    @property
    def lab_url(self) -> str:
        return f"{self.url}/lab"

    def prepare(self) -> None:
        for path in (self.root_dir, self.config_dir, self.data_dir, self.runtime_dir,
                     self.app_settings_dir, self.user_settings_dir, self.workspaces_dir):
            path.mkdir(parents=True, exist_ok=True)
        # Start from the installation's own app settings (page_config.json disabling extensions,
        # an existing overrides.json), so the test server differs from `jupyter lab` only by our
        # overrides, which are merged on top in this per-server copy.
        write_app_settings(self.app_settings_dir, self.overrides)

    def command(self) -> list[str]:
        # token="" is safe only because the server listens on loopback; it saves every page and
        # API call of the tests from carrying a token.
        return lab_argv(self.root_dir, port=self.port, ip=self.host, token="", extra=[
            f"--LabApp.app_settings_dir={self.app_settings_dir}", *self.extra_args])

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # A token in the environment of whoever runs the tests must not turn auth back on.
        env.pop("JUPYTER_TOKEN", None)
        env.update({
            "JUPYTER_CONFIG_DIR": str(self.config_dir),
            "JUPYTER_DATA_DIR": str(self.data_dir),
            "JUPYTER_RUNTIME_DIR": str(self.runtime_dir),
            "JUPYTERLAB_SETTINGS_DIR": str(self.user_settings_dir),
            "JUPYTERLAB_WORKSPACES_DIR": str(self.workspaces_dir),
            # Logs reach the log file as they happen, not when a buffer fills.
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.extra_env)
        return env

    def get_json(self, path: str, timeout: float = 5.0) -> Any:
        """GET ``path`` (e.g. ``/api/status``) from the server and decode the JSON answer."""
        with urllib.request.urlopen(f"{self.url}{path}", timeout=timeout) as response:
            return json.load(response)

    def _xsrf_token(self) -> str:
        # Even without a token, Jupyter Server wants the XSRF cookie echoed in a header on every
        # request that changes state. Any Lab page sets the cookie; it is constant per server.
        if self._xsrf is None:
            jar = http.cookiejar.CookieJar()
            opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
            with opener.open(f"{self.url}/lab", timeout=10.0) as response:
                response.read()
            self._xsrf = next((c.value for c in jar if c.name == "_xsrf"), "")
        return self._xsrf

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """Send ``method path`` (with ``body`` as JSON) to the server's REST API.

        Returns the decoded JSON answer, None when empty; HTTP errors raise ``HTTPError``.
        """
        headers = {"Content-Type": "application/json"}
        if method.upper() not in ("GET", "HEAD", "OPTIONS"):
            token = self._xsrf_token()
            headers.update({"X-XSRFToken": token, "Cookie": f"_xsrf={token}"})
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=timeout) as response:
            answer = response.read()
        return json.loads(answer) if answer else None

    def shutdown_sessions(self) -> int:
        """End every notebook session and its kernel; returns how many there were.

        Closing a page leaves its kernel running on the server: without this, kernels pile up
        over a session, and a notebook reopened by a later test would get the old kernel's state.
        """
        sessions = self.get_json("/api/sessions")
        for session in sessions:
            try:
                self.request("DELETE", f"/api/sessions/{session['id']}")
            except urllib.error.HTTPError as exc:
                if exc.code != 404:  # already gone is fine
                    raise
        return len(sessions)

    def is_ready(self) -> bool:
        try:
            status = self.get_json("/api/status", timeout=1.0)
        except (OSError, ValueError):  # refused, reset, timeout, HTTP error, half-written JSON
            return False
        return isinstance(status, dict) and "started" in status

    def notebook_url(self, relpath: str | os.PathLike[str], workspace: str | None = None) -> str:
        return notebook_url(self.url, relpath, workspace)


# -- notebooks and pages ---------------------------------------------------------------------------

def wait_for_lab_status(base_url: str, token: str, process: "subprocess.Popen[Any]", timeout: float = 90.0,
                        log: Path | None = None) -> dict[str, Any]:
    """Wait until the Lab that ``process`` runs answers ``/api/status`` with ``token``; its answer.

    An HTTP error is raised at once (the server answers, but refuses); a process that ends first,
    or no answer within ``timeout``, is an AssertionError carrying ``log``'s text when given.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/api/status?token={token}", timeout=2) as reply:
                return json.load(reply)
        except urllib.error.HTTPError:
            raise
        except OSError:
            why = "ended" if process.poll() is not None else "did not answer" if time.monotonic() > deadline else ""
            if why:
                raise AssertionError(f"the Lab {why}" + (f":\n{log.read_text()}" if log else "")) from None
            time.sleep(0.2)


def write_notebook(path: str | os.PathLike[str], cells: Sequence[str | tuple[str, str]],
                   kernel_name: str = "python3") -> Path:
    """Write a notebook of code cells (or ``("markdown", text)`` pairs) with a kernelspec set.

    The kernelspec matters: with it Lab starts that kernel without asking which one to use.
    """
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": kernel_name, "display_name": kernel_name,
                                       "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    for cell in cells:
        kind, source = cell if isinstance(cell, tuple) else ("code", cell)
        notebook.cells.append(nbformat.v4.new_markdown_cell(source) if kind == "markdown"
                              else nbformat.v4.new_code_cell(source))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, str(path))
    return path


def notebook_url(base_url: str, relpath: str | os.PathLike[str], workspace: str | None = None) -> str:
    """Lab URL opening ``relpath`` in a workspace of its own.

    A separate workspace per page keeps Lab from restoring the tabs of earlier pages (the default
    workspace is shared by every page of the server and saved as tabs open), which would make
    tests depend on each other.
    """
    workspace = workspace or f"wb-{uuid.uuid4().hex[:12]}"
    rel = quote(Path(relpath).as_posix().lstrip("/"))
    return f"{base_url.rstrip('/')}/lab/workspaces/{workspace}/tree/{rel}"


def notebook_panel(page: Page) -> Locator:
    """The notebook panel that is currently shown in the main area."""
    return page.locator("#jp-main-dock-panel .jp-NotebookPanel:not(.lm-mod-hidden)").first


# Ready: the panel's indicator says idle, the toolbar names a kernel (right after load the
# indicator says "idle" while the toolbar still says "No Kernel": clicking Run All then clears the
# cells without running them), and the server has a session for this path whose kernel is idle and
# has a websocket connected.
_KERNEL_READY_JS = """
async ([panel, path]) => {
  const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  if (!indicator || indicator.getAttribute('data-status') !== 'idle') return false;
  const name = panel.querySelector('.jp-KernelName');
  const label = name ? name.textContent.trim() : '';
  if (!label || label === 'No Kernel') return false;
  try {
    const response = await fetch('/api/sessions', {cache: 'no-store'});
    if (!response.ok) return true;  // a server that hides sessions: the page's word must do
    const sessions = await response.json();
    return sessions.some((s) => s.path === path && s.kernel &&
                         s.kernel.execution_state === 'idle' && s.kernel.connections > 0);
  } catch (error) {
    return false;
  }
}
"""


def _lab_base(lab_url: str) -> str:
    return re.sub(r"/lab/?$", "", lab_url.rstrip("/"))


def wait_for_kernel_idle(page: Page, panel: Locator, notebook_relpath: str | os.PathLike[str],
                         timeout: float = 60.0, settle: float = 0.3) -> None:
    """Wait until the notebook's kernel is connected and idle (and stays so for ``settle`` s)."""
    path = Path(notebook_relpath).as_posix().lstrip("/")
    handle = panel.element_handle(timeout=timeout * 1000)
    deadline = time.monotonic() + timeout
    ready_since: float | None = None
    while True:
        now = time.monotonic()
        if page.evaluate(_KERNEL_READY_JS, [handle, path]):
            ready_since = ready_since or now
            # Idle twice, apart: one idle reading may be the stale state of a kernel that is
            # about to restart or of a status model still being wired up.
            if now - ready_since >= settle:
                return
        else:
            ready_since = None
        if now > deadline:
            raise TimeoutError(f"kernel of {path} not connected and idle after {timeout:.0f}s")
        time.sleep(0.1)


def open_notebook(page: Page, lab_url: str, notebook_relpath: str | os.PathLike[str],
                  timeout: float = 60.0) -> Locator:
    """Open a notebook in Lab and wait until its kernel is connected and idle; returns its panel.

    ``lab_url`` is the server's base URL (a trailing ``/lab`` is accepted too).
    """
    began = time.monotonic()
    page.goto(notebook_url(_lab_base(lab_url), notebook_relpath), timeout=timeout * 1000)
    panel = notebook_panel(page)
    panel.wait_for(state="visible", timeout=timeout * 1000)
    # Running before the kernel is there would not queue the cells: Lab clears them instead.
    wait_for_kernel_idle(page, panel, notebook_relpath,
                         timeout=max(1.0, timeout - (time.monotonic() - began)))
    return panel


# Installed before clicking Run All: records every "[*]:" prompt that appears (a cell queued or
# running), even when the kernel is fast enough to turn it into "[1]:" before we could poll.
_WATCH_PROMPTS_JS = """
(panel) => {
  const state = {seen: 0};
  const observer = new MutationObserver((records) => {
    for (const record of records) {
      const nodes = [record.target, ...record.addedNodes];
      for (const node of nodes) {
        const text = node.nodeType === Node.TEXT_NODE ? node.data : node.textContent;
        if (text && text.includes('[*]')) { state.seen += 1; return; }
      }
    }
  });
  observer.observe(panel, {subtree: true, childList: true, characterData: true});
  panel.__workbenchRunWatch = {state, observer};
}
"""

# Done: at least one cell was queued since the watch began, none is queued or running any more,
# and the kernel is idle.
_RUN_FINISHED_JS = """
(panel) => {
  const watch = panel.__workbenchRunWatch;
  if (!watch || watch.state.seen === 0) return false;
  const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
  if (prompts.some((p) => p.textContent.includes('[*]'))) return false;
  const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  if (!indicator || indicator.getAttribute('data-status') !== 'idle') return false;
  watch.observer.disconnect();
  return true;
}
"""

# Text of every stderr output. Lab renders exceptions with the stderr mime type too, without a
# class of their own: _looks_like_traceback tells them apart.
_OUTPUTS_JS = """
(panel) => {
  const outputs = [...panel.querySelectorAll(
      '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')];
  return outputs.map((o) => o.textContent);
}
"""


def _has_code(page: Page, notebook_relpath: str | os.PathLike[str]) -> bool:
    """Whether the saved notebook has a non-empty code cell (Lab runs nothing for empty ones).

    Asked of the server, because Lab attaches cell editors lazily: the page may not show the
    sources yet. When the server cannot tell, assume there is code.
    """
    path = quote(Path(notebook_relpath).as_posix().lstrip("/"))
    cells = page.evaluate("""async (path) => {
      try {
        const response = await fetch(`/api/contents/${path}?content=1&type=notebook`, {cache: 'no-store'});
        if (!response.ok) return null;
        return (await response.json()).content.cells.map((c) => [c.cell_type, c.source]);
      } catch (error) { return null; }
    }""", path)
    if cells is None:
        return True
    return any(kind == "code" and (src if isinstance(src, str) else "".join(src)).strip()
               for kind, src in cells)


_EXCEPTION_LINE = re.compile(r"^\s*\w*(Error|Exception|Interrupt|Exit)\b")


def _looks_like_traceback(text: str) -> bool:
    # IPython's tracebacks carry "Traceback (most recent call last)"; a SyntaxError does not, but
    # ends with the exception name. Plain stderr (warnings, logging) matches neither.
    lines = [line for line in text.splitlines() if line.strip()]
    return "Traceback" in text or bool(lines and _EXCEPTION_LINE.match(lines[-1]))


@dataclass
class NotebookRun:
    """What :func:`run_notebook_in_lab` saw: the panel, timings, stderr outputs and tracebacks."""

    panel: Locator
    seconds: float
    stderr: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class NotebookRunError(AssertionError):
    """A cell raised while running a notebook in Lab (an AssertionError, so pytest shows it plainly)."""


def run_all_cells(page: Page, panel: Locator | None = None, timeout: float = 120.0,
                  start_timeout: float = 15.0) -> None:
    """Run > Run All Cells through the menu bar, then wait until every cell has run.

    Raises TimeoutError when no cell was queued within ``start_timeout`` (the kernel was not
    ready, or the notebook has no code) instead of waiting out the whole ``timeout``.
    """
    panel = panel or notebook_panel(page)
    handle = panel.element_handle()
    handle.evaluate(_WATCH_PROMPTS_JS)
    # Through the menu, as a person would: this also checks the Run menu and its command exist.
    page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator("li.lm-Menu-item[data-command='runmenu:run-all']").click()
    began = time.monotonic()
    try:
        page.wait_for_function("(panel) => panel.__workbenchRunWatch.state.seen > 0", arg=handle,
                               timeout=start_timeout * 1000, polling=50)
    except Exception as exc:
        raise TimeoutError(f"Run All Cells queued no cell within {start_timeout:.0f}s") from exc
    remaining = max(1.0, timeout - (time.monotonic() - began))
    page.wait_for_function(_RUN_FINISHED_JS, arg=handle, timeout=remaining * 1000, polling=100)


def run_notebook_in_lab(page: Page, lab_url: str, notebook_relpath: str | os.PathLike[str],
                        timeout: float = 120.0, raise_on_error: bool = True) -> NotebookRun:
    """Open a notebook in Lab, wait for its kernel, Run All Cells via the menu, wait for the end.

    Raises :class:`NotebookRunError` with the traceback text when a cell raised (unless
    ``raise_on_error`` is false: then the tracebacks are in the result's ``errors``).
    Widgets and outputs are left on the page for the caller to inspect.
    """
    began = time.monotonic()
    panel = open_notebook(page, lab_url, notebook_relpath, timeout=timeout)
    if _has_code(page, notebook_relpath):
        run_all_cells(page, panel, timeout=max(1.0, timeout - (time.monotonic() - began)))
    stderr = panel.evaluate(_OUTPUTS_JS)
    errors = [text for text in stderr if _looks_like_traceback(text)]
    run = NotebookRun(panel=panel, seconds=time.monotonic() - began, stderr=stderr, errors=errors)
    if errors and raise_on_error:
        raise NotebookRunError(f"{notebook_relpath}: a cell raised:\n" + "\n".join(errors))
    return run


def save_screenshot(page: Page, path: str | os.PathLike[str], *, full_page: bool = True,
                    target: Locator | None = None) -> Path:
    """Save a PNG of the page (or of ``target``) to ``path``, creating directories; returns it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if target is not None:
        target.screenshot(path=str(path))
    else:
        page.screenshot(path=str(path), full_page=full_page)
    return path


# -- fixtures --------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def jupyter_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLabServer]:
    """A running JupyterLab (``url``, ``lab_url``, ``root_dir``) for the whole session."""
    pytest.importorskip("jupyterlab", reason="pip install jupyterlab")
    workdir = tmp_path_factory.mktemp("jupyterlab")
    server = JupyterLabServer(workdir, root_dir=workdir / "root")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Headless Chromium driven by Playwright, for the whole session."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not os.access(CHROMIUM, os.X_OK):
        # Never `playwright install`: it downloads a browser build; Debian's works.
        pytest.skip(f"{CHROMIUM} not found; install it with: apt-get install -y chromium")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=list(CHROMIUM_ARGS))
        try:
            yield launched
        finally:
            launched.close()


_CONSOLE_KEY = pytest.StashKey[list[str]]()


@pytest.fixture
def lab_page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A new page in a fresh browser context (no shared cookies or storage), closed after the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    console: list[str] = []
    request.node.stash[_CONSOLE_KEY] = console
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    try:
        yield page
    finally:
        context.close()
        # Tests that use the session's server get a clean one back: no kernel outlives its test.
        if "jupyter_lab" in request.fixturenames:
            server = request.getfixturevalue("jupyter_lab")
            if server.running:
                server.shutdown_sessions()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    page = getattr(item, "funcargs", {}).get("lab_page")
    if report.when != "call" or not report.failed or page is None:
        return
    # The page is still open here (fixture teardown comes later): capture what the browser showed
    # at the moment of failure, and what it logged.
    try:
        artifacts = Path(item.config.getoption("artifacts_dir")).resolve()
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid).strip("_")
        shot = save_screenshot(page, artifacts / f"{name}-failure.png")
        report.sections.append(("browser screenshot", str(shot)))
    except Exception as exc:  # a crashed page must not hide the test's own failure
        report.sections.append(("browser screenshot", f"<failed: {exc}>"))
    console = item.stash.get(_CONSOLE_KEY, [])
    if console:
        report.sections.append(("browser console", "\n".join(console[-100:])))
