import pytest

import prompts


@pytest.mark.parametrize("name", prompts.available())
def test_every_template_renders_a_problem(name):
    t = prompts.load(name)
    messages = t.messages("What is 1+1?")
    assert messages[-1] == {"role": "user", "content": t.user.format(problem="What is 1+1?")}
    assert "What is 1+1?" in messages[-1]["content"] and "{" not in messages[-1]["content"].replace("\\boxed{}", "")
    assert t.step_delimiter == "\n\n" and "0 to 9" in t.judge_instruction


def test_the_families_others_rely_on_exist():
    assert {"toy", "qwen-math", "r1-distill"} <= set(prompts.available())
    assert prompts.load("qwen-math").system.endswith("within \\boxed{}.")


def test_judge_prompt_puts_the_candidate_last_and_ends_at_the_score(toy_target):
    t = prompts.load("toy")
    text = t.judge_prompt(toy_target.tokenizer, "Compute 1+2*3.", ["2*3=6"], "1+6=7")
    assert text.index("2*3=6\n\n1+6=7<|im_end|>") < text.index(t.judge_instruction)
    assert text.endswith("<|im_start|>assistant\n" + t.judge_prefix)


def test_unknown_template_and_bad_keys(tmp_path):
    with pytest.raises(ValueError, match="unknown prompt template 'nope'"):
        prompts.load("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("usr: '{problem}'\n")
    with pytest.raises(ValueError, match="allowed keys"):
        prompts.load(str(bad))
