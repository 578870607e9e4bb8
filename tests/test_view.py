"""``reasoner view`` and ``reasoner solve --html``, checked in a real headless Chromium (the distribution's package;
``.ci/run`` installs it): the page opened at ``#<problem id>`` draws that problem's tree with one node element per
node in results.jsonl, shows the rejected drafts of step speculation, and loads nothing from the network. One small
toy run (beam search under step speculation, so its trees branch and some drafts are rejected) serves every test."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from evals.runner import evaluate
from evals.view import tree_of, write_view
from reasoner.cli import main
from reasoner.recipe import Recipe

CHROMIUM = next(
    (p for p in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome") if p and shutil.which(p)),
    None,
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium found (apt-get install chromium; .ci/run installs it): the page is untested"
)
# requests Chromium makes for itself (component updates, sign-in, time), not for the page
OWN_SERVICES = re.compile(r"https?://([\w-]+\.)*(google\.com|googleapis\.com|gvt1\.com|gstatic\.com)[:/]")
# a beam search whose steps the draft writes and the target judges (a high threshold: some drafts are rejected)
RECIPE = [
    "search.method=beam",
    "search.n=4",
    "search.width=2",
    "verifier.type=likelihood",
    "verifier.model=target",
    "step_speculation.threshold=0.9",
    "scheduler.model_workers=thread",  # no model processes to start: each would import transformers again
]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("run")
    evaluate(Recipe.load("toy-likelihood", RECIPE), out, limit=3, progress=False)
    write_view(out)
    return out, [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def chromium(tmp_path: Path, url: str, *flags: str) -> tuple[str, str]:
    """The DOM after the page's script ran, and Chromium's verbose log (every URL request it made)."""
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--enable-logging=stderr",
            "--v=1",
            "--virtual-time-budget=5000",
            *flags,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.stdout, proc.stderr


class Dom(HTMLParser):
    """What the tests read of a dumped page: tree nodes, texts of elements by class, attributes by id."""

    def __init__(self, html: str):
        super().__init__()
        self.nodes: list[dict] = []  # the tree's node elements
        self.items: list[dict] = []  # the problem list's rows
        self.texts: dict[str, list[str]] = {}
        self.by_id: dict[str, dict] = {}
        self.body: dict = {}
        self.meta: list[dict] = []
        self.open: list[tuple[str, str | None]] = []  # (tag, class it collects text for)
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if "data-node" in a:
            self.nodes.append(a)
        if tag == "tr" and "data-i" in a:
            self.items.append(a)
        if "id" in a:
            self.by_id[a["id"]] = a
        if tag == "body":
            self.body = a
        if tag == "meta":
            self.meta.append(a)
        if tag in ("meta", "input", "br", "img", "link", "hr"):
            return
        classes = [c for c in a.get("class", "").split() if c in ("nt", "rw", "tsn")]
        wanted = "del" if tag == "del" else (classes[0] if classes else None)
        self.open.append((tag, wanted))
        if wanted:
            self.texts.setdefault(wanted, []).append("")

    def handle_endtag(self, tag):
        while self.open:
            if self.open.pop()[0] == tag:
                break

    def handle_data(self, data):
        for _, wanted in self.open:
            if wanted:
                self.texts[wanted][-1] += data


def page_requests(log: str) -> list[str]:
    """The URLs Chromium requested that were not its own services' (so: the page's)."""
    urls = re.findall(r"NotifyBeforeURLRequest: (\S+)", log)
    return [u for u in urls if not OWN_SERVICES.match(u) and not u.startswith(("file:", "data:"))]


def path(nodes: list[dict], leaf: int | None) -> list[str]:
    out = []
    while leaf is not None:
        out.append(nodes[leaf]["text"])
        leaf = nodes[leaf]["parent"]
    return out[::-1]


def test_rows_hold_the_whole_tree(run):
    _, rows = run
    for row in rows:
        nodes = row["tree"]["nodes"]
        assert all(n["parent"] is None or n["parent"] < i for i, n in enumerate(nodes))  # parents first
        assert path(nodes, row["tree"]["chosen"]) == [s["text"] for s in row["steps"]]
        for c, leaf in zip(row["candidates"], row["tree"]["candidates"]):
            assert path(nodes, leaf) == [s["text"] for s in c["steps"]]
        assert len(nodes) > len(row["steps"])  # the search tried more than the chosen path
    spec = [n for row in rows for n in row["tree"]["nodes"] if n.get("speculation")]
    assert all(set(n["phases"]) >= {"draft", "judge"} for n in spec)
    rewritten = [n for n in spec if not n["speculation"]["accepted"]]
    assert rewritten and all("rewrite" in n["phases"] and n["speculation"]["draft_tokens"] > 0 for n in rewritten)


def test_a_row_without_a_tree_gets_one_from_its_candidates(run):
    _, rows = run
    row = {k: v for k, v in rows[0].items() if k != "tree"}
    tree = tree_of(row)
    assert tree["rebuilt"]
    steps = [[s["text"] for s in c["steps"]] for c in row["candidates"]]
    prefixes = {tuple(texts[: i + 1]) for texts in steps for i in range(len(texts))}
    assert len(tree["nodes"]) == len(prefixes)
    assert tree["nodes"][tree["chosen"]]["text"] == row["steps"][-1]["text"]


def test_fetch_marks_the_merged_nodes():
    from reasoner.core.types import Problem, Step, Tree
    from search.fetch import Merger

    tree = Tree(Problem("Compute 1+2."))
    kids = [tree.root.add_child(Step(text), False) for text in ("1+2=3", "1+2=3", "1+2=4")]
    kept = Merger(distance=0).merge([(kids[0], 0.2), (kids[1], 0.9), (kids[2], 0.5)])
    assert [n for n, _ in kept] == [kids[1], kids[2]]
    assert kids[0].notes == {"merged_into": kids[1]}
    assert tree.to_dict()["nodes"][0]["notes"] == {"merged_into": 1}


@needs_chromium
def test_the_fragment_opens_that_problem_with_one_node_element_per_node(run, tmp_path):
    out, rows = run
    row = max(rows, key=lambda r: sum(not n.get("speculation", {}).get("accepted", True) for n in r["tree"]["nodes"]))
    html, _ = chromium(tmp_path, "--dump-dom", (out / "view.html").as_uri() + "#" + row["id"])
    dom = Dom(html)
    assert dom.body.get("data-problem") == row["id"]
    nodes = row["tree"]["nodes"]
    assert len(dom.nodes) == len(nodes)
    assert sorted(int(n["data-node"]) for n in dom.nodes) == list(range(len(nodes)))
    shown = Counter(dom.texts.get("nt", []) + dom.texts.get("rw", []))
    assert shown == Counter(n["text"] for n in nodes)
    chosen = dom.by_id[f"node-{row['tree']['chosen']}"]
    assert "chosen" in chosen["class"].split()
    # the rejected drafts, each beside the target's rewrite
    drafts = [n["speculation"]["draft"] for n in nodes if n.get("speculation") and not n["speculation"]["accepted"]]
    assert drafts, "the toy run rejected no draft: raise step_speculation.threshold in RECIPE"
    assert dom.texts["del"] == drafts
    assert len(dom.texts["tsn"]) == len(row["steps"])  # the chosen trajectory's timeline: one segment group a step


@needs_chromium
def test_the_page_loads_nothing_from_the_network(run, tmp_path):
    out, _ = run
    html = (out / "view.html").read_text()
    csp = next(m for m in Dom(html).meta if m.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in csp["content"]
    _, log = chromium(tmp_path, "--dump-dom", (out / "view.html").as_uri())
    assert "Content Security Policy" not in log  # it tried to load nothing the policy forbids
    assert page_requests(log) == []
    # without its policy too: the page itself asks for nothing, and a page that does is caught by this check
    bare = html.replace(csp["content"], "default-src *")
    (tmp_path / "bare.html").write_text(bare)
    _, log = chromium(tmp_path, "--dump-dom", (tmp_path / "bare.html").as_uri())
    assert page_requests(log) == []
    (tmp_path / "loads.html").write_text(bare.replace("<body>", '<body><img src="http://127.0.0.1:9/x.png">', 1))
    _, log = chromium(tmp_path, "--dump-dom", (tmp_path / "loads.html").as_uri())
    assert page_requests(log) == ["http://127.0.0.1:9/x.png"]


@needs_chromium
def test_the_run_page_lists_every_problem_with_the_summary_and_plot(run, tmp_path):
    out, rows = run
    html, _ = chromium(tmp_path, "--dump-dom", (out / "view.html").as_uri())
    dom = Dom(html)
    assert "plot" in dom.by_id  # accuracy vs compute, an inline SVG
    assert [i["title"] for i in dom.items] == [r["problem"] for r in rows]
    assert dom.nodes == []  # no tree is drawn before a problem is opened


@needs_chromium
def test_old_rows_error_rows_and_hostile_text_show_as_they_are(run, tmp_path):
    _, rows = run
    old = {k: v for k, v in rows[0].items() if k != "tree"} | {"id": "old/1 a&b"}  # written before trees were kept
    error = {"id": "err", "problem": "Compute 1+1.", "reference": "2", "answer": None, "correct": False}
    error["error"] = "prompt of 9000 tokens exceeds the context of 2048"
    hostile = rows[1] | {"problem": "</script><script>document.title='pwned'</script> /*SCRIPT*/ <!--PROBLEMS-->"}
    run_dir = tmp_path / "edge"
    run_dir.mkdir()
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (old, error, hostile)))
    page = write_view(run_dir)
    for fragment, problem, nodes in (
        ("#old%2F1%20a%26b", "old/1 a&b", len(tree_of(old)["nodes"])),
        ("#err", "err", 0),
        ("#%E0%A4%A", None, 0),  # not percent-encoding: no such problem, and no script error
    ):
        html, log = chromium(tmp_path, "--dump-dom", page.as_uri() + fragment)
        dom = Dom(html)
        assert dom.body.get("data-problem") == problem and len(dom.nodes) == nodes
        assert "Uncaught" not in log
        assert [i["title"] for i in dom.items] == [r["problem"] for r in (old, error, hostile)]
        assert "pwned" not in re.search(r"<title>(.*?)</title>", html).group(1)  # the text stayed text


@needs_chromium
def test_a_200_problem_beam16_run_opens_in_under_2_seconds(tmp_path):
    """Synthetic wide trees (16 children per level, 8 levels, ~130 nodes each), as a beam-16 run writes them."""
    rows = []
    for p in range(200):
        nodes, level = [], [None]
        for depth in range(8):
            parents = level if depth == 0 else level[:4]
            level = []
            for parent in parents:
                for k in range(16 // len(parents)):
                    level.append(len(nodes))
                    step = {"text": f"step {depth} of branch {k}: 12*3=36", "source": "draft", "tokens": 12}
                    nodes.append({"parent": parent, **step, "scores": {"prm": 0.5}, "seconds": 0.01, "terminal": False})
        tree = {"nodes": nodes, "chosen": level[0], "candidates": level}
        stats = {"roles": {"draft": {"generated_tokens": 12 * len(nodes), "prefill_tokens": 40}}, "counters": {}}
        rows.append({"id": f"big-{p}", "problem": "Compute 12*3.", "reference": "36", "answer": "36", "correct": True})
        rows[-1] |= {"candidates": [{"answer": "36", "score": 0.5, "steps": []}] * 16, "stats": stats, "tree": tree}
    run_dir = tmp_path / "big"
    run_dir.mkdir()
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = write_view(run_dir)
    for fragment in ("", "#big-150"):
        html, _ = chromium(tmp_path, "--dump-dom", page.as_uri() + fragment)
        dom = Dom(html)
        assert float(dom.body["data-ready-ms"]) < 2000, f"{page.as_uri()}{fragment} took {dom.body['data-ready-ms']} ms"
    assert len(dom.nodes) == len(rows[150]["tree"]["nodes"])


@needs_chromium
def test_solve_writes_the_same_page_for_one_problem(tmp_path, capsys):
    page = tmp_path / "solve.html"
    args = ["solve", "Compute 12+30.", "--html", str(page), "--json", "--set", "scheduler.model_workers=thread"]
    assert main(args) == 0
    solution = json.loads(capsys.readouterr().out)
    html, _ = chromium(tmp_path, "--dump-dom", page.as_uri())
    dom = Dom(html)
    assert dom.body.get("data-problem") == "problem"
    assert len(dom.nodes) == len(solution["tree"]["nodes"])


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing", "does not exist"),
        ("file", "is a file, not a run folder"),
        ("empty", "is not a run folder (no results.jsonl in it)"),
        ("out-under-a-file", "cannot write --out"),
        ("out-is-a-folder", "is a folder: give the HTML file to write"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run, tmp_path, capsys, case, expected):
    out, _ = run
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "empty").mkdir()
    args = {
        "missing": [str(tmp_path / "nowhere")],
        "file": [str(tmp_path / "a-file")],
        "empty": [str(tmp_path / "empty")],
        "out-under-a-file": [str(out), "--out", str(tmp_path / "a-file" / "view.html")],
        "out-is-a-folder": [str(out), "--out", str(tmp_path)],
    }[case]
    assert main(["view", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err, err


def test_solve_refuses_an_html_file_it_cannot_write_before_solving(tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    for bad in (tmp_path, tmp_path / "a-file" / "view.html"):
        assert main(["solve", "Compute 12+30.", "--html", str(bad), "--recipe", "no-such-recipe"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--html" in err, err  # the page's error, not the recipe's
