"""Data Docs that open without a network.

The pages Great Expectations 1.24.1 builds load Bootstrap, jQuery, Popper, Font Awesome,
bootstrap-datepicker, bootstrap-table, bootstrap-dark and Vega from CDNs, and the GX logo from
S3. Offline (many company networks, air-gapped machines) a page then shows two bare links and
none of its results. After GX builds a site, the copies vendored in datadocs_assets/ (exact
versions, licences and sha256 in its README.md) go into the site's static/keel-vendor/, and
every page is rewritten to load them by a path relative to where that page sits. The logo
becomes the one GX itself copies into every site (static/images/logo-long.png), and GX's own
relative links into static/ are recomputed too: its favicon link on validation result pages
climbs one folder too few (favicon.j2 counts 3 levels, the pages sit 4 deep).
"""

from __future__ import annotations

import html
import logging
import os
import re
import shutil
from pathlib import Path

from keel.core.atomic import atomic_path, replace_dir, temporary_beside

ASSETS = Path(__file__).parent / "datadocs_assets"
VENDOR = Path("static") / "keel-vendor"  # inside the site folder
GX_LOGO = Path("static") / "images" / "logo-long.png"  # GX copies its own static/ into every site

# Every address the templates of GX 1.24.1 load (great_expectations/render/view/templates), and
# the vendored file under datadocs_assets/ with the same content. The two filter-control
# stylesheets (.css on result pages, .min.css on the index) hold the same two rules.
CDN = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap/css/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap/js/bootstrap.min.js",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper.js/umd/popper.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "fontawesome-free/css/all.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
        "bootstrap-datepicker/css/bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
        "bootstrap-datepicker/js/bootstrap-datepicker.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
        "bootstrap-table/extensions/filter-control/bootstrap-table-filter-control.min.js",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
        "bootstrap-table-1.19.0/extensions/filter-control/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
        "bootstrap-table-1.19.0/extensions/filter-control/bootstrap-table-filter-control.min.css",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css":
        "bootstrap-dark/css/bootstrap-prefers-dark.min.css",
    "https://cdn.jsdelivr.net/npm/vega@5": "vega/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed/vega-embed.min.js",
}
# The navbar logo (an <img>, with a query string that reports the page view) and the dark-theme
# logo of GX's inline stylesheet.
GX_S3 = re.compile(r"https://great-expectations-web-assets\.s3\.us-east-2\.amazonaws\.com/[^\"'\s)]*")
GX_STATIC = re.compile(r"^(?:\./|(?:\.\./)*)(static/[^?#]+)")  # GX's relative links into the site's static/

TAG = re.compile(r"<(?:script|link|img)\b[^>]*>", re.IGNORECASE)
URL_ATTRIBUTE = re.compile(r"""(?<![\w-])(?:src|href)\s*=\s*(["'])(.*?)\1""", re.IGNORECASE | re.DOTALL)
# Integrity checks and CORS requests fail on file:// pages, and they guarded the CDN copy anyway
# (the vendored Popper and Bootstrap scripts match GX's sha384 values byte for byte).
SRI_ATTRIBUTE = re.compile(r"""\s+(?:integrity|crossorigin)(?![\w-])(?:\s*=\s*(["']).*?\1)?""",
                           re.IGNORECASE | re.DOTALL)
CSS_URL = re.compile(r"""url\(\s*(["']?)(https?:)?//[^"')]*\1\s*\)""", re.IGNORECASE)
EXTERNAL = re.compile(r"^\s*(?:https?:)?//", re.IGNORECASE)

log = logging.getLogger(__name__)


def build_offline_site(context, site_name: str, docs_dir: Path) -> list[str]:
    """Builds the Data Docs site `site_name` of the GX `context` into `docs_dir` and makes it
    self-contained. Returns the asset addresses still on the network (none with GX 1.24.1)."""
    context.build_data_docs(site_names=[site_name])
    return make_self_contained(Path(docs_dir))


