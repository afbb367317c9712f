"""`report.html` with hostile ids, as headless Chromium lays it out (issue 21, items 14 and 15).

A real run (scripted model) whose records are given a right-to-left override in one id and a
200 kB id without a space in another, both among the ids refinement fixed, plus a third method
so the paired table is drawn. The page is opened in Chromium started with no network
(`browser.offline_page`): the badge after the overridden id still reads left to right, the paired
table and the whole page fit the viewport, and the page requested nothing but itself.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from browser import NO_CHROMIUM, VIEWPORT, OfflinePage, chromium_executable, offline_page
from test_attack_report import RLO, hostile_ids_run

from zoom_refine.evals.report import write_report

CHROMIUM = chromium_executable()
if CHROMIUM is None:
    pytest.skip(NO_CHROMIUM, allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is needed: pip install playwright"
)

LONG_ID_CHARS = 200_000


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """report.html of the hostile run, with the zoom-refine records also as an `agent` method
    (three methods: the paired table, not the sentence)."""
    run, ids = hostile_ids_run(tmp_path_factory.mktemp("hostile-report"))
    path = run / "predictions.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    agent = [{**r, "method": "agent"} for r in records if r["method"] == "zoom-refine"]
    path.write_text("".join(json.dumps(record) + "\n" for record in records + agent))
    _, _, page_path = write_report([run])
    assert len(ids["5"]) == LONG_ID_CHARS
    return page_path, ids


@pytest.fixture(scope="module")
def opened(report: tuple[Path, dict[str, str]]) -> Iterator[OfflinePage]:
    assert CHROMIUM is not None
    with offline_page(sync_api, CHROMIUM) as shown:
        shown.page.goto(report[0].as_uri())
        shown.page.wait_for_load_state("load")
        yield shown


GLYPH_LEFT = """(args) => {
  const [root, needles] = args;
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  const found = {};
  let node;
  while ((node = walker.nextNode())) {
    for (const needle of needles) {
      const at = node.data.indexOf(needle);
      if (at >= 0 && !(needle in found)) {
        const range = document.createRange();
        range.setStart(node, at);
        range.setEnd(node, at + needle.length);
        found[needle] = range.getBoundingClientRect().left;
      }
    }
  }
  return found;
}"""
"""Screen x (CSS px) of the first occurrence of each needle's text inside `root`."""


@pytest.mark.reliability(
    "Report",
    "a sample id holding U+202E (right-to-left override), in Chromium",
    "the id is isolated (<bdi>): the badge after it reads 'zoom-refine: A → B' left to right",
)
def test_an_override_in_an_id_does_not_reverse_the_rest_of_its_line(
    opened: OfflinePage, report: tuple[Path, dict[str, str]]
) -> None:
    sample_id = report[1]["3"]
    assert RLO in sample_id
    card = opened.page.locator("article.sample").filter(has_text="-evil").first
    badge = card.locator("h3 .badge").first
    assert badge.inner_text().replace(RLO, "") == "zoom-refine: A → B"
    left: dict[str, float] = badge.evaluate(
        "(root, needles) => (" + GLYPH_LEFT + ")([root, needles])", ["zoom", "→", "B"]
    )
    assert left["zoom"] < left["→"] < left["B"], left  # reversed, "B" would come first
    heading = card.locator("h3").first
    fields: dict[str, float] = heading.evaluate(
        "(root, needles) => (" + GLYPH_LEFT + ")([root, needles])", ["sample", "category"]
    )
    assert fields["sample"] < fields["category"], fields  # the fields follow the id, rightwards


@pytest.mark.reliability(
    "Report",
    "a 200 kB sample id without a space, among the paired table's fixed ids, in Chromium",
    "the page and the paired table fit the 1280-px viewport (long ids are cut in id lists and "
    "on their card's one-line heading)",
)
def test_a_200_kb_id_keeps_the_paired_table_and_the_page_on_screen(opened: OfflinePage) -> None:
    page = opened.page
    width = VIEWPORT["width"]
    pairs = page.locator("table.pairs")
    assert pairs.count() == 1
    box = pairs.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, box
    cells = pairs.locator("th, td")
    rights = cells.evaluate_all("cells => cells.map(c => c.getBoundingClientRect().right)")
    assert max(rights) <= width, max(rights)
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width, scroll_width  # nothing pushes the page sideways
    long_id = page.locator("article.sample h3 bdi.sample-id").filter(has_text="xxxxxxxx").first
    id_box = long_id.bounding_box()
    assert id_box is not None and id_box["x"] + id_box["width"] <= width, id_box
    assert id_box["height"] < 40, id_box  # one line, cut with an ellipsis, not 2,000 lines


@pytest.mark.reliability(
    "Report",
    "report.html opened in Chromium started with no network (dead proxy, background "
    "networking, component updates and sync off, fresh profile)",
    "the page requests nothing but itself and data: URLs (Playwright's request events)",
)
def test_the_page_requests_nothing_but_itself(
    opened: OfflinePage, report: tuple[Path, dict[str, str]]
) -> None:
    own = report[0].as_uri()
    assert own in opened.requests
    assert opened.fetched_elsewhere(own) == []
    assert opened.errors == []


def test_the_request_log_would_see_a_fetch_and_the_network_refuses_it(
    opened: OfflinePage, tmp_path: Path
) -> None:
    """The harness is not blind: a page (in the same offline browser) that loads an outside
    image is seen doing so, and the image never arrives (no network)."""
    page_path = tmp_path / "leaky.html"
    page_path.write_text(
        '<!doctype html><img id="x" src="http://example.com/pixel.png">'
        '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">',
        encoding="utf-8",
    )
    before = len(opened.requests)
    page = opened.page.context.new_page()
    try:
        page.goto(page_path.as_uri())
        page.wait_for_load_state("load")
        loaded: Any = page.evaluate("document.getElementById('x').naturalWidth")
    finally:
        page.close()
    seen = OfflinePage(page, opened.requests[before:])
    assert seen.fetched_elsewhere(page_path.as_uri()) == ["http://example.com/pixel.png"]
    assert loaded == 0


@pytest.mark.reliability(
    "Report",
    "the test browser itself asked for a page on a live local HTTP server",
    "the request dies at the dead proxy (loopback not bypassed): the server sees nothing",
)
def test_the_browser_has_no_network_even_to_a_live_local_server(opened: OfflinePage) -> None:
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/page"
    opened.passthrough.append(url)
    page = opened.page.context.new_page()
    try:
        with pytest.raises(sync_api.Error, match="ERR_PROXY_CONNECTION_FAILED"):
            page.goto(url, timeout=15_000)
    finally:
        page.close()
        opened.passthrough.remove(url)
        server.shutdown()
        server.server_close()
    assert hits == []
