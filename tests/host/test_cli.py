"""The `roma` command: bad input gets one line naming the problem and a non-zero exit, never a traceback."""

import json
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from peft_files import write_adapter
from roma.host.cli import main
from roma.host.lora import MAX_LORA_RANK
from roma.host.tiny import save_tiny, tiny_model


def run(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def assert_error(capsys, words, *argv):
    rc, out, err = run(capsys, *argv)
    assert rc != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("roma: error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert "Traceback" not in err + out
    return lines[0]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return save_tiny("tiny-260k", tmp_path_factory.mktemp("hf") / "tiny")


def test_unknown_model_name(capsys):
    assert_error(capsys, ["unknown model", "'llama-9000'", "smollm2-135m", "tiny-260k"], "info", "llama-9000")


def test_missing_model_file(capsys, tmp_path):
    assert_error(capsys, ["not found", "nope.gguf"], "info", str(tmp_path / "nope.gguf"))


def test_truncated_gguf(capsys, tmp_path):
    from roma.host.models import smollm2_path
    bad = tmp_path / "cut.gguf"
    with open(smollm2_path(), "rb") as f:
        bad.write_bytes(f.read(1 << 20))
    assert_error(capsys, ["cut.gguf", "not a readable GGUF"], "info", str(bad))


def test_garbage_file(capsys, tmp_path):
    bad = tmp_path / "garbage.gguf"
    bad.write_bytes(b"\x00not a model" * 100)
    assert_error(capsys, ["garbage.gguf"], "info", str(bad))


def test_non_llama_architecture(capsys, hf_dir, tmp_path):
    d = tmp_path / "gpt2"
    d.mkdir()
    conf = json.loads((hf_dir / "config.json").read_text())
    conf["model_type"] = "gpt2"
    conf["architectures"] = ["GPT2LMHeadModel"]
    (d / "config.json").write_text(json.dumps(conf))
    (d / "model.safetensors").write_bytes((hf_dir / "model.safetensors").read_bytes())
    assert_error(capsys, ["gpt2", "not supported", "LLaMA"], "info", str(d))


def test_nan_weights(capsys, hf_dir, tmp_path):
    d = tmp_path / "nan"
    d.mkdir()
    for f in hf_dir.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    t = load_file(str(d / "model.safetensors"))
    name = "model.layers.2.mlp.up_proj.weight"
    t[name][3, 5] = np.nan
    save_file(t, str(d / "model.safetensors"))
    line = assert_error(capsys, ["NaN"], "info", str(d))
    assert "2" in line and "up_proj" in line


def test_adapter_for_another_base(capsys, tmp_path):
    other = tiny_model("tiny-1m")
    write_adapter(tmp_path / "ad", other, rank=4)
    assert_error(capsys, ["another base"], "generate", "--target", "golden", "--model", "tiny-260k",
                 "--adapter", str(tmp_path / "ad"), "--max-new-tokens", "2", "hi")


def test_adapter_rank_too_large(capsys, tmp_path):
    m = tiny_model("tiny-260k")
    write_adapter(tmp_path / "ad", m, rank=MAX_LORA_RANK + 1, targets=("q_proj",))
    assert_error(capsys, ["rank", str(MAX_LORA_RANK + 1), str(MAX_LORA_RANK)],
                 "generate", "--target", "golden", "--model", "tiny-260k", "--adapter", str(tmp_path / "ad"), "hi")


def test_prompt_longer_than_context(capsys):
    assert_error(capsys, ["prompt of", "does not fit", "16"],
                 "generate", "--target", "golden", "--model", "tiny-260k", "--context", "16",
                 "once upon a time " * 20)


def test_model_path_is_an_adapter(capsys, tmp_path):
    write_adapter(tmp_path / "ad", tiny_model("tiny-260k"), rank=2)
    assert_error(capsys, ["LoRA adapter", "--adapter"], "info", str(tmp_path / "ad"))


def test_bad_sampling_flags(capsys):
    assert_error(capsys, ["--top-p"], "generate", "--target", "golden", "--model", "tiny-260k", "--temperature", "1",
                 "--top-p", "0", "x")
    assert_error(capsys, ["--top-k", "256"], "generate", "--target", "golden", "--model", "tiny-260k",
                 "--temperature", "1", "--top-k", "1000", "x")


def test_bad_lanes(capsys, tmp_path):
    assert_error(capsys, ["--lanes 48", "does not divide", "lane counts that do"],
                 "export", "tiny-260k", "--lanes", "48", "-o", str(tmp_path / "x"))


def test_generate_streams_on_tiny(capsys):
    rc, out, err = run(capsys, "generate", "--target", "golden", "--model", "tiny-260k", "--max-new-tokens", "5", "--quiet",
                         "Once")
    assert rc == 0 and out.strip(), (out, err)


def test_info_reports_counts(capsys):
    rc, out, _ = run(capsys, "info", "tiny-260k", "--json")
    info = json.loads(out)
    assert rc == 0
    assert info["parameters"] == 279232 and info["layers"] == 5
    assert info["ROM bits at 2-bit"] < info["ROM bits at 4-bit"]


def test_real_command_has_no_traceback():
    """The installed console script, not just main(): exit code 1 and a single line."""
    p = subprocess.run([sys.executable, "-m", "roma.host.cli", "info", "no-such-model"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert p.stderr.strip().startswith("roma: error: unknown model") and "Traceback" not in p.stderr


def test_help_explains():
    p = subprocess.run([sys.executable, "-m", "roma.host.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0
    for cmd in ("generate", "eval", "export", "info", "make-adapter", "bench"):
        assert cmd in p.stdout