def make_self_contained(docs_dir: Path) -> list[str]:
    """Copies the vendored assets into `docs_dir`/static/keel-vendor and points every page of
    the site at them. Returns the script, stylesheet and image addresses left on the network,
    and logs them: a newer GX may load something this module does not know yet."""
    docs_dir = Path(docs_dir)
    missing = [name for name in sorted(set(CDN.values())) if not (ASSETS / name).is_file()]
    if missing:  # an install without its package data: the CDN addresses at least work online
        log.warning("Keel's copies of the Data Docs assets are missing (%s): pages keep their CDNs", ", ".join(missing))
    else:
        copy_vendored(docs_dir / VENDOR)
    left: set[str] = set()
    for page in sorted(docs_dir.rglob("*.html")):
        if VENDOR in page.relative_to(docs_dir).parents:
            continue
        text = page.read_bytes().decode("utf-8", "surrogateescape")
        local = text if missing else offline_page(text, _relative(docs_dir, page))
        if local != text:
            _write_like(page, local)
        left.update(external_assets(local))
    if left:
        log.warning("Data Docs in %s still load from the network: %s", docs_dir, ", ".join(sorted(left)))
    return sorted(left)


def copy_vendored(final: Path) -> None:
    """Puts a fresh copy of datadocs_assets/ at `final` (replacing an older one whole)."""
    with temporary_beside(final, directory=True) as staged:
        for source in sorted(ASSETS.rglob("*")):
            if source.is_file() and "__pycache__" not in source.parts:
                target = staged / source.relative_to(ASSETS)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
        os.chmod(staged, 0o755)  # readable like the rest of the site (a temporary is private)
        replace_dir(staged, final)


def offline_page(text: str, root: str) -> str:
    """The HTML `text` of a page with each known CDN asset loaded from the vendored folder and
    GX's S3 logo (in tags and inline styles) from the site's own copy; `root` is the site
    folder relative to the page ("." for the index, "../../../.." for a validation result)."""
    logo = f"{root}/{GX_LOGO.as_posix()}"
    text = TAG.sub(lambda tag: _local_tag(tag.group(0), root), text)
    return CSS_URL.sub(lambda url: _local_css_url(url, logo), text)


def _local_tag(tag: str, root: str) -> str:
    found = URL_ATTRIBUTE.search(tag)
    if found is None:
        return tag
    address = html.unescape(found.group(2)).strip()
    local = _local_address(address, root)
    if local is None or local == address:
        return tag
    return SRI_ATTRIBUTE.sub("", tag[:found.start(2)] + local + tag[found.end(2):])


def _local_address(address: str, root: str) -> str | None:
    """Where in the site (relative to the page) the asset at `address` is, or None if not known."""
    if address in CDN:
        return f"{root}/{VENDOR.as_posix()}/{CDN[address]}"
    if GX_S3.match(address):
        return f"{root}/{GX_LOGO.as_posix()}"
    static = GX_STATIC.match(address)
    return f"{root}/{static.group(1)}" if static else None


def _local_css_url(url: re.Match, logo: str) -> str:
    inner = url.group(0)[4:-1].strip().strip("\"'")
    return f"url('{logo}')" if GX_S3.match(inner) else url.group(0)


def external_assets(text: str) -> list[str]:
    """The addresses of scripts, stylesheets and images (tags and inline CSS url()) that `text`
    loads from the network."""
    in_tags = [m.group(2) for tag in TAG.finditer(text) for m in URL_ATTRIBUTE.finditer(tag.group(0))]
    return [a for a in in_tags if EXTERNAL.match(html.unescape(a))] + [m.group(0) for m in CSS_URL.finditer(text)]


def _relative(target: Path, page: Path) -> str:
    return Path(os.path.relpath(target, page.parent)).as_posix()


def _write_like(page: Path, text: str) -> None:
    """Replaces `page` atomically, keeping its permissions."""
    mode = page.stat().st_mode & 0o777
    with atomic_path(page) as tmp:
        tmp.write_bytes(text.encode("utf-8", "surrogateescape"))
        os.chmod(tmp, mode)
