"""The accelerator's performance counters, in the order the SoC's CSRs, the firmware's DONE report and the host
read them (one list: soc/accel_core.py makes the CSRs, firmware/build.py the C list, host/protocol.py the
DONE layout). All count cycles and wrap at 2**32.

  cycles            the accelerator ran a program
  l_mac h_mac d_mac the L-unit (B-ROM), H-unit (SRAM) and head lanes multiplied
  l_busy h_busy d_busy v_busy kv_busy   the unit ran a command (the vector unit not counting `v_hold`)
  l_hold h_hold v_hold   a unit, started early, waited for its input still being written (chaining)
  v_stall l_stall h_stall d_stall       the next command, for that unit, waited to issue (its unit busy or
                    a unit it waits for still running)
"""

COUNTERS = ("cycles", "l_mac", "h_mac", "d_mac", "l_busy", "h_busy", "d_busy", "v_busy", "kv_busy",
            "l_hold", "h_hold", "v_hold", "v_stall", "l_stall", "h_stall", "d_stall")
