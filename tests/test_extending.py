"""docs/extending.md: its worked examples run as written (every python block in order in one namespace, each
yaml block written to the file its first comment line names), so the page cannot go stale."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from fedvsr.fl.registry import strategy_names, unregister_strategy
from fedvsr.models.registry import model_names, unregister_model

PAGE = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block of the page, in order."""
    return re.findall(r"^```(\w+)\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def test_the_page_has_the_three_worked_examples():
    found = blocks(PAGE.read_text())
    assert [lang for lang, _ in found] == ["python"] * 6 + ["yaml", "python"]
    assert found[0][1].startswith("# fedvsr/fl/fedavgm.py") and found[4][1].startswith("# fedvsr/models/mini.py")


@pytest.fixture
def clean_registries():
    yield
    unregister_strategy("fedavgm")
    unregister_model("mini")
    assert "fedavgm" not in strategy_names() and "mini" not in model_names()


def test_the_worked_examples_run(tmp_path, monkeypatch, clean_registries):
    monkeypatch.chdir(tmp_path)
    module = types.ModuleType("extending_examples")  # a module, as the example files would be: dataclasses need it
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    for lang, code in blocks(PAGE.read_text()):
        if lang == "yaml":
            name = code.splitlines()[0].removeprefix("#").strip()
            (tmp_path / name).write_text(code)
        else:
            exec(compile(code, f"{PAGE.name}:{lang}", "exec"), namespace)
    # what the examples left behind, checked here too: the strategy, its round and the sweep
    assert namespace["strategy"].name == "fedavgm" and namespace["strategy"].params.server_momentum == 0.5
    assert [r.ok for r in namespace["results"]] == [True, True]
    assert len(namespace["spec"].grid_points()) == 2
