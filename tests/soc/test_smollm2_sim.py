"""SmolLM2-135M-Instruct on the simulated SoC, as `roma generate --target sim` runs it (the same build, found in
the same cache): the chat-templated question's answer streams from the hardware, token for token the golden
model's."""

import pytest

from roma.gateware.verilator import verilator_available
from roma.host.cli import SIM_CONTEXT
from roma.host.generate import GoldenTarget, prompt_tokens
from roma.host.golden.model import golden_for
from roma.host.golden.sampler import SamplingParams
from roma.host.models import load_model
from roma.soc.config import default_config

pytestmark = [pytest.mark.slow, pytest.mark.verilator,
              pytest.mark.skipif(not verilator_available(), reason="verilator is not on PATH")]

QUESTION = "What is the capital of France?"
ANSWER = "The capital of France is Paris."


def test_capital_of_france_from_the_simulated_soc():
    from roma.host.targets import SimTarget

    model = load_model("smollm2-135m")
    tokens = prompt_tokens(model, QUESTION)
    stop = set(model.config.eos_ids)
    want = list(GoldenTarget(golden_for(model, None, len(tokens) + 16)).generate(tokens, 16, SamplingParams(), stop))
    assert model.tokenizer.decode(want, skip_special_tokens=True) == ANSWER

    target = SimTarget(model, default_config(model.config), context=min(model.config.context, SIM_CONTEXT),
                       progress=False)
    try:
        got = list(target.generate(tokens, 16, SamplingParams(), stop))
    finally:
        target.close()
    assert got == want
    done = target.done
    assert done.n_prompt == len(tokens) and done.reason == "STOP"
    assert done.counters["l_mac"] > 0 and done.decode_cycles > 0
