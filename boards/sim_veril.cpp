/* LiteX's sim core veril.cpp (litex/build/sim/core/veril.cpp, Copyright (C) 2017 LambdaConcept) as the ROMA
   simulator builds it (boards/sim_build.py): the tracer only exists in a model verilated with --trace, and the
   preloaded memories (roma_meminit.cpp) are read in right after the model is constructed: LiteX's
   sim_init.cpp calls litex_sim_init_tracer() then, whether or not it traces. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include "Vsim.h"
#include "verilated.h"
#if VM_TRACE
#ifdef TRACE_FST
#include "verilated_fst_c.h"
typedef VerilatedFstC Tracer;
#else
#include "verilated_vcd_c.h"
typedef VerilatedVcdC Tracer;
#endif
static Tracer *tfp;
#endif

extern "C" void roma_sim_load_memories(void *vsim);

static uint64_t tfp_start, tfp_end;
static uint64_t main_time = 0;
static Vsim *g_sim = nullptr;

extern "C" void litex_sim_eval(void *vsim, uint64_t time_ps)
{
  Vsim *sim = (Vsim*)vsim;
  if (sim != g_sim) {
    fprintf(stderr, "roma: the model was evaluated before its memories were loaded\n");
    exit(1);
  }
  sim->eval();
  main_time = time_ps;
}

extern "C" void litex_sim_init_cmdargs(int argc, char *argv[])
{
  Verilated::commandArgs(argc, argv);
}

extern "C" void litex_sim_init_tracer(void *vsim, long start, long end)
{
  g_sim = (Vsim*)vsim;
  roma_sim_load_memories(vsim);
  tfp_start = start;
  tfp_end = end >= 0 ? end : UINT64_MAX;
#if VM_TRACE
  Verilated::traceEverOn(true);
  tfp = new Tracer;
  g_sim->trace(tfp, 99);
#ifdef TRACE_FST
  tfp->open("sim.fst");
#else
  tfp->open("sim.vcd");
#endif
  tfp->set_time_unit("1ps");
  tfp->set_time_resolution("1ps");
#endif
}

extern "C" void litex_sim_tracer_dump()
{
#if VM_TRACE
  if (g_sim->sim_trace && tfp_start <= main_time && main_time <= tfp_end)
    tfp->dump((vluint64_t) main_time);
#endif
}

extern "C" int litex_sim_got_finish()
{
#if VM_TRACE
  if (Verilated::gotFinish())
    tfp->close();
#endif
  return Verilated::gotFinish();
}

double sc_time_stamp()
{
  return main_time;
}
