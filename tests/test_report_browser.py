"""The HTML report in a real headless Chromium: it renders, a click opens a card, no network."""

import re
import shutil

import pytest
from optuna.trial import TrialState
from tiny_models import QUICK, TinyResNet, tiny_data

import autoprune

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                   reason="Debian's chromium and chromium-driver are not installed "
                                          "(.ci/run installs them)")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    train, val = tiny_data()
    result = autoprune.search(TinyResNet(), options=QUICK, trials=6, train=train, val=val, finetune_steps=2,
                              output_dir=out, study_name="browser", verbose=False, threads=1,
                              constraints={"latency_ms": 1e3})
    return result


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run",
                 "--disable-sync", "--window-size=1400,2000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_report_embeds_everything_it_needs(report):
    page = report.report_path.read_text()
    assert "<script src=" not in page and "<link" not in page  # plotly.js is inlined
    assert len(page) < 10_000_000


@needs_browser
def test_plot_renders_one_point_per_trial_and_reference(report, browser):
    from selenium.webdriver.common.by import By

    browser.get(report.report_path.as_uri())
    points = browser.find_elements(By.CSS_SELECTOR, "#pareto-latency .scatterlayer .point")
    completed = [t for t in report.study.trials if t.state == TrialState.COMPLETE]
    references = [t for t in completed if t.user_attrs.get("reference")]
    assert len(points) == len(completed) + len(references) + 1  # + the unpruned star


@needs_browser
def test_clicking_a_front_point_opens_its_trial_card(report, browser):
    from selenium.webdriver.common.by import By

    browser.get(report.report_path.as_uri())
    # Plotly picks the clicked point by its own hover rules (the nearest within 20 px), and a
    # tiny model at chance accuracy puts dominated points that close to the front's: give the
    # page's handler the click event Plotly sends for the front trace's first point.
    browser.execute_script(
        "const fig = document.getElementById('pareto-latency');"
        "const trace = fig.data.findIndex(t => t.name.startsWith('front'));"
        "fig.emit('plotly_click', {points: [{curveNumber: trace, pointNumber: 0,"
        " customdata: fig.data[trace].customdata[0]}]});")
    card = browser.find_element(By.ID, "card")
    front = {c.trial for c in report.pareto}
    title = card.find_element(By.TAG_NAME, "h3").text
    number = int(title.removeprefix("Trial "))
    assert number in front
    assert "autoprune export browser" in card.text and f"--trial {number}" in card.text
    assert "speedup" in card.text and "criterion" in card.text
    bars = browser.find_elements(By.CSS_SELECTOR, "#layers .bars .point")
    assert len(bars) == len(report.study.user_attrs["base_channels"])


@needs_browser
def test_report_loads_nothing_from_the_network(report, browser):
    browser.get(report.report_path.as_uri())
    urls = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert [u for u in urls if u.startswith("http")] == []
    assert browser.execute_script("return typeof Plotly") == "object"


@needs_browser
def test_a_fully_fine_tuned_trial_card_shows_brief_and_full_accuracy(report, browser):
    number = report.pareto[0].trial
    report.finetune(number, epochs=1)
    page = report.report(report.report_path.with_name("after-finetune.html"))
    browser.get(page.as_uri())
    browser.execute_script(f"showCard({number})")
    card = browser.find_element("id", "card").text
    entry = report.finetuned[str(number)]
    shown = re.search(r"full fine-tune ([\d.]+) % after 1 epochs .*brief fine-tune ([\d.]+) %",
                      card)
    assert shown, card
    assert float(shown[1]) == pytest.approx(100 * entry["accuracy"], abs=0.006)
    assert float(shown[2]) == pytest.approx(100 * entry["brief_accuracy"], abs=0.006)
