"""The HTML report in a real headless browser: it renders, and the figures in it match metrics.jsonl."""
import json
import re
import shutil
import subprocess

import pytest

from conftest import require
from llm2llm.report import write_report
from llm2llm.store import RunStore

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_report_renders_in_chromium(tmp_path):
    require(CHROMIUM is not None, "chromium (make test installs Debian's where it can)")
    store = RunStore(tmp_path / "run")
    store.open({"x": 1})
    metrics = [{"iteration": i, "train_size": 20 + 4 * i, "seed_accuracy": 0.5 + 0.1 * i, "test_accuracy": 0.4 + 0.05 * i,
                "wrong": 6 - i, "calls": 6 - i, "accepted": 4, "rejected": 2 - i, "prompt_tokens": 300,
                "completion_tokens": 90} for i in range(3)]
    for m in metrics:
        store.write_metrics(m)
    for i in range(2):
        store.write_jsonl(i, "wrong.jsonl", [{"id": f"s{i}", "text": f"parent {i}", "label": "alarm"}])
        store.write_jsonl(i, "accepted.jsonl", [{"id": f"n{i}", "text": f"child {i}", "label": "alarm", "parent_id": f"s{i}"}])
        store.write_jsonl(i, "rejected.jsonl", [{"reason": "empty reply"}] * (2 - i))
    _, page = write_report(store.root)
    base = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "shot.png"
    subprocess.run([*base, f"--screenshot={shot}", "--window-size=1200,1800", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], check=True, capture_output=True, text=True,
                         timeout=120).stdout
    per_iteration = dom.split("<h2>Per iteration</h2>", 1)[1].split("</table>", 1)[0]  # the first table
    rows = re.findall(r"<tr>((?:<td>[^<]*</td>)+)</tr>", per_iteration)
    cells = [re.findall(r"<td>([^<]*)</td>", r) for r in rows]
    on_disk = [json.loads(x) for x in (store.root / "metrics.jsonl").read_text().splitlines()]
    assert len(cells) == len(on_disk) == 3 and all(len(row) >= 8 for row in cells), cells
    for row, m in zip(cells, on_disk):
        assert int(row[0]) == m["iteration"] and int(row[1]) == m["train_size"]
        assert float(row[2]) == pytest.approx(m["seed_accuracy"], abs=5e-4)
        assert float(row[3]) == pytest.approx(m["test_accuracy"], abs=5e-4)
        assert int(row[5]) == m["wrong"] and int(row[7]) == m["accepted"]
    assert dom.count("data:image/png;base64,") == 5 and "child 0" in dom
