"""Model selection shared by the commands that drive a model (`run`, `solve`, `eval`).

One place decides which backend a command line names, so every command accepts the same options and says the
same thing when nothing usable is named. Precedence: `--scripted` (tests), then `--base-url` (a server), then
`--model` (a GGUF path or a Hugging Face repo), then the environment (`QWQ_AGENT_BASE_URL`, `QWQ_AGENT_MODEL`,
`QWQ_AGENT_MODEL_NAME`), then the embedded default: QwQ-32B Q4_K_M from the model makers' repository, used from
the Hugging Face cache or downloaded once. The backends are imported only inside `build_model`, so adding
these options to a parser costs nothing at `qwq-agent --help` time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prompts.errors import ConfigurationError

if TYPE_CHECKING:
    from agent.cli.view import View
    from agent.context import ContextPolicy
    from agent.evals.solve import SolveOptions
    from agent.models.base import Model
    from sandboxes import SandboxConfig

__all__ = [
    "DEFAULT_GGUF_FILE",
    "DEFAULT_REPO",
    "RUN_OPTIONS",
    "ConfigurationError",
    "add_keep_thinking_argument",
    "add_model_arguments",
    "add_sandbox_arguments",
    "build_model",
    "command_parser",
    "context_policy",
    "ensure_sandbox_image",
    "exit_code_for",
    "load_now",
    "load_script",
    "one_line",
    "report_error",
    "run_in_view",
    "run_options",
    "sandbox_config",
    "solve_options",
]

DEFAULT_REPO = "Qwen/QwQ-32B-GGUF"
DEFAULT_GGUF_FILE = "qwq-32b-q4_k_m.gguf"
ENV_MODEL = "QWQ_AGENT_MODEL"
ENV_BASE_URL = "QWQ_AGENT_BASE_URL"
ENV_MODEL_NAME = "QWQ_AGENT_MODEL_NAME"

_HOW_TO_NAME = (
    "Name a model: `--model /path/to/qwq-32b-q4_k_m.gguf` (a local GGUF file, run in-process with "
    "llama-cpp-python) or `--base-url http://127.0.0.1:8000/v1 --model-name qwq-32b` (an OpenAI-compatible "
    f"server such as vLLM, SGLang, llama.cpp server or Ollama); or set {ENV_MODEL} / {ENV_BASE_URL}."
)


def report_error(command: str, error: BaseException) -> int | None:
    """Print `error` as one line and return the exit code for it, or None for an error no command expects.

    2: the user must fix something before running again (configuration, a model or server named wrongly, a
    missing Docker engine or image, a transcript that cannot be used); 1: something failed at run time (a
    server that went away, a sandbox that broke, a disk that filled up).
    """
    from agent.models.errors import ModelError
    from prompts.errors import RunError
    from tools.mcp import MCPServerError

    # The error tree (agent.errors) says who must act; an MCP server that will not start is the user's to fix.
    if isinstance(error, ConfigurationError | MCPServerError):
        code = 2
    elif isinstance(error, RunError | OSError):
        code = 1
    else:
        return None
    prefix = "the model failed: " if isinstance(error, ModelError) and code == 1 else ""
    print(f"qwq-agent {command}: {prefix}{one_line(error)}", file=sys.stderr)
    return code


def exit_code_for(command: str, error: Exception) -> int:
    """`report_error`'s exit code; an error no command expects is raised again, so that the entry point
    reports it as a bug with its traceback instead of a one-line message that would hide where it came from."""
    code = report_error(command, error)
    if code is None:
        raise error
    return code


def command_parser(
    sub: Any, name: str, help_text: str, description: str | None, examples: Sequence[str], more: str = ""
) -> argparse.ArgumentParser:
    """A subcommand's parser whose help ends with `examples` (then `more`), laid out as written."""
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples) + (f"\n{more}" if more else "")
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def run_in_view(command: str, view: View, body: Callable[[], int], interrupted: Callable[[], str]) -> int:
    """`body()`'s exit code. The view is closed before anything else is said: on Ctrl-C, the sentence
    `interrupted()` returns (exit 130); on an error, the one `exit_code_for` prints."""
    try:
        return body()
    except KeyboardInterrupt:
        view.close()
        view.note(interrupted())
        return 130
    except Exception as exc:
        view.close()
        return exit_code_for(command, exc)


