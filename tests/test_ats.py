"""ATS prompting (autonomous tree search in one generation): templates, answer extraction, recipes."""

import pytest

import prompts
from reasoner.core.types import Candidate, Step
from reasoner.recipe import Recipe
from verifiers.math import extract_answer, is_equivalent

PROBLEM = "What is the sum of the two roots of x^2 - 5x + 6 = 0?"

BFS_TRACE = """Level 1.
[1a] Factor: x^2 - 5x + 6 = (x - 2)(x - 3), so the roots are 2 and 3.
[1b] Vieta: the sum of the roots is -(-5)/1.
[1c] Guess: the roots might be 1 and 6, with sum \\boxed{7}.
Evaluation: [1a] and [1b] are correct; [1c] is wrong (1 * 6 = 6 but 1 + 6 is not 5), drop it.

Level 2.
[2a] (from [1a]) 2 + 3 = \\boxed{5}.
[2b] (from [1b]) -(-5)/1 = \\boxed{\\frac{10}{2}}, that is 5.
Evaluation: both branches agree.

Final answer: \\boxed{5}"""

DFS_TRACE = """Options: (1) guess roots; (2) Vieta.

Path 1: guess 1 and 6. Candidate: \\boxed{7}.
Check: 1 + 6 = 7 but the x coefficient says the sum is 5. Wrong.
Backtrack: try (2).

Path 2: the sum of the roots is 5, giving \\boxed{5}.
Check: the roots 2 and 3 add to 5. It holds.

Final answer: \\boxed{5}"""


@pytest.mark.parametrize("name", ["ats-bfs", "ats-dfs"])
def test_templates_render_instruction_then_problem_through_a_chat_template(toy_target, name):
    t = prompts.load(name)
    text = t.prompt(toy_target.tokenizer, PROBLEM)
    # the toy tokenizer's chat template: system turn (instruction + worked example), user turn (problem),
    # open assistant turn
    assert text.startswith("<|im_start|>system\n" + t.system + "<|im_end|>\n")
    assert text.endswith("<|im_start|>user\n" + PROBLEM + "<|im_end|>\n<|im_start|>assistant\n")
    assert "Final answer: \\boxed{ANSWER}" in t.system and "Example." in t.system
    assert ("Evaluation:" in t.system) if name == "ats-bfs" else ("Backtrack:" in t.system)
    # the worked example is an ATS trace itself: several boxed candidates, the final one is its answer
    example = t.system.split("Example.", 1)[1]
    assert example.count("\\boxed{") >= 3
    assert extract_answer(example) == {"ats-bfs": "\\sqrt{113}", "ats-dfs": "11"}[name]
    # steps of a trace are its paragraphs: a partial trace continues in the open assistant turn
    cont = t.prompt(toy_target.tokenizer, PROBLEM, ["Level 1.", "[1a] Factor."])
    assert cont == text + "Level 1.\n\n[1a] Factor.\n\n"


@pytest.mark.parametrize("trace", [BFS_TRACE, DFS_TRACE], ids=["bfs", "dfs"])
def test_the_final_boxed_answer_wins_over_earlier_branch_candidates(trace):
    assert trace.count("\\boxed{") >= 3
    assert extract_answer(trace) == "5"
    # as the reasoner sees it: the trace's paragraphs are steps, the candidate's answer is the last boxed one
    steps = [Step(p) for p in trace.split("\n\n")]
    candidate = Candidate(steps, extract_answer("\n\n".join(s.text for s in steps)))
    assert candidate.text == trace and is_equivalent(candidate.answer, "5") and not is_equivalent("7", "5")


def test_a_trace_cut_inside_its_final_box_falls_back_to_the_last_complete_candidate():
    cut = BFS_TRACE[: BFS_TRACE.rindex("\\boxed{") + len("\\boxed{")] + "5"
    assert extract_answer(cut) == "\\frac{10}{2}" and is_equivalent(extract_answer(cut), "5")


@pytest.mark.parametrize("name", ["ats-qwen-math", "ats-qwen-math-vllm"])
def test_ats_recipes_validate_with_one_generous_chain_of_thought(name):
    r = Recipe.load(name)
    assert r.name == name and r.prompt == "ats-bfs" and r.search.method == "cot" and r.search.n == 1
    assert r.models.target.path == "Qwen/Qwen2.5-Math-1.5B-Instruct"
    assert r.models.target.backend == ("vllm" if name.endswith("vllm") else "transformers")
    # the whole search trace fits: many paragraph-steps, long steps, a token budget inside the 4096 context
    assert r.budget.max_steps >= 128 and r.sampling.max_step_tokens >= 1024 and 2048 <= r.budget.max_tokens <= 3500
    assert "toy models cannot" in r.description
    assert Recipe.load(name, ["prompt=ats-dfs"]).prompt == "ats-dfs"
    prompts.load(r.prompt)  # the template exists
