import threading

from verifiers.math import extract_answer, is_equivalent


def test_extract_last_boxed_with_nested_braces():
    assert extract_answer("first \\boxed{1} then \\boxed{\\frac{1}{2}} end") == "\\frac{1}{2}"
    assert extract_answer("The answer is \\boxed{173}") == "173"
    assert extract_answer("no box here") is None
    assert extract_answer("unclosed \\boxed{12") is None
    assert extract_answer(None) is None


def test_equivalence_uses_math_verify():
    assert is_equivalent("0.5", "\\frac{1}{2}")
    assert is_equivalent("\\frac{2}{4}", "\\frac12")
    assert not is_equivalent("41", "42")
    assert not is_equivalent(None, "42")
    assert not is_equivalent("", "42")


def test_equivalence_works_off_the_main_thread():
    results = []
    threads = [threading.Thread(target=lambda: results.append(is_equivalent("1/3", "\\frac{2}{6}"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 4
