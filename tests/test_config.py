"""Where settings come from: flags > environment > settings files > defaults, never a working-directory .env."""

from __future__ import annotations

from pathlib import Path

import pytest

from img_agent.config import LLMSettings, Settings
from img_agent.locations import data_dir, default_data_dir


@pytest.fixture
def user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "user-config.env"
    monkeypatch.setenv("IMG_AGENT_CONFIG", str(path))
    monkeypatch.delenv("IMG_AGENT_DATA_DIR")
    return path


def test_a_dotenv_in_the_working_directory_is_never_read(tmp_path: Path, user_config: Path) -> None:
    (tmp_path / ".env").write_text("IMG_AGENT_TOPK=3\nLLM_BASE_URL=http://example.invalid/v1\n")
    assert Settings().topk == 20
    assert not LLMSettings().enabled


def test_precedence_flags_environment_env_file_user_config(tmp_path: Path, user_config: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    user_config.write_text("IMG_AGENT_TOPK=3\nIMG_AGENT_BATCH_SIZE=7\nLLM_MODEL=from-user-config\n")
    assert (Settings().topk, Settings().batch_size, LLMSettings().model) == (3, 7, "from-user-config")
    extra = tmp_path / "extra.env"
    extra.write_text("IMG_AGENT_TOPK=4\n")
    monkeypatch.setenv("IMG_AGENT_ENV_FILE", str(extra))
    assert (Settings().topk, Settings().batch_size) == (4, 7)  # the --env-file over the user config
    monkeypatch.setenv("IMG_AGENT_TOPK", "5")
    assert Settings().topk == 5  # the environment over both files
    assert Settings(topk=6).topk == 6  # a flag over everything


@pytest.mark.parametrize("where", ["default", "user config", "env file", "environment", "lower-case environment",
                                   "flag"])
def test_the_light_data_dir_lookup_agrees_with_settings(where: str, tmp_path: Path, user_config: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    flag = None
    if where == "user config":
        user_config.write_text(f"IMG_AGENT_DATA_DIR={tmp_path / 'a'}\n")
    elif where == "env file":
        user_config.write_text(f"IMG_AGENT_DATA_DIR={tmp_path / 'a'}\n")
        (tmp_path / "extra.env").write_text(f"img_agent_data_dir='{tmp_path / 'b'}'\n")
        monkeypatch.setenv("IMG_AGENT_ENV_FILE", str(tmp_path / "extra.env"))
    elif where == "environment":
        user_config.write_text(f"IMG_AGENT_DATA_DIR={tmp_path / 'a'}\n")
        monkeypatch.setenv("IMG_AGENT_DATA_DIR", str(tmp_path / "c"))
    elif where == "lower-case environment":
        monkeypatch.setenv("img_agent_data_dir", str(tmp_path / "d"))
    elif where == "flag":
        monkeypatch.setenv("IMG_AGENT_DATA_DIR", str(tmp_path / "c"))
        flag = tmp_path / "e"
    settings = Settings(data_dir=flag) if flag is not None else Settings()
    assert data_dir(flag) == settings.data_dir
    if where == "default":
        assert data_dir() == default_data_dir()
