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


def test_a_cited_methods_section_summarises_the_paper_cited_with_it():
    """``(Song et al., arXiv 2410.17622; docs/methods.md section 1)``: section 1 is that paper's."""
    text = (ROOT / "docs" / "methods.md").read_text()
    sections = dict(re.findall(r"^## (\d+)\.(.*?)(?=^## |\Z)", text, re.M | re.S))
    pairs = set()
    for f in [ROOT / "README.md", *(ROOT / "src").rglob("*.py"), *(ROOT / "recipes").glob("*.yaml"),
              *(ROOT / "docs").glob("*.md")]:
        pairs |= set(re.findall(r"arXiv (\d{4}\.\d{4,5})[^;)]*;[^;]{0,60}?methods\.md\)?\s+section\s+(\d+)",
                                f.read_text()))
    assert len(pairs) >= 2, pairs  # SSFER and DTA+SNL are cited this way
    for arxiv, section in sorted(pairs):
        assert arxiv in sections[section], f"arXiv {arxiv} cited with methods.md section {section}, another paper's"


def test_readme_says_how_to_reach_the_command_and_the_data():
    text = (ROOT / "README.md").read_text()
    assert "source .venv/bin/activate" in text and ".venv/bin/semifer" in text
    for source in ("Kaggle", "microsoft/FERPlus", "RAF-DB", "AffectNet", "EmotiW"):
        assert source in text, source
