import json
import subprocess
import sys

from evals.bench_models import fidelity

QUESTIONS = ["Compute 12+7*3.", "Compute (5+8)*4-9.", "Compute 3*3*3."]


def test_fidelity_tells_lossless_fp16_from_lossy_int8():
    """Teacher-forced on float32's own tokens, fp16 weights pick float32's next token everywhere, and int8 moves the
    distribution further than fp16 does (its KL is larger), alone and in the batch."""
    fp16 = fidelity("toy:target", "fp16", QUESTIONS, tokens=12)
    int8 = fidelity("toy:target", "int8", QUESTIONS, tokens=12)
    assert fp16["positions"] == int8["positions"] == 36
    assert fp16["alone"][0] == fp16["batch"][0] == 1.0
    for where in ("alone", "batch"):
        assert int8[where][1] > 10 * fp16[where][1] >= 0


def test_fidelity_without_a_quantize_option_or_good_data_is_one_line_and_exit_2(tmp_path):
    data = tmp_path / "g.jsonl"
    data.write_text(json.dumps({"question": "Compute 1+1.", "answer": "#### 2"}) + "\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "Compute 1+1."}) + "\n")
    for args, named in (
        (["--fidelity", "2", "--data", str(data)], "--fidelity"),
        (["--fidelity", "2", "--quantize", "int8"], "--fidelity"),
        (["--fidelity", "2", "--quantize", "int8", "--data", str(bad)], "answer"),
    ):
        r = subprocess.run(
            [sys.executable, "-m", "evals.bench_models", "toy:target", *args], capture_output=True, text=True
        )
        assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and named in r.stderr, r.stderr