def add_keep_thinking_argument(parser: argparse.ArgumentParser) -> None:
    """`--keep-thinking`, the same for every command that runs agents."""
    parser.add_argument(
        "--keep-thinking",
        choices=("none", "current_task"),
        default="none",
        help="none: the model sees none of its earlier reasoning (QwQ-32B's own format); current_task: it "
        "sees its reasoning since the last user turn, and the prompt only grows (default: none)",
    )


def one_line(error: BaseException | str, limit: int = 600) -> str:
    """An error as one line for the terminal: a message of several lines (a server's HTML page) is joined and
    cut; an exception without a message is named by its class."""
    text = " ".join(str(error).split())
    if not text and isinstance(error, BaseException):
        text = type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the model and budget options every model-driving command shares."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        metavar="PATH|REPO",
        help=f"a GGUF file, or a Hugging Face repo id (REPO or REPO:FILE.gguf) for in-process llama.cpp "
        f"(default: {DEFAULT_REPO}:{DEFAULT_GGUF_FILE}, or ${ENV_MODEL})",
    )
    group.add_argument(
        "--base-url",
        metavar="URL",
        action=Repeatable,
        help=f"an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (or ${ENV_BASE_URL}); give it "
        "several times for replicas of one model: each turn goes to the least busy one, a failing one is skipped",
    )
    group.add_argument(
        "--model-name", metavar="NAME", help=f"the model's name on the server (or ${ENV_MODEL_NAME})"
    )
    group.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="environment variable holding the server's API key (default: QWQ_AGENT_API_KEY, then OPENAI_API_KEY)",
    )
    group.add_argument(
        "--api-mode",
        choices=("completions", "chat"),
        help="server endpoint: raw /v1/completions (exact QwQ format) or /v1/chat/completions (hosted APIs)",
    )
    group.add_argument(
        "--n-ctx",
        type=int,
        metavar="TOKENS",
        help="context size: of in-process llama.cpp, or of a server that does not report it (llama.cpp's "
        "and vLLM's do); long runs are condensed to fit it",
    )
    group.add_argument("--n-gpu-layers", type=int, metavar="N", help="layers to offload to the GPU (-1: all)")
    group.add_argument("--threads", type=int, metavar="N", help="CPU threads for in-process llama.cpp")
    group.add_argument(
        "--max-tokens", type=int, metavar="TOKENS", help="cap on generated tokens per model turn"
    )
    group.add_argument("--seed", type=int, help="sampling seed")
    sampling = parser.add_argument_group(
        "sampling (default: QwQ-32B's recommended temperature 0.6, top-p 0.95, top-k 40, min-p 0)"
    )
    sampling.add_argument("--temperature", type=float, metavar="T", help="above 0: never greedy")
    sampling.add_argument("--top-p", type=float, metavar="P")
    sampling.add_argument("--top-k", type=int, metavar="K", help="0: off")
    sampling.add_argument("--min-p", type=float, metavar="P")
    sampling.add_argument(
        "--presence-penalty", type=float, metavar="X", help="-2 to 2; a little helps against repetition loops"
    )
    group.add_argument(
        "--chat-format",
        choices=("auto", "qwq", "template"),
        default="auto",
        help="how prompts are rendered: auto (the GGUF's or the server's template decides: QwQ-32B's exact format "
        "for QwQ, the model's own template otherwise), qwq, template (default: auto)",
    )
    group.add_argument(
        "--scripted",
        type=Path,
        metavar="FILE",
        help="replay completion texts from a JSON list instead of a model (for tests and demos)",
    )
    context = parser.add_argument_group("context (how long runs stay inside the model's context)")
    context.add_argument(
        "--context",
        choices=CONTEXT_MODES,
        default="auto",
        help="auto: mask old tool results, then replace the middle of the history by a digest; summarize: "
        "the model summarises the middle instead; mask: masking only (a run that still outgrows the "
        "context stops with context_full); off: send the whole history (default: auto)",
    )
    context.add_argument(
        "--keep-turns",
        type=int,
        default=3,
        metavar="N",
        help="the last N turns are always shown whole (default: 3)",
    )
    budgets = parser.add_argument_group("budgets")
    budgets.add_argument("--max-steps", type=int, default=20, help="model turns per run (default: 20)")
    budgets.add_argument("--timeout", type=float, metavar="SECONDS", help="wall-clock limit of a run")
    budgets.add_argument(
        "--thinking-budget", type=int, metavar="TOKENS", help="cap on reasoning tokens per turn"
    )


