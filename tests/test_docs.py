"""The documentation a user follows stays inside the repository and matches what cites it."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_markdown_links_resolve_inside_the_repository():
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", md.read_text()):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path = (md.parent / target).resolve()
            assert path.is_relative_to(ROOT), f"{md.name}: link {target} leaves the repository"
            assert path.exists(), f"{md.name}: link {target} does not exist"


def test_cited_methods_sections_exist():
    headings = set(re.findall(r"^## (\d+)\.", (ROOT / "docs" / "methods.md").read_text(), re.M))
    cited = set()
    for f in [*(ROOT / "src").rglob("*.py"), *(ROOT / "recipes").glob("*.yaml"), *(ROOT / "docs").glob("*.md")]:
        cited |= set(re.findall(r"methods\.md\)?\s+section\s+(\d+)", f.read_text()))
    assert cited and cited <= headings, f"sections cited {sorted(cited)}, present {sorted(headings)}"


def test_readme_says_how_to_reach_the_command_and_the_data():
    text = (ROOT / "README.md").read_text()
    assert "source .venv/bin/activate" in text and ".venv/bin/semifer" in text
    for source in ("Kaggle", "microsoft/FERPlus", "RAF-DB", "AffectNet", "EmotiW"):
        assert source in text, source
