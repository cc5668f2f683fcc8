"""The learner's live page in a real browser (Debian's headless chromium):
a local cluster trains, the page is rendered twice a few seconds apart, the
learning curve it draws has grown between the two looks, and a screenshot
shows a drawn page (not a blank or an error page). Without chromium this
says it skipped (or fails under CI unless `chromium` is allowed to skip)."""

import re
import shutil
import subprocess
import time

from harness import REPO, skip

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=4000"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    skip("chromium", "no headless chromium installed (Debian's chromium package)")


def look(browser: str, url: str) -> int:
    """Renders the page (its scripts run, its first poll answered) and
    returns how many points its learning curve holds."""
    dom = subprocess.run([browser, *CHROMIUM_FLAGS, "--dump-dom", url], capture_output=True, text=True, timeout=60)
    m = re.search(r'<svg id="curve"[^>]*data-points="(\d+)"', dom.stdout)
    assert m, f"no curve in the rendered page:\n{dom.stdout[:2000]}\n{dom.stderr[-2000:]}"
    return int(m.group(1))


def test_the_live_page_draws_a_growing_curve(start_learner, tmp_path):
    from PIL import Image

    browser = chromium()
    config = (REPO / "configs" / "cartpole.toml").read_text()
    learner = start_learner(config, "--local-actors", "1", "--total-env-steps", "100000000")
    url = f"http://127.0.0.1:{learner.metrics_port}/"
    learner.wait_for(lambda m: m.get("flotilla_learner_updates_total", 0) >= 3 and m.get("flotilla_episodes_total", 0) > 0,
                     what="updates and finished episodes")
    first = look(browser, url)
    time.sleep(3)
    second = look(browser, url)
    assert 0 < first < second, (first, second)

    shot = tmp_path / "live.png"
    run = subprocess.run([browser, *CHROMIUM_FLAGS, "--window-size=1280,900", f"--screenshot={shot}", url],
                         capture_output=True, text=True, timeout=60)
    assert shot.exists(), run.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 900)
    # The header's dark band, the curve's blue and the page's light
    # background are all there.
    colours = {c for _, c in image.getcolors(maxcolors=1 << 20)}
    assert len(colours) > 50, len(colours)
    assert any(r < 40 and g < 50 and b < 80 for r, g, b in colours), "no dark header"
    assert any(b > 200 and r < 80 and 60 < g < 130 for r, g, b in colours), "no blue curve"
    assert "live page: " in learner.log()
