/* The accelerator driver: its program, the embedding lookup, one forward pass, results and counters. */
#pragma once
#include <stdint.h>

#include "roma_config.h"

/* ROMA_COUNTERS' order */
struct accel_counters {
	uint32_t v[ROMA_N_COUNTERS];
};

void accel_load_program(void);
/* run programs from command `base` (n_cmds with the head, layer_cmds without) */
void accel_select(uint16_t base, uint16_t n_cmds, uint16_t layer_cmds);
uint16_t accel_program_cmds(void);
/* commands into the command memory from `index` (each CSR_ROMA_CMD_DAT_SIZE words, most significant first) */
void accel_write_cmds(uint32_t index, const uint32_t *msw_first, uint32_t count);
/* H-unit bank loads: n_words weight words (ROMA_MACS elements each; elems 0: zeros) / n row exponents from `adr` */
void accel_h_weights(uint32_t bank, uint32_t adr, const int16_t *elems, uint32_t n_words);
void accel_h_exponents(uint32_t bank, uint32_t adr, const int8_t *exps, uint32_t n);
/* x = the token's embedding row (from the LM head's ROM), into the vector memory's X region */
void accel_embed(uint16_t token);
/* every layer at `pos`, and the head (final norm, logits, argmax) when with_head; returns its cycles */
uint32_t accel_forward(uint16_t pos, int with_head);
/* the first ncmds commands of the selected token program */
uint32_t accel_run(uint16_t pos, uint16_t ncmds);
uint16_t accel_argmax(void);
int64_t accel_logit(uint32_t index);
/* the k largest logits of the last forward pass and their token ids, largest first (ties: lower id first): k
   ARGMAX passes, which the unit counters see (not the decode cycles); the token register is left holding the
   k-th id, the logits as they were */
void accel_top_k(uint32_t k, int64_t *top_l, uint16_t *top_i);
int64_t accel_vm_read(uint32_t element);       /* word * 32 + element */
void accel_read_counters(struct accel_counters *c);
