"""The single configuration source: accelerator geometry and the model it is built for.

Gateware elaborates from an AccelConfig; firmware sees it only through generated headers, the host through
csr.json and the export manifest. Every check that can fail raises ConfigError naming the parameter.
"""

from dataclasses import dataclass

from roma.host.errors import RomaError
from roma.host.golden.numerics import ACC_FRAC, ACT_BITS, GROUP, SCALE_BITS, VEC_BITS, VEC_FRAC


class ConfigError(RomaError):
    """An accelerator configuration that cannot be built, named by its parameter."""


MULTIPLIERS = ("dsp", "lut")
PIPELINES = ("short", "deep")
CODE_BITS = (4, 2)


@dataclass(frozen=True)
class AccelConfig:
    lanes: int = 16             # MAC lanes = B-ROM banks; lane b holds the rows r with r % lanes == b
    macs_per_lane: int = 8      # codes multiplied per lane per cycle; a group of 32 takes 32 / macs_per_lane cycles
    vec_lanes: int = 32         # vector-unit elements per cycle; a 32-element VM word takes 32 / vec_lanes cycles
                                # (each lane has about 20 18x18 multipliers: narrow for an FPGA, wide to simulate)
    code_bits: int = 4          # base-weight code width
    multiplier: str = "dsp"     # "dsp": q * a (MULT18X18D on ECP5); "lut": q selects a broadcast multiple of a
    pipeline: str = "short"     # "deep": a register after about every adder, shift, multiplexer tree or table
                                # read (an FPGA's clock: the vector unit's stages, the LUT multipliers' choice);
                                # "short": only where a block RAM answers (fewer cycles: the simulator's). The
                                # same arithmetic either way
    lora_rank: int = 0          # adapters of up to this rank (padded to 32) on any projections fit the H-unit's
                                # SRAM beside the KV cache, loaded over the link; 0: no adapter capacity
    rom_bits: int = 0           # B-ROM capacity (base layers and LM head); 0: as much as the model needs
    sram_bits: int = 0          # H-unit SRAM capacity (KV cache and adapters); 0: as much as needed

    def __post_init__(self):
        if self.code_bits not in CODE_BITS:
            raise ConfigError(f"code_bits={self.code_bits}: supported widths are {CODE_BITS}")
        if self.multiplier not in MULTIPLIERS:
            raise ConfigError(f"multiplier={self.multiplier!r}: choose one of {MULTIPLIERS}")
        if self.pipeline not in PIPELINES:
            raise ConfigError(f"pipeline={self.pipeline!r}: choose one of {PIPELINES}")
        if self.macs_per_lane < 1 or GROUP % self.macs_per_lane:
            raise ConfigError(f"macs_per_lane={self.macs_per_lane}: must divide the group size {GROUP}")
        if self.vec_lanes < 1 or GROUP % self.vec_lanes:
            raise ConfigError(f"vec_lanes={self.vec_lanes}: must divide the group size {GROUP}")
        if self.lanes < 1:
            raise ConfigError(f"lanes={self.lanes}: must be at least 1")
        if not 0 <= self.lora_rank <= 64:
            raise ConfigError(f"lora_rank={self.lora_rank}: the H-unit's LoRA path takes ranks up to 64")

    # derived widths: every one follows from the golden model's numerics
    @property
    def beats_per_group(self):
        return GROUP // self.macs_per_lane

    @property
    def word_bits(self):
        return self.macs_per_lane * self.code_bits

    @property
    def peak_macs_per_cycle(self):
        return self.lanes * self.macs_per_lane

    act_bits = ACT_BITS
    scale_bits = SCALE_BITS
    vec_bits = VEC_BITS
    acc_frac = ACC_FRAC
    vec_frac = VEC_FRAC
    exp_bits = 8                # activation and row exponents (signed)
    acc_bits = 64               # the golden model keeps every accumulator below 2**53

    @property
    def group_product_bits(self):
        """Signed bits of sum(q * qa) over a group: 32 * (2**b - 1) * 2**15 needs b + 15 + 5 + 1."""
        return self.code_bits + ACT_BITS + 5

    @property
    def group_sum_bits(self):
        return ACT_BITS + 5

    def check_rows(self, rows, what):
        if rows % self.lanes:
            raise ConfigError(f"lanes={self.lanes} does not divide the {rows} rows of {what}")


def large_model(model_config):
    """A SmolLM2-class model (over 10M MACs per token): the wide array, no adapter capacity by default, and
    minutes of simulated wall time."""
    return model_config.layer_macs() * model_config.n_layers > 10_000_000


def default_config(model_config):
    """The accelerator a model gets unless told otherwise: a small array for the tiny models (the ECP5 shape),
    a wide one for SmolLM2-class models in the simulator. Lanes must divide 32 and every row count."""
    big = large_model(model_config)
    lanes, macs = (32, 32) if big else (8, 8)
    while lanes > 1 and any(r % lanes for r in (model_config.dim, model_config.hidden, model_config.vocab,
                                                model_config.n_kv_heads * model_config.head_dim)):
        lanes //= 2
    # the tiny models reserve room for an adapter of rank up to 32 on every projection; SmolLM2's would need
    # about 80 Mbit of SRAM, so the wide configuration is built without (AccelConfig(lora_rank=...) to add it)
    return AccelConfig(lanes=lanes, macs_per_lane=macs, lora_rank=0 if big else 32)
