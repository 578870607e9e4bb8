"""FETCH: state merging of equivalent siblings (real MiniLM embeddings, scikit-learn clustering), and
FETCH's beam search on the toy world."""

from reasoner import Reasoner
from reasoner.core.types import Problem, Step, Tree
from reasoner.toy import generate_problems
from search.fetch import Merger


def siblings(texts, parent=None):
    tree = Tree(Problem("Compute 1+2."))
    parent = parent or tree.root
    return [parent.add_child(Step(t, token_ids=[1]), False) for t in texts]


def test_merges_identical_steps_keeping_the_best_scored():
    kids = siblings(["42*3=126", "42*3=126", "42+3=45", "42*3=126"])
    merged = Merger(0.0).merge(list(zip(kids, [0.2, 0.9, 0.5, 0.4])))
    assert [(n.step.text, s) for n, s in merged] == [("42*3=126", 0.9), ("42+3=45", 0.5)]
    assert kids[0].tree.stats.counters["merged_states"] == 2


def test_merge_distance_decides_what_is_equivalent():
    texts = ["The answer is \\boxed{161}", "The answer is \\boxed{162}", "42*3=126"]
    loose = Merger(0.15).merge([(k, 0.5) for k in siblings(texts)])
    strict = Merger(0.02).merge([(k, 0.5) for k in siblings(texts)])
    assert len(loose) == 2 and len(strict) == 3


def test_only_siblings_merge():
    tree = Tree(Problem("Compute 1+2."))
    a, b = tree.root.add_child(Step("1+2=3"), False), tree.root.add_child(Step("1+2=4"), False)
    same = siblings(["3*2=6"], a) + siblings(["3*2=6"], b)
    assert len(Merger(0.0).merge([(n, 0.5) for n in same])) == 2


def test_fetch_search_writes_fewer_steps_than_beam():
    problems = [Problem(p.question, str(p.answer)) for p in generate_problems(2, seed=14, difficulty="ops=4,digits=2")]
    tokens = {}
    for method in ("beam", "fetch"):
        r = Reasoner("toy-fetch", search={"method": method})
        solutions = r.solve_many(problems)
        tokens[method] = r.last_run.tokens()["draft"]
        if method == "fetch":
            assert sum(s.stats.counters.get("merged_states", 0) for s in solutions) > 0
    assert tokens["fetch"] < tokens["beam"]
