"""A bubblewrap sandbox for a student's kernel: read-only files, private temp, no network, own PIDs.

:func:`bwrap_prefix` returns the argument list that goes in front of the kernel's command
line. Inside the sandbox the kernel sees:

- the whole file system read-only (``--ro-bind / /``), so it cannot rewrite the installed
  grader, the virtual environment or another student's files;
- an empty private ``/tmp`` (and ``/var/tmp``, ``/run``, ``/dev/shm``), so the other kernels'
  sockets and working folders are out of sight; its own working folder and the folder of its
  IPC sockets are the only writable places;
- no network (``--unshare-net``): the grader talks to it over Unix sockets, which are files;
- its own PID, IPC and UTS namespaces, no capabilities, and death with its parent: when the
  grader kills ``bwrap``, every process in the sandbox dies, including a forked child that
  called ``setsid``;
- empty folders in place of everything outside the operating system's own folders (``/usr``,
  ``/etc``, ``/var`` …): ``/home``, ``/root``, ``/opt``, ``/srv``, ``/mnt`` and any other top-level
  folder where a copy of the course (its ``labs/`` hold solutions and hidden tests), another
  submission or the output folder could live. Only the package, the Python installation, the
  data and torch's weight cache stay visible there. The source lab's folder, the submissions and
  the output folder are hidden even inside the system folders.

Reference: bubblewrap's manual, https://github.com/containers/bubblewrap/blob/main/bwrap.xml
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

# What a grader without bubblewrap leaves open, printed by the CLI and stated in the README.
UNPROTECTED = (
    (
        "the kernel can write anywhere the grader's user can (including the installed grader code, "
        "so one submission can change the grades of the next ones)"
    ),
    "the kernel can read the source lab (solutions and hidden tests), other submissions and the output folder",
    "the kernel has network access",
    "a process forked by the kernel can outlive it",
)


@functools.cache
def available() -> bool:
    """Whether ``bwrap`` is installed and can create the namespaces this sandbox uses (tried once)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return False
    try:
        return (
            subprocess.run(
                [
                    bwrap,
                    "--ro-bind",
                    "/",
                    "/",
                    "--proc",
                    "/proc",
                    "--unshare-net",
                    "--unshare-pid",
                    "--die-with-parent",
                    "true",
                ],
                check=False,
                capture_output=True,
                timeout=30,
            ).returncode
            == 0
        )
    except (OSError, subprocess.SubprocessError):
        return False


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(path))


def _inside(path: Path, folder: Path) -> bool:
    p, f = str(path), str(folder)  # strings: Path.parents costs ~50 us a call, and a sandbox makes thousands
    return p == f or p.startswith(f.rstrip("/") + "/")


def _source_root(path: Path) -> Path | None:
    """The nearest ancestor of ``path`` that looks like a project checkout (has ``.git`` or ``pyproject.toml``)."""
    for folder in (path, *path.parents):
        if folder != Path(folder.anchor) and ((folder / ".git").exists() or (folder / "pyproject.toml").is_file()):
            return folder
    return None


def _checkouts(root: Path) -> list[Path]:
    """``root`` and every other working tree of its git repository (``git worktree``): all hold the labs."""
    git, found = root / ".git", [root]
    if git.is_file():  # a linked worktree: "gitdir: <main>/.git/worktrees/<name>"
        text = git.read_text(errors="replace").strip()
        if text.startswith("gitdir:"):
            git = _real(root / text.split(":", 1)[1].strip()).parents[1]
            found.append(git.parent)
    for link in sorted(git.glob("worktrees/*/gitdir")) if git.is_dir() else ():
        try:
            found.append(_real(link.read_text(errors="replace").strip()).parent)
        except OSError:
            continue
    return found


# Top-level folders of the operating system, visible (read-only) in the sandbox. Every other top-level
# entry is hidden: an allow-list, because a list of places a course copy might be can never be complete.
SYSTEM_ROOTS = frozenset(
    {
        "bin",
        "boot",
        "dev",
        "etc",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "nix",
        "proc",
        "run",
        "sbin",
        "sys",
        "tmp",
        "usr",
        "var",
    }
)


