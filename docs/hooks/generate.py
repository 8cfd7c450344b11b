"""The reference pages' generated blocks, and the MkDocs hook (``hooks:`` in mkdocs.yml) that checks them.

A page holds a block between ``<!-- generated: NAME -->`` and ``<!-- end generated -->`` whose text is what
the code says: the config keys (``fedvsr.config.config_table()``), the shipped sweep specs (what ``fedvsr
sweep --list`` prints, with each spec's search, size and scheduler) and the model families with their
parameter counts (built on the meta device: shapes only, a few seconds for every preset; FLOPs are not
counted here, that takes ``fedvsr models`` half a minute). The blocks are committed, so the pages read on
GitHub too; ``mkdocs build`` stops on a block that differs from the code (stale) or names no generator, and
so does ``tests/test_docs.py``. After changing a config key, a spec or a model, rewrite the blocks with

    python docs/hooks/generate.py

The hook also lets pages show the figures of ``benchmarks/results/``: a page writes the link as it reads on
GitHub (``../benchmarks/results/...png`` from ``docs/``) and the site gets a copy of those images.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
BLOCK = re.compile(r"^<!-- generated: ([a-z-]+) -->\n(.*?)^<!-- end generated -->$", re.MULTILINE | re.DOTALL)
RESULTS_LINK = re.compile(r"\]\(((?:\.\./)+)benchmarks/results/")


class GenerateError(ValueError):
    """A page names a generated block that does not exist."""


def config_keys() -> str:
    from fedvsr.config import config_table

    return config_table()


def _values(p) -> str:
    if p.kind in ("grid", "choice"):
        return "{" + ", ".join(str(list(v)) if isinstance(v, tuple) else str(v) for v in p.values) + "}"
    if p.kind == "value":
        return str(p.values[0])
    if p.kind == "affine":
        factor = "" if abs(p.scale) == 1 else f"{abs(p.scale):g} x "
        return f"= {p.offset:g} {'+' if p.scale >= 0 else '−'} {factor}{p.source}"
    return f"{p.kind} [{p.low:g}, {p.high:g}]"


def sweep_specs() -> str:
    from fedvsr.sweeps.spec import list_specs, load_spec

    lines = ["| spec | search | trials | scheduler | rounds | what it sweeps |", "|---|---|---|---|---|---|"]
    details = []
    for name, description in list_specs():
        spec = load_spec(name)
        swept = "; ".join(
            f"`{', '.join(p.keys)}` {_values(p)}"
            + (
                " (only when " + ", ".join(f"{k} = {' or '.join(map(str, v))}" for k, v in p.when) + ")"
                if p.when
                else ""
            )
            for p in spec.params
        )
        lines.append(f"| `{name}` | {spec.search} | {spec.trials} | {spec.scheduler} | {spec.max_rounds} | {swept} |")
        details.append(f"**`{name}`**: {' '.join(description.split())}")
    return "\n".join(lines) + "\n\n" + "\n\n".join(details) + "\n"


def model_sizes() -> str:
    import torch

    from fedvsr.models.registry import build_model, count_params, get_entry, model_names

    lines = ["| model | preset | params | input frames | output | scale |", "|---|---|--:|--:|---|--:|"]
    for name in model_names():
        for preset in get_entry(name).presets:
            with torch.device("meta"):
                m = build_model(name, preset)
            lines.append(
                f"| `{name}` | `{preset}` | {count_params(m):,} | {m.num_frames} "
                f"| {'centre frame' if m.center_output else 'every frame'} | x{m.scale} |"
            )
    return "\n".join(lines) + "\n"


GENERATORS = {"config-keys": config_keys, "sweep-specs": sweep_specs, "model-sizes": model_sizes}


def _generate(name: str) -> str:
    if name not in GENERATORS:
        raise GenerateError(f"unknown generated block {name!r} (known: {', '.join(sorted(GENERATORS))})")
    return GENERATORS[name]()


def render(markdown: str) -> str:
    """The page with every generated block rewritten from the code."""
    return BLOCK.sub(
        lambda m: f"<!-- generated: {m.group(1)} -->\n{_generate(m.group(1))}<!-- end generated -->", markdown
    )


def stale_blocks(markdown: str) -> list[str]:
    """The names of the page's blocks whose text is not what the code generates today."""
    return [m.group(1) for m in BLOCK.finditer(markdown) if m.group(2) != _generate(m.group(1))]


def pages_with_blocks() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if BLOCK.search(p.read_text(encoding="utf-8")))


def site_result_links(markdown: str, src_uri: str) -> str:
    """``../benchmarks/results/X`` (the path from docs/ on GitHub) -> the copy the site serves."""
    depth = src_uri.count("/")

    def link(m: re.Match) -> str:
        if len(m.group(1)) // 3 != depth + 1:
            return m.group(0)
        return "](" + "../" * depth + "results/"

    return RESULTS_LINK.sub(link, markdown)


# ----------------------------------------------------------------------------------------- MkDocs events


def _this_checkout() -> None:
    """The pages describe this checkout, whatever fedvsr the environment has installed."""
    if str(ROOT) not in sys.path[:1]:
        sys.path.insert(0, str(ROOT))


def on_config(config):
    _this_checkout()  # here, not at import: MkDocs pops sys.path[0] after importing a hook
    return config


def on_files(files, config):
    from mkdocs.structure.files import File

    for png in sorted((ROOT / "benchmarks").glob("results/**/*.png")):
        files.append(
            File(
                png.relative_to(ROOT / "benchmarks").as_posix(),
                str(ROOT / "benchmarks"),
                config["site_dir"],
                config["use_directory_urls"],
            )
        )
    return files


def on_page_markdown(markdown, page, config, files):
    from mkdocs.exceptions import PluginError

    try:
        stale = stale_blocks(markdown)
    except GenerateError as err:
        raise PluginError(f"{page.file.src_uri}: {err}") from None
    if stale:
        raise PluginError(
            f"docs/{page.file.src_uri}: the generated block(s) {', '.join(stale)} differ from what the "
            "code gives today; rewrite them with: python docs/hooks/generate.py"
        )
    return site_result_links(markdown, page.file.src_uri)


def main() -> None:
    for path in sorted(DOCS.rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        new = render(text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"rewrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    _this_checkout()
    main()
