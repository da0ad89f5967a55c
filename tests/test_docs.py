"""The README is the front page and docs/ holds the depth: every link and picture in them resolves, the README
stays short, and its two set-up commands are the ones a new user and CI run."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DEMO_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt && .venv/bin/python app.py"
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target) and ![alt](target)


def without_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where brackets and parentheses are Python."""
    return re.sub(r"`[^`\n]*`", "", without_code_blocks(text))


def anchors(page: Path) -> set[str]:
    """The anchors GitHub and the Hub give the page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#{1,6} +(.+?) *$", without_code_blocks(page.read_text(encoding="utf-8")), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def relative_targets(page: Path) -> list[str]:
    targets = LINK.findall(prose(page.read_text(encoding="utf-8")))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def ci_test_command() -> str:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    marker = next(i for i, line in enumerate(lines) if line.startswith("# --- the README's test command"))
    return lines[marker + 1]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_image_resolves(page):
    missing = [t for t in relative_targets(page) if not (page.parent / t.split("#")[0]).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to files that do not exist: {missing}"
    to_headings = [t.split("#", 1) for t in relative_targets(page) if "#" in t and t.split("#")[0].endswith(".md")]
    lost = [f"{name}#{anchor}" for name, anchor in to_headings if anchor not in anchors(page.parent / name)]
    assert not lost, f"{page.relative_to(ROOT)} links to headings that do not exist: {lost}"


def test_anchors_are_the_ones_github_makes():
    page = ROOT / "docs" / "recipe.md"
    assert {"compared-with-the-literature", "how-the-recipe-was-chosen"} <= anchors(page)


def test_the_link_finder_sees_links_and_images_but_not_code():
    page = "[a](docs/x.md#y) ![b](p.png) [web](https://example.com) [here](#z)\n`[c](d)`\n```\n[e](f)\n```\n"
    assert LINK.findall(prose(page)) == ["docs/x.md#y", "p.png", "https://example.com", "#z"]


def test_every_docs_page_is_linked_from_the_readme():
    linked = {t.split("#")[0] for t in relative_targets(ROOT / "README.md")}
    unlinked = [p.name for p in PAGES[1:] if f"docs/{p.name}" not in linked]
    assert not unlinked, f"docs pages the README does not link to: {unlinked}"


def test_the_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move the depth to docs/"


def test_the_readme_set_up_commands_are_the_ones_users_and_ci_run():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    command = ci_test_command()
    assert command.startswith("apt-get") and command.endswith("-m pytest"), f".ci/run's command moved: {command}"
    blocks = re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)
    commands = [line for block in blocks for line in block.splitlines()]
    assert DEMO_COMMAND in commands, "the README's demo command, on a line of its own in a bash block"
    assert command in commands, "the README's test command must be .ci/run's, character for character"
    assert commands.index(DEMO_COMMAND) < commands.index(command), "the demo first, then the tests"
