"""Prompt files: every bundled prompt loads and renders; overrides; missing variables are errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from img_agent.agent.prompts import (
    bundled_prompt_names,
    bundled_prompts_dir,
    load_prompt,
    render_prompt,
)
from img_agent.errors import ConfigError

EXPECTED = {
    "chat_system": {"tools", "max_rounds"},
    "describe_system": set(),
    "describe_user": {"name"},
    "expand_non_english": set(),
    "expand_system": {"n"},
    "expand_user": {"query", "n", "language_note"},
    "explain_system": set(),
    "explain_user": {"query", "queries", "image_note", "count", "results"},
    "qa_system": set(),
    "qa_user": {"question", "image_note", "count", "images"},
}


def test_bundled_folder_is_package_data():
    folder = bundled_prompts_dir()
    assert folder.is_dir()
    assert folder.name == "prompts"


def test_every_expected_prompt_is_bundled():
    assert set(bundled_prompt_names()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_bundled_prompt_loads_and_renders(name):
    template = load_prompt(name)
    assert template.variables == EXPECTED[name]
    values = {var: f"<{var}>" for var in template.variables}
    text = template.render(**values)
    assert text.strip()
    for var in template.variables:
        assert f"<{var}>" in text
    assert "$" not in text  # nothing left unrendered


def test_missing_variable_raises_config_error_naming_it():
    with pytest.raises(ConfigError, match=r"\$query"):
        render_prompt("expand_user", None, n=3, language_note="")


def test_extra_variables_are_ignored():
    assert "cats" in render_prompt("expand_user", None, query="cats", n=2, language_note="", unused=1)


def test_user_folder_overrides_file_by_file(tmp_path: Path):
    (tmp_path / "expand_system.txt").write_text("Custom: give $n variants as JSON.", encoding="utf-8")
    assert render_prompt("expand_system", tmp_path, n=5) == "Custom: give 5 variants as JSON."
    assert load_prompt("expand_system", tmp_path).source == tmp_path / "expand_system.txt"
    # prompts the user did not override come from the bundle
    assert load_prompt("qa_system", tmp_path).source.parent == bundled_prompts_dir()


def test_override_is_reread_after_change(tmp_path: Path):
    path = tmp_path / "qa_system.txt"
    path.write_text("one", encoding="utf-8")
    assert load_prompt("qa_system", tmp_path).text == "one"
    path.write_text("two!", encoding="utf-8")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert load_prompt("qa_system", tmp_path).text == "two!"


def test_literal_dollar_and_braces(tmp_path: Path):
    (tmp_path / "qa_system.txt").write_text('Costs $$5. JSON: {"a": [$x]}', encoding="utf-8")
    assert render_prompt("qa_system", tmp_path, x=1) == 'Costs $5. JSON: {"a": [1]}'


def test_malformed_placeholder(tmp_path: Path):
    (tmp_path / "qa_system.txt").write_text("Price: $ 5", encoding="utf-8")
    with pytest.raises(ConfigError, match="malformed placeholder"):
        render_prompt("qa_system", tmp_path)


@pytest.mark.parametrize("name", ["../etc/passwd", "Expand", "", "a/b"])
def test_invalid_names(name):
    with pytest.raises(ConfigError, match="Invalid prompt name"):
        load_prompt(name)


def test_unknown_prompt_lists_the_bundled_ones():
    with pytest.raises(ConfigError, match="expand_system"):
        load_prompt("no_such_prompt")


def test_llm_uses_prompts_dir_override(make_llm, fake_llm, tmp_path: Path):
    from img_agent.agent.expand import expand_query

    (tmp_path / "expand_system.txt").write_text("OVERRIDDEN SYSTEM PROMPT ($n)", encoding="utf-8")
    llm = make_llm(prompts_dir=tmp_path)
    fake_llm.reply('["a cat"]')
    expand_query(llm, "cat", 1)
    assert fake_llm.requests[0]["messages"][0]["content"] == "OVERRIDDEN SYSTEM PROMPT (1)"