CONTEXT_MODES = ("auto", "summarize", "mask", "off")
# The options that set each run's budgets and reasoning policy: keyword arguments of `Agent` and `SolveOptions`.
RUN_OPTIONS = ("max_steps", "timeout", "thinking_budget", "token_budget", "keep_thinking")


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The `RUN_OPTIONS` a parsed command line has (a command without one leaves its default)."""
    return {name: getattr(args, name) for name in RUN_OPTIONS if hasattr(args, name)}


def solve_options(args: argparse.Namespace) -> SolveOptions:
    """The `SolveOptions` of `solve` and `eval`: the run options, the transcripts' folder, the context policy."""
    from agent.evals.solve import SolveOptions

    return SolveOptions(**run_options(args), transcript_dir=args.transcript_dir, context=context_policy(args))


def context_policy(args: argparse.Namespace, sandbox: Any = None) -> ContextPolicy | None:
    """The `ContextPolicy` the context options name (None for `--context off`); `sandbox` keeps what is masked."""
    from agent.context import ContextPolicy

    mode = getattr(args, "context", "auto")
    if mode == "off":
        return None
    condense = {"auto": "digest", "summarize": "summary", "mask": "none"}[mode]
    try:
        return ContextPolicy(
            keep_turns=getattr(args, "keep_turns", 3),
            condense=condense,  # type: ignore[arg-type]
            sandbox=sandbox,
        )
    except ValueError as exc:
        raise ConfigurationError(f"--keep-turns: {exc}") from exc


