"""The agent package's public names, and that its pure parts do not load the openai client."""

from __future__ import annotations

import subprocess
import sys

import img_agent.agent as agent


def test_every_exported_name_resolves():
    for name in agent.__all__:
        assert getattr(agent, name) is not None, name


def test_fusion_and_prompts_do_not_import_openai():
    code = "import sys, img_agent.agent.fuse, img_agent.agent.prompts; print('openai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"
