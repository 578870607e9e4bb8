import subprocess
import sys

from evals.bench_forward import forward_seconds


def test_forward_seconds_times_each_token_count_on_a_real_model():
    secs = forward_seconds("toy:target", [1, 4], prefix=8, repeats=1)
    assert len(secs) == 2 and all(s > 0 for s in secs)


def test_int8_times_the_quantized_model(monkeypatch):
    import reasoner.backends.sources as sources

    seen = []
    real = sources.quantize_linear
    monkeypatch.setattr(sources, "quantize_linear", lambda m, kind, device: seen.append(kind) or real(m, kind, device))
    assert len(forward_seconds("toy:target", [1], prefix=4, repeats=1, quantize="int8")) == 1
    assert seen == ["int8"]


def test_bad_token_counts_are_one_line_and_exit_2():
    r = subprocess.run(
        [sys.executable, "-m", "evals.bench_forward", "toy:target", "--tokens", "1,x"], capture_output=True, text=True
    )
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "--tokens" in r.stderr
