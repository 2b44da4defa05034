"""The simulation platform and the SoC built on it: everything the Verilator model is made from besides the
gateware and soc packages (boards/sim.py hashes this file, not itself, into the build key)."""

SYS_CLK_FREQ = int(1e6)     # nominal: the simulation runs as fast as Verilator does


def sim_io():
    from litex.build.generic_platform import Pins, Subsignal
    return [
        ("sys_clk", 0, Pins(1)),
        ("sys_rst", 0, Pins(1)),
        ("serial", 0,
            Subsignal("source_valid", Pins(1)), Subsignal("source_ready", Pins(1)), Subsignal("source_data", Pins(8)),
            Subsignal("sink_valid", Pins(1)), Subsignal("sink_ready", Pins(1)), Subsignal("sink_data", Pins(8))),
    ]


def make_soc(model, cfg, context, lora_size, rom_init=None):
    from litex.build.sim import SimPlatform

    from roma.gateware.accel_build import build_accelerator
    from roma.firmware.build import token_cmds
    from roma.soc.soc import RomaSoC, rom_size_for

    # the vector unit, the H-unit and the LM head clocked only while they work: Verilator skips their logic in
    # the other cycles (gateware/accelerator.py gate_clocks), the same cycles counted
    acc = build_accelerator(model, cfg, context, lora_size=lora_size, gate_clocks=True)
    program = token_cmds(acc)
    n_cmds = len(program)
    # the command memory starts out holding the token program (as a bitstream would initialize it), so the
    # firmware need not write it through CSRs at boot: 9 CSR writes a command, some 300k cycles for SmolLM2's
    # 2,735 commands, which are 40 s in simulation (firmware/build.py tells the firmware: ROMA_CMDS_PRELOADED)
    acc.dut.cmds.init = program
    platform = SimPlatform("SIM", sim_io())
    soc = RomaSoC(platform, SYS_CLK_FREQ, acc, cfg, rom_size_for(n_cmds), rom_init=rom_init, uart_name="sim")
    from litex.build.io import CRG
    soc.crg = CRG(platform.request("sys_clk"))
    return soc, acc
