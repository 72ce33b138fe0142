"""Open an HTML page in headless Chromium and report what loaded (stdlib only).

A copy of the page, beside it (so its relative links resolve), gets a script that runs
after the load event and writes its checks as JSON into the DOM; Chromium's
``--dump-dom`` prints the DOM, from which the JSON is read back. The page itself is
never changed.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

#: The checks, run in the page after it loaded: every image decoded, every in-page link's
#: target present, every resource fetched from a file:// address.
_CHECKS = """
<script>
window.addEventListener("load", function () {
  var images = Array.from(document.images).map(function (img) {
    return {src: img.getAttribute("src"), ok: img.complete && img.naturalWidth > 0};
  });
  var anchors = Array.from(document.querySelectorAll("a[href^='#']")).map(function (a) {
    var id = decodeURIComponent(a.getAttribute("href").slice(1));
    return {href: a.getAttribute("href"), ok: document.getElementById(id) !== null};
  });
  var fetched = performance.getEntriesByType("resource").map(function (r) { return r.name; });
  var out = document.createElement("pre");
  out.id = "xtl-browser-check";
  out.textContent = JSON.stringify({title: document.title, images: images, anchors: anchors,
                                    fetched: fetched});
  document.body.appendChild(out);
});
</script>
"""


def chromium() -> str | None:
    """The Chromium executable on PATH (``chromium`` or ``chromium-browser``), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def check_page(page: Path, timeout: float = 120.0) -> dict:
    """Load ``page`` in headless Chromium; the in-page checks as a dict.

    Returns
    -------
    dict
        ``title``, ``images`` ([{src, ok}]), ``anchors`` ([{href, ok}]) and ``fetched``
        (the URLs of every resource the page loaded).

    Raises
    ------
    RuntimeError
        No Chromium on PATH, or no check result in the dumped DOM (with its stderr).
    """
    exe = chromium()
    if exe is None:
        raise RuntimeError("no chromium on PATH: install it (Debian: apt-get install "
                           "chromium; make system-deps does)")
    page = Path(page).resolve()
    probe = page.with_name(f".check-{page.name}")
    probe.write_text(page.read_text().replace("</body>", _CHECKS + "</body>"))
    home = page.parent / ".chromium-home"  # its profile, away from the user's
    try:
        run = subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--user-data-dir={home}", "--virtual-time-budget=10000", "--dump-dom",
             probe.as_uri()], capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "HOME": str(home)})
    finally:
        probe.unlink(missing_ok=True)
        shutil.rmtree(home, ignore_errors=True)
    found = re.search(r"<pre id=\"xtl-browser-check\">(.*?)</pre>", run.stdout, re.S)
    if found is None:
        raise RuntimeError(f"chromium printed no check result (exit {run.returncode}): "
                           f"{run.stderr[-2000:]}")
    import html

    return json.loads(html.unescape(found.group(1)))