def load_script(path: Path) -> list[str] | dict[str, list[str]]:
    """Read a `--scripted` file: a JSON list of completion texts, or an object of such lists keyed by task id."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read the script {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"the script {path} is not UTF-8 text: {exc.reason} at byte {exc.start}"
        ) from exc
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, a number too long, nesting too deep
        raise ConfigurationError(f"the script {path} is not JSON: {exc}") from exc

    def texts(value: Any, where: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            raise ConfigurationError(f"{where} must be a JSON list of completion texts (strings)")
        return list(value)

    if isinstance(data, dict):
        return {str(k): texts(v, f"{path}[{k!r}]") for k, v in data.items()}
    return texts(data, str(path))


def build_model(args: argparse.Namespace) -> Model:
    """The model the parsed options name; raises `ConfigurationError` when none can be used."""
    if getattr(args, "scripted", None) is not None:
        from agent.models import ScriptedModel

        script = load_script(args.scripted)
        if isinstance(script, dict):
            raise ConfigurationError(
                f"{args.scripted} maps task ids to scripts; this command needs one JSON list of completions"
            )
        return ScriptedModel(script)

    base_urls = base_urls_of(args)
    if base_urls:
        return _server_model(args, base_urls)
    model = args.model or os.environ.get(ENV_MODEL)
    if model:
        path = Path(model).expanduser()
        if path.is_file():
            return _llama_model(args, model_path=str(path))
        if _looks_like_path(model):
            raise ConfigurationError(f"the model file {model} does not exist. {_HOW_TO_NAME}")
        repo, _, filename = model.partition(":")
        return _llama_model(args, repo=repo, filename=filename or None)
    return _default_model(args)


def _looks_like_path(name: str) -> bool:
    # A repo id is "owner/name" (optionally ":file.gguf"); anything else that names a .gguf is a path.
    return name.startswith(("/", ".", "~")) or (name.endswith(".gguf") and ":" not in name)


class Repeatable(argparse.Action):
    """An option given several times collects its values; on the command line they replace, not extend, a
    default from the config file (the command line wins over the file)."""

    repeatable = True

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        seen = f"_{self.dest}_from_command_line"
        current = getattr(namespace, self.dest, None) if getattr(namespace, seen, False) else None
        setattr(namespace, seen, True)
        setattr(namespace, self.dest, [*(current or []), values])


def base_urls_of(args: argparse.Namespace) -> list[str]:
    """The servers `--base-url` (repeatable; a config file may give one or a list) or the environment name."""
    given = args.base_url
    if given is None:
        given = [u for u in os.environ.get(ENV_BASE_URL, "").split(",") if u.strip()]
    return [given] if isinstance(given, str) else [str(u).strip() for u in given]


SAMPLING_OPTIONS = ("temperature", "top_p", "top_k", "min_p", "presence_penalty")


def sampling_of(args: argparse.Namespace) -> dict[str, Any]:
    """`{"sampling": SamplingConfig}` when a sampling option was given, else nothing (the model's default)."""
    from agent.models import SamplingConfig

    given = {name: getattr(args, name, None) for name in SAMPLING_OPTIONS}
    if all(value is None for value in given.values()):
        return {}
    try:
        return {"sampling": SamplingConfig().with_(**given)}
    except ValueError as exc:
        raise ConfigurationError(f"sampling options: {exc}") from exc


def _server_model(args: argparse.Namespace, base_urls: list[str]) -> Model:
    from agent.models import OpenAICompatModel

    kwargs: dict[str, Any] = {"base_url": base_urls[0], "base_urls": base_urls}
    name = args.model_name or os.environ.get(ENV_MODEL_NAME)
    if name:
        kwargs["model"] = name
    if args.api_key_env:
        if not os.environ.get(args.api_key_env):
            raise ConfigurationError(f"--api-key-env names {args.api_key_env}, which is not set")
        kwargs["api_key_env"] = args.api_key_env
    if args.api_mode:
        kwargs["mode"] = args.api_mode
    if args.seed is not None:
        kwargs["seed"] = args.seed
    if args.max_tokens is not None:
        kwargs["max_tokens"] = args.max_tokens
    if getattr(args, "n_ctx", None) is not None:
        kwargs["n_ctx"] = args.n_ctx
    if getattr(args, "chat_format", None) not in (None, "auto"):
        kwargs["chat_format"] = args.chat_format
    return _construct(OpenAICompatModel, {**kwargs, **sampling_of(args)})


def _llama_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if args.n_ctx is not None:
        kwargs["n_ctx"] = args.n_ctx
    if args.n_gpu_layers is not None:
        kwargs["n_gpu_layers"] = args.n_gpu_layers
    if args.seed is not None:
        kwargs["seed"] = args.seed
    if args.threads is not None:
        kwargs["n_threads"] = args.threads
    if args.max_tokens is not None:
        kwargs["max_tokens"] = args.max_tokens
    if getattr(args, "chat_format", None) not in (None, "auto"):
        kwargs["chat_format"] = args.chat_format
    return {**kwargs, **sampling_of(args)}


def _llama_class() -> Any:
    try:
        from agent.models import LlamaCppModel
    except ImportError as exc:
        raise ConfigurationError(
            f"in-process models need llama-cpp-python ({exc}): `pip install 'qwq-agent[llama]'`, "
            "or use a server with --base-url URL --model-name NAME"
        ) from exc
    return LlamaCppModel


def _llama_model(
    args: argparse.Namespace,
    *,
    model_path: str | None = None,
    repo: str | None = None,
    filename: str | None = None,
) -> Model:
    cls = _llama_class()
    kwargs = _llama_kwargs(args)
    if model_path is not None:
        return _construct(cls, {"model_path": model_path, **kwargs})
    from_pretrained = getattr(cls, "from_pretrained", None)
    if from_pretrained is None:
        raise ConfigurationError(f"this build cannot load models from a repository. {_HOW_TO_NAME}")
    try:
        if filename is None and repo == DEFAULT_REPO:
            filename = DEFAULT_GGUF_FILE  # the repo holds several quantisations; Q4_K_M is the default
        model: Model = from_pretrained(repo, filename, **kwargs)
    except ConfigurationError:
        raise
    except Exception as exc:
        raise ConfigurationError(f"cannot load {repo} from Hugging Face ({exc}). {_HOW_TO_NAME}") from exc
    return model


def _default_model(args: argparse.Namespace) -> Model:
    """The embedded default: the cached QwQ-32B GGUF, or a one-time download where there is network."""
    cached = _cached_default()
    if cached is not None:
        return _llama_model(args, model_path=cached)
    if not _hub_reachable():
        raise ConfigurationError(
            f"no model was named and the default ({DEFAULT_REPO}:{DEFAULT_GGUF_FILE}, about 20 GB) is neither "
            f"cached nor downloadable: huggingface.co cannot be reached from here. {_HOW_TO_NAME}"
        )
    return _llama_model(args, repo=DEFAULT_REPO, filename=DEFAULT_GGUF_FILE)


def _cached_default() -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # huggingface_hub comes with llama-cpp-python; without it nothing can be cached
        return None
    cached = try_to_load_from_cache(DEFAULT_REPO, DEFAULT_GGUF_FILE)
    return cached if isinstance(cached, str) and Path(cached).is_file() else None


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    import socket

    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def _construct(cls: Any, kwargs: dict[str, Any]) -> Model:
    """Call a backend constructor; its own configuration errors become `ConfigurationError` with a hint."""
    from agent.models.errors import ModelConfigurationError

    try:
        model: Model = cls(**kwargs)
    except (ModelConfigurationError, TypeError, ValueError, OSError) as exc:
        raise ConfigurationError(f"cannot start {cls.__name__}: {exc}") from exc
    return model


def load_now(model: Model, note: Callable[[str], None]) -> None:
    """Load an in-process model before any sandbox starts, so a bad file fails once, up front, not per task."""
    load = getattr(model, "load", None)
    if load is None:
        return
    from agent.models.errors import ModelError

    note(f"loading {getattr(model, 'model_path', 'the model')} ...")
    try:
        load()
    except ModelError as exc:
        raise ConfigurationError(str(exc)) from exc


SANDBOX_RUNTIMES = ("runc", "runsc")


def add_sandbox_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of the commands that start sandboxes (also settable in the config file's `[sandbox]`)."""
    group = parser.add_argument_group("sandbox")
    group.add_argument(
        "--sandbox-runtime",
        choices=SANDBOX_RUNTIMES,
        help="the engine's container runtime: runc, or runsc (gVisor: a kernel in user space between the code "
        "and the host's; must be registered with the engine, see `qwq-agent sandbox doctor`) "
        "(default: the engine's default, normally runc)",
    )


def sandbox_config(args: argparse.Namespace) -> SandboxConfig:
    """The `SandboxConfig` the sandbox options name (the hardened defaults for everything else)."""
    from sandboxes import SandboxConfig

    return SandboxConfig(runtime=getattr(args, "sandbox_runtime", None))


def ensure_sandbox_image(image: str | None, note: Callable[[str], None]) -> None:
    """Build the default sandbox image on first use (progress to `note`) instead of failing with 'not found'.

    Another image the user named is never built: it is theirs to pull or build, and the error says so.
    """
    from sandboxes import image as images

    tag = image or images.DEFAULT_IMAGE
    if images.image_exists(tag):
        return
    if tag != images.DEFAULT_IMAGE:
        raise ConfigurationError(
            f"the sandbox image {tag!r} is not on the Docker engine: pull or build it first"
        )
    note(f"The sandbox image {tag} is missing; building it once (2-3 minutes)...")
    images.build_image(progress=note)
