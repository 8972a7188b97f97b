"""The demo page in headless Chromium against a real server: upload a real digit, see its codes and
reconstruction, edit one code and see the image change. A screenshot is kept in test-artifacts/."""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, sync_playwright

from harness.server import ServerProcess
from tests.conftest import shared_data_dir
from tests.service.conftest import ROOT, png_bytes

pytestmark = pytest.mark.slow  # a browser


ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Headless, and quiet on a closed network (no background fetches to Google's hosts).
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "the demo test needs Debian's chromium (apt-get install chromium)"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser: Browser, server: ServerProcess) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 1000})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
    page.goto(server.url + "/")
    yield page
    context.close()
    assert not problems, problems


def recon_pixels(page: Page) -> list[int]:
    """The reconstruction as the browser shows it, read back through a canvas."""
    return page.evaluate("""() => {
        const img = document.getElementById("recon");
        const c = document.createElement("canvas"); c.width = img.naturalWidth; c.height = img.naturalHeight;
        const ctx = c.getContext("2d"); ctx.drawImage(img, 0, 0);
        return Array.from(ctx.getImageData(0, 0, c.width, c.height).data.filter((_, i) => i % 4 === 0));
    }""")


def decoded_pixels(base_url: str, flat_codes: list[int]) -> list[int]:
    """The public API's PNG for a 7×7 grid, as grey levels in row order."""
    grid = [flat_codes[r * 7 : r * 7 + 7] for r in range(7)]
    png = httpx.post(base_url + "decode", json={"codes": grid}, headers={"accept": "image/png"}).content
    return np.asarray(Image.open(io.BytesIO(png)).convert("L")).ravel().tolist()


def most_visible_edit(base_url: str, flat_codes: list[int], position: int) -> int:
    """Of a few replacement codes for one cell, the one whose decode differs most from the original:
    the test must see a change, whatever the trained codebook happens to hold."""
    original = np.array(decoded_pixels(base_url, flat_codes))
    candidates = [(flat_codes[position] + step) % 512 for step in range(37, 512, 61)]

    def change(code: int) -> int:
        edited = [*flat_codes[:position], code, *flat_codes[position + 1 :]]
        return int((abs(np.array(decoded_pixels(base_url, edited)) - original) > 8).sum())

    return max(candidates, key=change)


def test_upload_see_codes_edit_one_and_see_the_change(page: Page, digits: np.ndarray) -> None:
    page.wait_for_function("document.querySelectorAll('#model option').length === 5")
    assert page.input_value("#model") == "mnist"
    page.set_input_files("#file", files=[{"name": "seven.png", "mimeType": "image/png",
                                          "buffer": png_bytes(digits[0])}])
    page.wait_for_function("document.getElementById('recon').dataset.version === '1'")
    page.wait_for_function("document.getElementById('sizes').textContent.includes('entropy-coded')")
    cells = page.locator("#grid td")
    assert cells.count() == 49
    codes = [int(t) for t in cells.all_inner_texts()]
    served = httpx.post(page.url + "encode", content=png_bytes(digits[0]), headers={"content-type": "image/png"})
    assert codes == [c for row in served.json()["codes"][0] for c in row]  # the page shows what the API returns
    before = recon_pixels(page)
    assert len(before) == 28 * 28 and max(before) > 200  # a bright digit on black

    new_code = most_visible_edit(page.url, codes, position=24)
    centre = cells.nth(24)
    centre.click()
    centre.locator("input").fill(str(new_code))
    centre.locator("input").press("Enter")
    page.wait_for_function("document.getElementById('recon').dataset.version === '2'")
    assert int(cells.nth(24).inner_text()) == new_code
    after = recon_pixels(page)
    edited = [*codes[:24], new_code, *codes[25:]]
    assert after == decoded_pixels(page.url, edited), "the page shows another image than /decode returns"
    changed = sum(abs(a - b) > 8 for a, b in zip(before, after, strict=True))
    assert changed > 10, "editing a code did not change the reconstruction"

    page.wait_for_function("document.querySelectorAll('#batch figure').length === 8")
    assert page.locator("#batch img").count() == 16
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo-page.png"), full_page=True)


def test_switching_models_and_drawing(page: Page) -> None:
    page.wait_for_function("document.querySelectorAll('#model option').length === 5")
    canvas = page.locator("#draw").bounding_box()
    assert canvas is not None
    x, y = canvas["x"], canvas["y"]
    page.mouse.move(x + 140, y + 40)
    page.mouse.down()
    page.mouse.move(x + 140, y + 240, steps=12)  # a "1"
    page.mouse.up()
    page.wait_for_function("document.getElementById('recon').dataset.version === '1'")
    assert page.locator("#grid td").count() == 49
    page.select_option("#model", "fashion-mnist")
    page.wait_for_function("document.getElementById('model-info').textContent.includes('PSNR')")
    page.wait_for_function("document.getElementById('recon').dataset.version === '2'")


