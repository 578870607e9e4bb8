"""ProbTree (search.method: probtree) on a scripted model: the question tree it builds, the answer each node keeps
(the most confident of closed-book, open-book and child aggregation), references, depth and malformed output."""

import pytest

import prompts
from reasoner import Reasoner
from reasoner.backends.common import Backend
from reasoner.core.lm import Generation, Output
from reasoner.core.stats import RoleStats
from reasoner.core.types import Problem, Tree
from reasoner.engine import StepBudget, StepEngine, StepSampling
from reasoner.recipe import Recipe, RecipeError
from reasoner.toy import generate_problems
from search.probtree import ProbTree, parse_decomposition

EOS = 0
QUESTION = "Compute (3+4)*5."
DECOMPOSED = "1. Compute 3+4.\n2. Compute #1*5."


class CharTokenizer:
    """One token per character; a chat template that puts the user turn between tags."""

    eos_token_id = EOS

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(i) for i in ids if i != EOS)

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"


def kind(user: str) -> tuple[str, str]:
    """Which ProbTree call a user turn is (by the default prompt set's wording), and its question."""
    question = user.rsplit("Question: ", 1)[-1]
    for marker, name in (
        ("Decompose the question", "decompose"),
        ("using the passages", "open_book"),
        ("answers to its sub-questions", "aggregate"),
    ):
        if marker in user:
            return name, question
    return "closed_book", user


class ScriptedLM(Backend):
    """Answers each call from ``script[(kind, question)] = (text, logprob of every token)``; anything unscripted
    gets an answer without ``\\boxed{}`` (no answer). Every call is recorded as ``(kind, question, user turn)``."""

    def __init__(self, script: dict):
        super().__init__()
        self.name = self.role = "target"
        self.tokenizer = CharTokenizer()
        self.script, self.calls = script, []

    def generate(self, prompts, params):
        rows = []
        for ids in prompts:
            user = self.decode(ids).split("<user>", 1)[1].split("</user>", 1)[0]
            call = kind(user)
            self.calls.append((*call, user))
            text, lp = self.script.get(call, ("I do not know.", -5.0))
            tokens = self.encode(text) + [EOS]
            rows.append([Generation(text, tokens, [lp] * len(tokens), "eos")] * params.n)
        return Output(rows, [RoleStats(calls=1, generated_tokens=len(r[0].token_ids)) for r in rows])

    def asked(self, name: str) -> list[str]:
        return [q for k, q, _ in self.calls if k == name]


def probtree_script(closed_root: tuple[str, float], aggregate_root: tuple[str, float], child_lp: float = -0.1):
    return {
        ("decompose", QUESTION): (DECOMPOSED, -0.1),
        ("decompose", "Compute 3+4."): ("atomic", -0.1),
        ("decompose", "Compute 7*5."): ("atomic", -0.1),
        ("closed_book", "Compute 3+4."): ("3+4=7\nThe answer is \\boxed{7}", child_lp),
        ("closed_book", "Compute 7*5."): ("7*5=35\nThe answer is \\boxed{35}", -0.1),
        ("closed_book", QUESTION): closed_root,
        ("aggregate", QUESTION): aggregate_root,
    }


def solve(script, whole=True, retriever=None, **knobs):
    lm = ScriptedLM(script)
    engine = StepEngine(lm, prompts.load("toy"), StepSampling(), StepBudget())
    search = ProbTree(engine, prompts.probtree(), retriever=retriever, whole=whole, **knobs)
    tree = Tree(Problem(QUESTION, answer="35"))
    (root,) = search.run([tree])[0]
    return lm, tree, root


def answer_of(node):
    return node.notes["answers"][node.notes["method"]]["answer"]


