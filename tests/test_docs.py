"""The README and the documentation site: the generated reference blocks match the code, the README stays short
and its links resolve, CI runs the README's test command, and no shipped text cites a paper file the
repository does not hold. (`mkdocs build --strict` itself runs in .ci/run: it takes half a minute.)"""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _generate():
    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "hooks" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _generate()


def test_every_generated_reference_block_is_what_the_code_gives_today(monkeypatch):
    """After changing a config key, a shipped spec or a model preset: python docs/hooks/generate.py. (The build
    of the site checks the same; here the shipped specs' 177 points are not validated again as experiments, which
    tests/sweeps/test_spec.py does, and the table does not depend on.)"""
    import fedvsr.sweeps.spec

    monkeypatch.setattr(fedvsr.sweeps.spec, "_validate_experiments", lambda spec, err: None)
    pages = [p.relative_to(ROOT).as_posix() for p in generate.pages_with_blocks()]
    assert pages == ["docs/reference/config.md", "docs/reference/models.md", "docs/reference/sweep-specs.md"]
    stale = {page: generate.stale_blocks((ROOT / page).read_text(encoding="utf-8")) for page in pages}
    assert stale == {page: [] for page in pages}, "rewrite them with: python docs/hooks/generate.py"


def test_a_block_that_differs_from_the_code_is_stale_and_render_rewrites_it():
    page = (ROOT / "docs/reference/config.md").read_text(encoding="utf-8")
    edited = page.replace("| `fl.rounds` | `20` |", "| `fl.rounds` | `21` |")
    assert edited != page
    assert generate.stale_blocks(edited) == ["config-keys"]
    assert generate.render(edited) == page


def test_an_unknown_block_name_is_refused_with_the_known_ones():
    with pytest.raises(generate.GenerateError) as err:
        generate.render("<!-- generated: flops -->\n<!-- end generated -->\n")
    assert str(err.value) == "unknown generated block 'flops' (known: config-keys, model-sizes, sweep-specs)"


def test_the_model_sizes_page_counts_the_papers_presets():
    table = (ROOT / "docs/reference/models.md").read_text(encoding="utf-8")
    assert "| `efvsr` | `small` | 160,707 | 3 | centre frame | x4 |" in table
    assert "| `vsrgan` | `paper-rrdb` | 26,514,627 | 5 | every frame | x4 |" in table


def test_links_to_benchmark_figures_read_on_github_and_on_the_site():
    md = "![a](../benchmarks/results/paper_tables/psnr_random.png) and ![b](../../benchmarks/results/x/y.png)"
    assert generate.site_result_links(md, "benchmarks.md") == (
        "![a](results/paper_tables/psnr_random.png) and ![b](../../benchmarks/results/x/y.png)"
    )
    assert generate.site_result_links(md, "reference/models.md") == (
        "![a](../benchmarks/results/paper_tables/psnr_random.png) and ![b](../results/x/y.png)"
    )


def test_the_readme_is_at_most_250_lines_and_every_relative_link_in_it_exists():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    links = [t for t in re.findall(r"\]\(([^)\s]+)\)", readme) if "://" not in t]
    assert "docs/reference/config.md" in links
    assert [t for t in links if not (ROOT / t.split("#")[0]).exists()] == []


def test_ci_runs_the_readmes_test_command_and_its_extra_installs_the_site_builder():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    command = 'pip install torch==2.13.0 && pip install -e ".[test]" && python -m pytest -q'
    assert command in (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert command in ci and "mkdocs build --strict" in ci
    test_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    assert {"mkdocs>=1.6", "mkdocs-material>=9.5"} <= set(test_extra)


def test_no_shipped_text_cites_a_paper_file_the_repository_does_not_hold():
    """The papers are cited by title and arXiv id (docs/papers.md), not by papers/*.md."""
    cited = re.compile(r"papers/|\bfedvsr\.md\b|\bfca2\.md\b|\bfcvsr\.md\b|vsrgan\.txt")
    files = [
        *(ROOT / "fedvsr").rglob("*.py"),
        *(ROOT / "fedvsr").rglob("*.yaml"),
        ROOT / "README.md",
        *(ROOT / "docs").rglob("*.md"),
    ]
    assert [f.relative_to(ROOT).as_posix() for f in files if cited.search(f.read_text(encoding="utf-8"))] == []