def test_the_colour_model_shows_a_colour_reconstruction_of_a_photo(page: Page) -> None:
    page.wait_for_function("document.querySelectorAll('#model option').length === 5")
    page.select_option("#model", "tiny-imagenet")
    page.wait_for_function("document.getElementById('model-info').textContent.startsWith('64×64')")
    photo = (shared_data_dir() / "kodak" / "kodim23.png").read_bytes()
    page.set_input_files("#file", files=[{"name": "parrots.png", "mimeType": "image/png", "buffer": photo}])
    page.wait_for_function("document.getElementById('recon').dataset.version === '1'")
    assert page.locator("#grid td").count() == 16 * 16  # resized to the model's 64×64: a 16×16 grid
    rgb = page.evaluate("""() => {
        const img = document.getElementById("recon");
        const c = document.createElement("canvas"); c.width = img.naturalWidth; c.height = img.naturalHeight;
        const ctx = c.getContext("2d"); ctx.drawImage(img, 0, 0);
        return [c.width, c.height, Array.from(ctx.getImageData(0, 0, c.width, c.height).data)];
    }""")
    width, height, data = rgb
    pixels = np.array(data, np.int32).reshape(height, width, 4)
    assert (width, height) == (64, 64)
    assert np.abs(pixels[..., 0] - pixels[..., 1]).mean() > 10  # colour, not grey: the parrots are red and green
    page.wait_for_function("document.querySelectorAll('#batch figure').length === 8")


def test_sampling_new_digits_of_a_chosen_class(page: Page) -> None:
    page.wait_for_function("document.querySelectorAll('#sample-class option').length === 11")  # any, 0 … 9
    defaults = httpx.get(page.url + "v1/models/mnist").json()["prior"]["sampling"]
    assert float(page.input_value("#guidance")) == defaults["guidance"]  # the model's default, preselected
    assert float(page.input_value("#temperature")) == defaults["temperature"]
    page.select_option("#sample-class", "3")
    page.fill("#temperature", "0.8")
    page.fill("#guidance", "1.5")
    page.click("#sample")
    page.wait_for_function("document.querySelectorAll('#samples img').length === 8")
    seed = int(page.get_attribute("#samples", "data-seed") or "-1")
    again = httpx.post(page.url + "v1/models/mnist/sample",
                       json={"count": 8, "class": 3, "temperature": 0.8, "guidance": 1.5, "seed": seed}).json()
    shown = page.eval_on_selector_all("#samples img", "imgs => imgs.map(i => i.src.split(',')[1])")
    assert len(shown) == 8
    for mine, theirs in zip(shown, again["images"], strict=True):  # what the API draws for that seed; the
        # decoder may run these grids batched with the page's other requests: the last bit may round apart
        a, b = (np.asarray(Image.open(io.BytesIO(base64.b64decode(x))), np.int16) for x in (mine, theirs))
        assert np.abs(a - b).max() <= 1
    page.locator("#samples img").nth(2).click()  # its codes go to the editor
    page.wait_for_function("document.getElementById('recon').dataset.version === '1'")
    cells = [int(t) for t in page.locator("#grid td").all_inner_texts()]
    assert cells == [c for row in again["codes"][2] for c in row]
    page.select_option("#model", "tiny-imagenet")
    page.wait_for_function("document.getElementById('sample').disabled === true")
    assert "no prior" in page.inner_text("#sample-note")


def test_the_empty_page_shows_no_broken_images(page: Page) -> None:
    page.wait_for_function("document.querySelectorAll('#batch figure').length === 8")
    assert page.is_hidden("#pair") and page.is_visible("#empty")
    broken = page.evaluate("""() => Array.from(document.images)
        .filter((img) => img.offsetParent !== null && !(img.complete && img.naturalWidth > 0))
        .map((img) => img.id || img.alt)""")
    assert broken == []
    page.click("#sample")
    page.wait_for_function("document.querySelectorAll('#samples img').length === 8")
    page.locator("#samples img").nth(0).click()  # a sample's codes: its own picture stands as the original
    page.wait_for_function("document.getElementById('recon').dataset.version === '1'")
    assert page.is_visible("#pair") and page.is_hidden("#empty")
    assert page.evaluate("document.getElementById('original').naturalWidth") > 0


def test_demo_can_be_turned_off(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server(demo="off")
    server.wait("/livez")
    assert httpx.get(server.url + "/").status_code == 404
    assert httpx.get(server.url + "/demo/app.js").status_code == 404


def test_a_residual_model_encodes_with_fewer_stages_and_shows_each(page: Page) -> None:
    page.wait_for_function("document.querySelectorAll('#model option').length === 5")
    page.select_option("#model", "tiny-imagenet-rvq")
    page.wait_for_function("!document.getElementById('stage-controls').hidden")
    assert page.eval_on_selector_all("#stages option", "os => os.map(o => o.value)") == ["1", "2", "3", "4"]
    assert page.input_value("#stages") == "4"  # every stage by default
    photo = (shared_data_dir() / "kodak" / "kodim23.png").read_bytes()
    page.set_input_files("#file", files=[{"name": "parrots.png", "mimeType": "image/png", "buffer": photo}])
    page.wait_for_function("document.getElementById('recon').dataset.version === '1'")
    assert page.locator("#grid td").count() == 16 * 16
    page.select_option("#stages", "2")  # re-encodes with the first two stages
    page.wait_for_function("document.getElementById('recon').dataset.version === '2'")
    assert page.eval_on_selector_all("#stage-view option", "os => os.map(o => o.value)") == ["1", "2"]
    page.select_option("#stage-view", "2")  # the second stage's codes in the grid
    assert page.locator("#grid td").count() == 16 * 16
    page.wait_for_function("document.querySelectorAll('#batch figure').length === 8")  # Tiny ImageNet photos
    page.select_option("#model", "mnist")  # a single-stage model: no stage controls
    page.wait_for_function("document.getElementById('stage-controls').hidden")