@pytest.mark.parametrize("whole", [True, False])
def test_the_question_tree_is_built_as_scripted_and_references_are_filled(whole):
    script = probtree_script(("\\boxed{40}", -2.0), ("\\boxed{35}", -0.1))
    lm, tree, root = solve(script, whole=whole)
    assert root.notes["question"] == QUESTION and root.notes["decomposition"] == "decomposed"
    assert [c.notes["question"] for c in root.children] == ["Compute 3+4.", "Compute 7*5."]  # #1 -> 7
    assert [c.notes["decomposition"] for c in root.children] == ["atomic", "atomic"]
    assert [answer_of(c) for c in root.children] == ["7", "35"]
    assert lm.asked("decompose") == [QUESTION, "Compute 3+4.", "Compute 7*5."]  # the second waited for the first
    (aggregate,) = [user for k, _, user in lm.calls if k == "aggregate"]
    assert "Q1: Compute 3+4.\nA1: 7\nQ2: Compute 7*5.\nA2: 35" in aggregate
    nodes = tree.to_dict()["nodes"]
    assert [n["parent"] for n in nodes] == [None, 0, 0]
    assert tree.stats.counters["probtree_questions"] == 3 and tree.stats.counters["probtree_decomposed"] == 1
    assert tree.stats.role("target").generated_tokens == sum(len(s[0]) + 1 for s in script.values())


def test_a_node_keeps_child_aggregation_when_it_is_more_confident():
    lm, tree, root = solve(probtree_script(("\\boxed{40}", -2.0), ("\\boxed{35}", -0.1)))
    assert root.notes["method"] == "child_aggregation" and answer_of(root) == "35"
    assert root.notes["answers"]["closed_book"] == {"answer": "40", "confidence": pytest.approx(-2.0)}
    # the paper's score: mean of the aggregation's, the decomposition's and the children's confidences
    assert root.notes["answers"]["child_aggregation"]["confidence"] == pytest.approx(-0.1)
    assert root.step.scores["probtree:closed_book"] == pytest.approx(-2.0)
    assert tree.stats.counters["probtree_won_child_aggregation"] == 1
    assert [c.notes["method"] for c in root.children] == ["closed_book", "closed_book"]  # leaves: closed-book only


def test_a_node_keeps_closed_book_when_it_is_more_confident():
    lm, tree, root = solve(probtree_script(("\\boxed{35}", -0.05), ("\\boxed{30}", -0.5)))
    assert root.notes["method"] == "closed_book" and answer_of(root) == "35"
    assert root.notes["answers"]["child_aggregation"]["answer"] == "30"
    assert "won_child_aggregation" not in str(dict(tree.stats.counters))


def test_a_doubtful_child_lowers_the_aggregate():
    """The aggregation call itself is sure (-0.01), but a sub-answer is not (-3): closed-book (-0.5) wins."""
    lm, tree, root = solve(probtree_script(("\\boxed{35}", -0.5), ("\\boxed{30}", -0.01), child_lp=-3.0))
    assert root.notes["method"] == "closed_book" and answer_of(root) == "35"
    assert root.notes["answers"]["child_aggregation"]["confidence"] == pytest.approx((-0.01 - 0.1 - 3.0 - 0.1) / 4)


@pytest.fixture(scope="module")
def toy_reasoner(one_torch_thread):
    with Reasoner("recipes/toy-probtree.yaml") as reasoner:
        yield reasoner


def test_the_root_answer_is_the_solutions_answer(toy_reasoner):
    """Through ``Reasoner.solve``: the scripted question's kept answer (child aggregation's 35, not closed-book's
    40) is the solution's answer, and the solution's tree is the question tree."""
    lm = ScriptedLM(probtree_script(("\\boxed{40}", -2.0), ("\\boxed{35}", -0.1)))
    engine = StepEngine(lm, prompts.load("toy"), StepSampling(), StepBudget())
    scripted = toy_reasoner.variant()
    scripted.search = ProbTree(engine, prompts.probtree())
    solution = scripted.solve(Problem(QUESTION, answer="35"))
    assert solution.answer == "35" and solution.correct
    tree = solution.to_dict()["tree"]
    assert tree["chosen"] == 0 and [n["notes"]["question"] for n in tree["nodes"]][1:] == [
        "Compute 3+4.",
        "Compute 7*5.",
    ]
    assert solution.stats.counters["probtree_won_child_aggregation"] == 1


def test_the_toy_recipe_answers_closed_book(toy_reasoner):
    """The toy model cannot decompose (it writes arithmetic steps): the question is a leaf, answered closed-book."""
    problem = generate_problems(1, seed=1)[0]
    solution = toy_reasoner.solve(Problem(problem.question, answer=str(problem.answer)))
    (node,) = solution.to_dict()["tree"]["nodes"]
    assert node["notes"]["decomposition"] == "malformed" and node["notes"]["method"] == "closed_book"
    assert solution.correct and solution.stats.counters["probtree_won_closed_book"] == 1