def needed_paths() -> list[Path]:
    """Folders the kernel must still see: the ``cnncourse`` package, the Python installation, the data
    (``$CNNCOURSE_DATA`` and the download cache) and torch's cache of pretrained weights."""
    import cnncourse
    from cnncourse.data import CACHE_ROOT, ENV_VAR

    paths = [
        _real(Path(cnncourse.__file__).parent),
        _real(sys.prefix),
        _real(sys.base_prefix),
        _real(sys.executable).parent,
    ]
    optional = [CACHE_ROOT, Path(os.environ.get("TORCH_HOME", "~/.cache/torch")).expanduser() / "hub"]
    if os.environ.get(ENV_VAR):
        optional.append(Path(os.environ[ENV_VAR]))
    return paths + [_real(p) for p in optional if p.is_dir()]


def outside_system(root: Path = Path("/")) -> list[Path]:
    """The top-level entries of ``root`` that are not operating-system folders (see ``SYSTEM_ROOTS``)."""
    try:
        return [_real(p) for p in sorted(root.iterdir()) if p.name not in SYSTEM_ROOTS and not p.is_symlink()]
    except OSError:
        return []


def _mask(path: Path, keep: list[Path]) -> Iterator[tuple[str, ...]]:
    """bwrap mounts hiding ``path``, except the folders in ``keep`` and the ancestors leading to them."""
    if any(_inside(path, k) for k in keep) or path.is_symlink() or not path.exists():
        return  # needed, or hidden through its target
    if not any(_inside(k, path) for k in keep):
        yield ("--tmpfs", str(path)) if path.is_dir() else ("--ro-bind", "/dev/null", str(path))
        return
    for child in sorted(path.iterdir()):  # an ancestor of something needed
        yield from _mask(child, keep)


def hidden_paths(
    lab: str | os.PathLike, submission: str | os.PathLike, extra: Iterable[str | os.PathLike] = ()
) -> list[Path]:
    """What a kernel must not see: every top-level folder outside the operating system's (:func:`outside_system`),
    and, wherever they are, the source lab's folder and checkout, the submission's folder, ``extra`` (other
    submissions, the output folder), and the checkouts ``cnncourse`` and the Python environment come from,
    with every other ``git worktree`` of them and sibling clones of the course."""
    import cnncourse

    lab, submission = _real(lab), _real(submission)
    paths = [*outside_system(), lab.parent, submission.parent, *(_real(p) for p in extra)]
    for anchor in (lab, _real(Path(cnncourse.__file__).parent), _real(sys.prefix)):
        root = _source_root(anchor)
        if root is not None:
            paths.extend(_checkouts(root))
            paths.extend(_sibling_courses(root))
    return list(dict.fromkeys(paths))


def _sibling_courses(root: Path) -> list[Path]:
    """Other copies of the course beside ``root`` (a second clone holds the same source labs)."""
    try:
        return [
            p
            for p in root.parent.iterdir()
            if p != root and p.is_dir() and (p / "cnncourse" / "grading").is_dir() and (p / "labs").is_dir()
        ]
    except OSError:
        return []


def _matplotlib_home(workdir: Path) -> str:
    """A writable matplotlib folder holding a copy of the grader's font cache (rebuilding it costs seconds)."""
    home = workdir / ".matplotlib"
    home.mkdir(exist_ok=True)
    try:
        import matplotlib

        for cache in Path(matplotlib.get_cachedir()).glob("fontlist-*.json"):
            if not (home / cache.name).exists():  # copied once per kernel (bwrap's --setenv and a forked kernel's)
                shutil.copy(cache, home / cache.name)
    except Exception:  # noqa: BLE001  (no cache to copy: matplotlib rebuilds it)
        pass
    return str(home)


def _private() -> list[Path]:
    """Folders that get an empty tmpfs of their own in every sandbox."""
    return sorted({_real(tempfile.gettempdir()), Path("/tmp"), Path("/var/tmp"), Path("/run")}, key=str)


