"""Data Docs open offline: every script, stylesheet, font and image a page of the site loads is a
file inside the site folder, and nothing is loaded from the network."""

import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

from keel.core.config import load_dataset_config
from keel.modalities import ingest
from keel.validation.checks import validate_version
from keel.validation.datadocs_offline import ASSETS, VENDOR, make_self_contained

NETWORK = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)  # http://, https://, //, file://...
CSS_URL = re.compile(r"""url\(\s*["']?([^"')]+?)["']?\s*\)""")


class Loads(HTMLParser):
    """The addresses a page loads: <script src>, <link href>, <img src>, and url() in styles."""

    SOURCE = {"script": "src", "link": "href", "img": "src"}

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.addresses: list[str] = []
        self.in_style = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get(self.SOURCE.get(tag, "")):
            self.addresses.append(attrs[self.SOURCE[tag]])
        self.addresses += CSS_URL.findall(attrs.get("style") or "")
        self.in_style = tag == "style"

    def handle_endtag(self, tag):
        self.in_style = False

    def handle_data(self, data):
        if self.in_style:
            self.addresses += CSS_URL.findall(data)


def missing_or_outside(site: Path, referrer: Path, addresses: list[str]) -> list[str]:
    """The relative `addresses` (from `referrer`) that name no file inside `site`."""
    bad = []
    for address in addresses:
        if address.startswith(("data:", "#")):
            continue
        target = (referrer.parent / unquote(urlsplit(address).path)).resolve()
        if not (target.is_file() and target.is_relative_to(site.resolve())):
            bad.append(f"{referrer.relative_to(site)}: {address}")
    return bad


def test_data_docs_load_nothing_from_the_network(tmp_path, small_config):
    config = load_dataset_config(small_config)
    version = ingest(config, root=tmp_path / "v").version
    site = tmp_path / "docs"
    assert validate_version(version, config, site).success
    pages = sorted(site.rglob("*.html"))
    results = sorted(p for p in pages if p.relative_to(site).parts[0] == "validations")
    assert results, [str(p.relative_to(site)) for p in pages]
    loads = {page: Loads(page.read_text(encoding="utf-8")).addresses for page in pages}
    assert all(loads.values())  # the parser saw the pages' assets at all
    online = [f"{p.relative_to(site)}: {a}" for p, found in loads.items() for a in found if NETWORK.match(a)]
    assert online == []
    assert [bad for p, found in loads.items() for bad in missing_or_outside(site, p, found)] == []
    for sheet in (site / VENDOR).rglob("*.css"):  # Font Awesome's webfonts, relative to its stylesheet
        found = CSS_URL.findall(sheet.read_text(encoding="utf-8"))
        assert [a for a in found if NETWORK.match(a)] == [] and missing_or_outside(site, sheet, found) == []
    index = (site / "index.html").read_text(encoding="utf-8")
    for page in results:  # the index still leads to every validation result
        assert page.relative_to(site).as_posix() in index
    before = {p: p.read_bytes() for p in pages}
    assert make_self_contained(site) == []  # a second pass (a rebuilt site) changes nothing
    assert {p: p.read_bytes() for p in pages} == before


def test_vendored_files_are_the_ones_the_readme_lists():
    """README.md records the sha256 of every vendored file (their provenance): no file is
    missing from it, none differs from it."""
    readme = (ASSETS / "README.md").read_text(encoding="utf-8")
    listed = dict(re.findall(r"^\| `([^`]+)` \| \d+ \| ([0-9a-f]{64}) \|$", readme, re.M))
    present = {p.relative_to(ASSETS).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in ASSETS.rglob("*") if p.is_file() and p.name != "README.md"}
    assert listed == present
