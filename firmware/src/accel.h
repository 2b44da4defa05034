/* The accelerator driver: its program, the embedding lookup, one forward pass, results and counters. */
#pragma once
#include <stdint.h>

#include "roma_config.h"

/* ROMA_COUNTERS' order */
struct accel_counters {
	uint32_t v[ROMA_N_COUNTERS];
};

void accel_load_program(void);
/* x = the token's embedding row (from the LM head's ROM), into the vector memory's X region */
void accel_embed(uint16_t token);
/* every layer at `pos`, and the head (final norm, logits, argmax) when with_head; returns its cycles */
uint32_t accel_forward(uint16_t pos, int with_head);
/* the first ncmds commands of the token program */
uint32_t accel_run(uint16_t pos, uint16_t ncmds);
uint16_t accel_argmax(void);
int64_t accel_logit(uint32_t index);
int64_t accel_vm_read(uint32_t element);       /* word * 32 + element */
void accel_read_counters(struct accel_counters *c);
