"""Every error qwq-agent raises, in one tree (re-exported here from where each is defined).

    QwqAgentError                           except QwqAgentError: everything qwq-agent raises
    ├── ConfigurationError                  the user must act: fix and run again (the CLI exits 2)
    │   ├── PromptTemplateError             a template that does not compile, render, or exist (prompts)
    │   ├── ModelConfigurationError *       a model file, URL, key or name that cannot be used
    │   │   └── ModelAuthenticationError *  the server refused the API key
    │   ├── GrammarError                    a tool schema that cannot become a grammar
    │   ├── ToolDefinitionError             a function that cannot be a tool, an invalid schema (tools)
    │   ├── MCPConfigError                  an MCP server configuration that cannot be used
    │   ├── DockerUnavailableError *        no Docker engine, or no permission on it (sandboxes)
    │   ├── ImageNotFoundError *            the sandbox image is missing: qwq-agent sandbox build
    │   ├── ImageBuildError *               building the sandbox image failed
    │   ├── TranscriptError                 a transcript that cannot be read or written
    │   │   └── TranscriptLockedError       another process is writing it
    │   ├── ProblemError                    an eval problem file that cannot be used
    │   ├── ReportError                     a report source that is not a transcript or results
    │   ├── TaskFileError                   a batch task file with a line that is not a task
    │   ├── ResultsFileError                a batch results file that cannot be continued as asked
    │   ├── ExportError                     runs that cannot be exported as asked
    │   ├── BatchAbortedError               a batch task failed the way every task would (fix and rerun)
    │   ├── RayUnavailableError             Ray missing, or the cluster unreachable
    │   └── BrowserError                    Chromium is missing or failed (report checks)
    └── RunError                            something failed at run time (the CLI exits 1)
        ├── ModelError                      a model backend failed: the run stops with model_error
        │   ├── ModelRequestError           the server rejected a request
        │   │   └── ContextLengthError      the prompt does not fit the context
        │   ├── ModelUnavailableError       the server kept failing after every retry
        │   ├── ModelStreamError            a stream cut off or not SSE (.retryable: the turn restarts)
        │   └── ScriptExhaustedError        a ScriptedModel ran out of outputs
        ├── SandboxError                    the sandbox layer (the ones marked * above are also this)
        │   ├── SandboxStartError           a container whose runner never answered
        │   └── SandboxFileError            a file operation refused: the model reads why
        ├── ToolArgumentsError              the model's call does not fit the schema: an observation
        │   └── UnknownToolError            no such tool: an observation naming the ones there are
        ├── ToolError                       a tool reports a failure to the model in its own words
        ├── FetchError                      web_fetch refused or failed: an observation
        │   (WorkerFailed, Unreadable: inside web_fetch, always turned into a FetchError)
        ├── MCPServerError                  an MCP server could not be started, reached or listed
        ├── EvalStoppedError                an eval stopped after the model failed too often in a row
        └── WorkerLostError                 a batch task's process or node died more often than retries allow

    * also in the other branch: ModelConfigurationError is a ModelError, the three sandbox errors the user
      must fix are SandboxErrors, so code that catches one backend's or one layer's errors still catches them.

Errors the model must fix never reach the caller: the loop turns them into observations. Everything else is
raised with a message that says what to do.
"""

from __future__ import annotations

from agent.batch.executor import WorkerLostError
from agent.batch.export import ExportError
from agent.batch.ray_backend import RayUnavailableError
from agent.batch.results import ResultsFileError
from agent.batch.run import BatchAbortedError
from agent.batch.tasks import TaskFileError
from agent.evals.humaneval import EvalStoppedError
from agent.evals.problems import ProblemError
from agent.models import errors as model_errors
from agent.models.errors import *  # noqa: F403 (re-exported: `model_errors.__all__` names them)
from agent.models.grammar import GrammarError
from agent.models.scripted import ScriptExhaustedError
from agent.reports import ReportError
from agent.reports.browser import BrowserError
from agent.transcript import TranscriptError, TranscriptLockedError
from prompts.errors import ConfigurationError, PromptTemplateError, QwqAgentError, RunError
from sandboxes.errors import (
    DockerUnavailableError,
    ImageBuildError,
    ImageNotFoundError,
    SandboxError,
    SandboxFileError,
    SandboxStartError,
)
from tools.errors import (
    FetchError,
    MCPConfigError,
    MCPServerError,
    ToolArgumentsError,
    ToolDefinitionError,
    ToolError,
    UnknownToolError,
)
from tools.web_extract import Unreadable
from tools.web_worker import WorkerFailed

__all__ = [
    "BatchAbortedError",
    "BrowserError",
    "ConfigurationError",
    "DockerUnavailableError",
    "EvalStoppedError",
    "ExportError",
    "FetchError",
    "GrammarError",
    "ImageBuildError",
    "ImageNotFoundError",
    "MCPConfigError",
    "MCPServerError",
    "ProblemError",
    "PromptTemplateError",
    "QwqAgentError",
    "RayUnavailableError",
    "ReportError",
    "ResultsFileError",
    "RunError",
    "SandboxError",
    "SandboxFileError",
    "SandboxStartError",
    "ScriptExhaustedError",
    "TaskFileError",
    "ToolArgumentsError",
    "ToolDefinitionError",
    "ToolError",
    "TranscriptError",
    "TranscriptLockedError",
    "UnknownToolError",
    "Unreadable",
    "WorkerFailed",
    "WorkerLostError",
]
__all__ += model_errors.__all__