def test_the_depth_limit_stops_decomposing():
    script = probtree_script(("\\boxed{40}", -2.0), ("\\boxed{35}", -0.1))
    lm, tree, root = solve(script, max_depth=1)
    assert lm.asked("decompose") == [QUESTION]  # the sub-questions are at the limit: not decomposed
    assert [c.notes["decomposition"] for c in root.children] == ["depth_limit", "depth_limit"]
    assert answer_of(root) == "35"
    lm, tree, root = solve(script, max_depth=0)
    assert lm.asked("decompose") == [] and root.children == [] and answer_of(root) == "40"
    assert [k for k, _, _ in lm.calls] == ["closed_book"]


@pytest.mark.parametrize(
    "decomposition",
    ["First add 3 and 4, then multiply by 5.", "1. Compute #2*5.\n2. Compute 3+4.", "1. Compute 3+4.\n3. Compute 5."],
)
def test_a_malformed_decomposition_falls_back_to_closed_book(decomposition):
    script = probtree_script(("\\boxed{35}", -0.3), ("\\boxed{30}", -0.01))
    script["decompose", QUESTION] = (decomposition, -0.1)
    lm, tree, root = solve(script)
    assert root.notes["decomposition"] == "malformed" and root.children == []
    assert root.notes["method"] == "closed_book" and answer_of(root) == "35"
    assert lm.asked("aggregate") == [] and tree.stats.counters["probtree_malformed"] == 1


def test_open_book_answers_from_the_retriever_and_wins_when_more_confident():
    script = probtree_script(("\\boxed{40}", -2.0), ("\\boxed{30}", -1.0))
    script["open_book", QUESTION] = ("\\boxed{35}", -0.01)
    lm, tree, root = solve(script, retriever=lambda q: [f"a passage about {q}"])
    assert root.notes["method"] == "open_book" and answer_of(root) == "35"
    users = [u for k, q, u in lm.calls if k == "open_book" and q == QUESTION]
    assert len(users) == 1 and f"[1] a passage about {QUESTION}" in users[0]
    assert len(lm.asked("open_book")) == 3  # every node, leaves too


def test_a_node_with_an_unanswered_child_is_not_aggregated():
    script = probtree_script(("\\boxed{40}", -2.0), ("\\boxed{35}", -0.1))
    del script["closed_book", "Compute 7*5."]  # the model's reply has no \boxed{}: no answer
    lm, tree, root = solve(script)
    assert root.children[1].notes["answers"]["closed_book"] == {"answer": None, "confidence": None}
    assert lm.asked("aggregate") == [] and root.notes["method"] == "closed_book" and answer_of(root) == "40"


def test_parse_decomposition():
    assert parse_decomposition(DECOMPOSED, 4) == ("decomposed", ["Compute 3+4.", "Compute #1*5."])
    assert parse_decomposition("Q1: a?\nQ2: b <1>?", 4) == ("decomposed", ["a?", "b <1>?"])
    assert parse_decomposition("Atomic.", 4) == ("atomic", [])
    assert parse_decomposition("1. a?", 4)[0] == "malformed"  # one sub-question is no decomposition
    assert parse_decomposition("1. a\n2. b\n3. c", 2)[0] == "malformed"  # past max_children
    assert parse_decomposition("1. a\n2. b #2", 4)[0] == "malformed"  # a node cannot name itself


def test_the_recipe_section_and_its_errors():
    recipe = Recipe.load("recipes/toy-probtree.yaml")
    assert recipe.search.method == "probtree" and recipe.verifier.type == "none" and recipe.search.n == 1
    for override, message in [
        ("search.prompts=nope", "unknown ProbTree prompt set 'nope'"),
        ("search.max_children=1", "max_children"),
        ("search.retriever=json:nope", "search.retriever 'json:nope' cannot be imported"),
        ("search.width=3", "search.width is not a knob of search.method=probtree"),
    ]:
        with pytest.raises(RecipeError, match=message) as e:
            Recipe.load("recipes/toy-probtree.yaml", [override])
        assert "\n" not in str(e.value)


def test_a_prompt_set_missing_a_placeholder_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("decompose: '{question}'\nclosed_book: '{question}'\nopen_book: '{question}'\naggregate: 'x'\n")
    with pytest.raises(ValueError, match=r"open_book must contain \{passages\}"):
        prompts.probtree(str(bad))