def mounts(hide: Iterable[str | os.PathLike] = (), keep: Iterable[str | os.PathLike] = ()) -> list[tuple[str, ...]]:
    """The bwrap mounts that hide ``hide`` (see :func:`bwrap_prefix`), one tuple of arguments per mount.

    A mount inside a folder that another mount already empties is left out: it changes nothing, and
    without it two submissions in different folders of one hidden tree get the same sandbox (which lets
    the grader start a submission's kernel before the submission is known, see :mod:`kernel`).
    """
    keep_paths = [*needed_paths(), *(_real(k) for k in keep)]
    private = _private()
    masks: list[tuple[str, ...]] = []
    for path in hide:
        path = _real(path)
        if not any(_inside(path, p) for p in private):  # those are empty already
            masks += _mask(path, keep_paths)
    return outermost(masks)


def outermost(masks: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """``masks`` less repeats and the mounts inside a folder that another ``--tmpfs`` mount empties."""
    emptied = {m[-1] for m in masks if m[0] == "--tmpfs"}
    return [m for m in dict.fromkeys(masks) if not any(str(p) in emptied for p in Path(m[-1]).parents)]


def bwrap_prefix(
    workdir: str | os.PathLike,
    sockets: str | os.PathLike,
    hide: Iterable[str | os.PathLike] = (),
    keep: Iterable[str | os.PathLike] = (),
) -> list[str]:
    """The ``bwrap ...`` arguments to put before a kernel's command line.

    Args:
        workdir: the kernel's private working folder (writable inside the sandbox).
        sockets: the folder of the kernel's connection file and IPC sockets (writable inside).
        hide: files and folders to replace with empty ones (see :func:`hidden_paths`).
        keep: folders inside ``hide`` that must stay visible; :func:`needed_paths` is always kept.

    Raises:
        FileNotFoundError: when ``bwrap`` is not installed.
    """
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise FileNotFoundError(
            "expected the bubblewrap sandbox (`bwrap`) on PATH; install it with "
            "`apt-get install bubblewrap`, or grade with --no-sandbox"
        )
    workdir, sockets = _real(workdir), _real(sockets)
    args = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/dev/shm"]
    for folder in _private():
        if folder.is_dir() and not folder.is_symlink():
            args += ["--tmpfs", str(folder)]
    for mount in mounts(hide, keep):
        args += mount
    args += [
        "--bind",
        str(workdir),
        str(workdir),
        "--bind",
        str(sockets),
        str(sockets),
        "--chdir",
        str(workdir),
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--cap-drop",
        "ALL",
        "--die-with-parent",
        "--new-session",
        # ipykernel exits when its parent looks like init (PID 1 is bwrap's reaper here);
        # --die-with-parent does that job instead.
        "--unsetenv",
        "JPY_PARENT_PID",
    ]
    for name, value in kernel_setenv(workdir).items():
        args += ["--setenv", name, value]
    return args


def kernel_setenv(workdir: str | os.PathLike) -> dict[str, str]:
    """The variables a sandboxed kernel gets on top of the grader's: its IPython, matplotlib and temp folders."""
    workdir = _real(workdir)
    return {"IPYTHONDIR": str(workdir / ".ipython"), "MPLCONFIGDIR": _matplotlib_home(workdir), "TMPDIR": str(workdir)}


def kernel_manager(prefix: list[str], holder: list[str] | None = None, **kwargs: Any) -> Any:
    """A jupyter_client ``AsyncKernelManager`` (built with ``kwargs``) that runs ``prefix`` + an IPython kernel.

    The kernel is the grader's own interpreter (``sys.executable -m ipykernel_launcher``), not whatever the
    installed ``python3`` kernelspec names: a kernelspec may point at another checkout, which the sandbox hides.
    With ``holder``, the sandbox runs that command instead, and the kernel is forked into it (see
    :mod:`cnncourse.grading.zygote`).

    Reference: ``KernelManager.format_kernel_cmd``, https://jupyter-client.readthedocs.io/en/stable/api/jupyter_client.html
    """
    from jupyter_client import AsyncKernelManager

    class SandboxedKernelManager(AsyncKernelManager):
        def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
            if holder:  # the kernel is forked into the sandbox from a zygote (cnncourse.grading.zygote)
                return [*prefix, *holder]
            return [
                *prefix,
                sys.executable,
                "-m",
                "ipykernel_launcher",
                "-f",
                os.path.realpath(self.connection_file),
                *(extra_arguments or []),
            ]

    return SandboxedKernelManager(**kwargs)
