#include <generated/csr.h>
#include <hw/common.h>

#include "accel.h"
#include "roma_config.h"

#define CSR_STEP 4      /* bytes between 32-bit CSR subregisters */

_Static_assert(ROMA_CMD_WORDS == CSR_ROMA_CMD_DAT_SIZE, "command width: roma_config.h and the SoC disagree");

/* a CSR wider than 64 bits: subregisters hold the most significant word first (command words, adapter
   programs and H-bank weights) */
static void csr_write_words(unsigned long addr, const uint32_t *msw_first, int n)
{
	for (int i = 0; i < n; i++)
		csr_write_simple(msw_first[i], addr + i * CSR_STEP);
}

static void csr_read_words_lsw(unsigned long addr, uint32_t *lsw_first, int n)
{
	for (int i = 0; i < n; i++)
		lsw_first[n - 1 - i] = csr_read_simple(addr + i * CSR_STEP);
}

/* the selected program: the base one at command 0, or a loaded adapter's after it */
static uint16_t prog_base, prog_cmds = ROMA_N_CMDS, prog_layer_cmds = ROMA_LAYER_CMDS;

/* The command memory may start out holding the token program (ROMA_CMDS_PRELOADED: the SoC initializes it);
   otherwise it is written here, 9 CSR writes a command. */
void accel_load_program(void)
{
#if !ROMA_CMDS_PRELOADED
	roma_cmd_adr_write(0);
	for (int i = 0; i < ROMA_N_CMDS; i++)
		csr_write_words(CSR_ROMA_CMD_DAT_ADDR, roma_program[i], CSR_ROMA_CMD_DAT_SIZE);
#endif
}

void accel_select(uint16_t base, uint16_t n_cmds, uint16_t layer_cmds)
{
	prog_base = base;
	prog_cmds = n_cmds;
	prog_layer_cmds = layer_cmds;
}

uint16_t accel_program_cmds(void)
{
	return prog_cmds;
}

void accel_write_cmds(uint32_t index, const uint32_t *msw_first, uint32_t count)
{
	roma_cmd_adr_write(index);
	for (uint32_t i = 0; i < count; i++)
		csr_write_words(CSR_ROMA_CMD_DAT_ADDR, msw_first + i * CSR_ROMA_CMD_DAT_SIZE, CSR_ROMA_CMD_DAT_SIZE);
}

void accel_h_weights(uint32_t bank, uint32_t adr, const int16_t *elems, uint32_t n_words)
{
	uint32_t w[CSR_ROMA_H_W_DAT_SIZE];
	roma_h_bank_write(bank);
	roma_h_w_adr_write(adr);
	for (uint32_t k = 0; k < n_words; k++) {
		/* MACS 16-bit elements, element j at bits 16j: subregisters most significant first (no elems: zeros) */
		for (int i = 0; i < CSR_ROMA_H_W_DAT_SIZE; i++) {
			int lo = 2 * (CSR_ROMA_H_W_DAT_SIZE - 1 - i);
			uint32_t hi = lo + 1 < ROMA_MACS && elems ? (uint16_t)elems[lo + 1] : 0;
			w[i] = elems ? (uint16_t)elems[lo] | (hi << 16) : 0;
		}
		csr_write_words(CSR_ROMA_H_W_DAT_ADDR, w, CSR_ROMA_H_W_DAT_SIZE);
		if (elems)
			elems += ROMA_MACS;
	}
}

void accel_h_exponents(uint32_t bank, uint32_t adr, const int8_t *exps, uint32_t n)
{
	roma_h_bank_write(bank);
	roma_h_e_adr_write(adr);
	for (uint32_t k = 0; k < n; k++)
		roma_h_e_dat_write((uint8_t)exps[k]);
}

static int64_t sign_extend(uint64_t v, int bits)
{
	uint64_t m = 1ULL << (bits - 1);
	v &= (bits == 64) ? ~0ULL : ((1ULL << bits) - 1);
	return (int64_t)((v ^ m) - m);
}

/* golden: x = saturate(shift(q * dq + mq, er + VEC_FRAC)), rounding half up on right shifts. q * dq + mq
   fits 32 bits (codes of at most 16 bits, 16-bit dq and mq). */
_Static_assert(ROMA_HEAD_BITS <= 16, "the head's codes must fit 16 bits for a 32-bit q * dq + mq");
static int64_t dequant(int32_t q, int32_t dq, int32_t mq, int sh)
{
	int64_t v = q * dq + mq;
	int64_t lim = (1LL << (ROMA_VEC_BITS - 1)) - 1;
	if (sh >= 0)
		v = v << sh;
	else
		v = (v + (1LL << (-sh - 1))) >> -sh;
	return v > lim ? lim : (v < -lim ? -lim : v);
}

static int32_t code_at(const uint32_t *words, int j)
{
	uint32_t bit = j * ROMA_HEAD_BITS;
	uint32_t raw = (words[bit / 32] >> (bit % 32)) & ((1u << ROMA_HEAD_BITS) - 1);
	return ROMA_HEAD_SIGNED ? (int32_t)(raw << (32 - ROMA_HEAD_BITS)) >> (32 - ROMA_HEAD_BITS) : (int32_t)raw;
}

/* The token's embedding row, dequantized into VM X (576 elements for SmolLM2). dequant() in 64-bit
   arithmetic took 36k cycles a token on the VexRiscv (a fifth of a forward pass); a group that cannot saturate
   takes a 32-bit loop instead (18.5k cycles): a right shift (SmolLM2's embedding: er + VEC_FRAC is a little
   below 0) keeps the value within 32 bits, a left shift is done as two 32-bit ones. */
_Static_assert(CSR_ROMA_VM_WDAT_SIZE == 2, "vm_wdat: two 32-bit subregisters expected");
void accel_embed(uint16_t token)
{
	uint32_t bank = token % ROMA_LANES, row = token / ROMA_LANES;
	uint32_t words[CSR_ROMA_EMB_CODES_SIZE];
	const int64_t lim = (1LL << (ROMA_VEC_BITS - 1)) - 1;
	const int32_t qmax = ROMA_HEAD_SIGNED ? 1 << (ROMA_HEAD_BITS - 1) : (1 << ROMA_HEAD_BITS) - 1;
	roma_emb_bank_write(bank);
	roma_emb_row_write(row);
	roma_vm_adr_write(ROMA_VM_X * 32);
	for (int g = 0; g < ROMA_DIM / 32; g++) {
		roma_emb_widx_write(row * (ROMA_DIM / 32) + g);
		roma_emb_beat_write(0);
		uint32_t sc = roma_emb_scale_read();
		int sh = (int)(int8_t)roma_emb_rowexp_read() + ROMA_VEC_FRAC;
		int32_t dq = (int16_t)(sc & 0xffff), mq = (int16_t)(sc >> 16);
		int32_t bound = qmax * (dq < 0 ? -dq : dq) + (mq < 0 ? -mq : mq);    /* >= |q * dq + mq| */
		int right = sh < 0 && sh >= -30;                 /* |result| < 2**31 <= lim: no saturation */
		int left = sh >= 0 && sh < 32 && ((int64_t)bound << sh) <= lim;
		int rsh = right ? -sh : 0, lsh = left ? sh : 0;
		int32_t rnd = right ? 1 << (rsh - 1) : 0;        /* rounding half up */
		int hs = lsh ? 32 - lsh : 31;                    /* upper word of (int64_t)p << lsh: p >> hs */
		for (int beat = 0; beat < ROMA_BEATS; beat++) {
			roma_emb_beat_write(beat);
			csr_read_words_lsw(CSR_ROMA_EMB_CODES_ADDR, words, CSR_ROMA_EMB_CODES_SIZE);
			if (right) {
				for (int j = 0; j < ROMA_MACS; j++) {
					int32_t v = (code_at(words, j) * dq + mq + rnd) >> rsh;
					csr_write_simple((uint32_t)(v >> 31), CSR_ROMA_VM_WDAT_ADDR);
					csr_write_simple((uint32_t)v, CSR_ROMA_VM_WDAT_ADDR + CSR_STEP);
				}
			} else if (left) {
				for (int j = 0; j < ROMA_MACS; j++) {
					int32_t p = code_at(words, j) * dq + mq;
					csr_write_simple((uint32_t)(p >> hs), CSR_ROMA_VM_WDAT_ADDR);
					csr_write_simple((uint32_t)p << lsh, CSR_ROMA_VM_WDAT_ADDR + CSR_STEP);
				}
			} else {
				for (int j = 0; j < ROMA_MACS; j++)
					roma_vm_wdat_write((uint64_t)dequant(code_at(words, j), dq, mq, sh));
			}
		}
	}
}

uint32_t accel_forward(uint16_t pos, int with_head)
{
	return accel_run(pos, with_head ? prog_cmds : prog_layer_cmds);
}

static uint32_t run_at(uint16_t first, uint16_t pos, uint16_t ncmds)
{
	uint32_t c0 = roma_cycles_read();
	roma_base_write(first);
	roma_pos_write(pos);
	roma_ncmds_write(ncmds);
	roma_start_write(1);
	while (roma_status_read() & (1 << CSR_ROMA_STATUS_BUSY_OFFSET))
		;
	return roma_cycles_read() - c0;
}

uint32_t accel_run(uint16_t pos, uint16_t ncmds)
{
	return run_at(prog_base, pos, ncmds);
}

uint16_t accel_argmax(void)
{
	return roma_token_read();
}

int64_t accel_vm_read(uint32_t element)
{
	roma_vm_adr_write(element);
	/* the new word reaches vm_rdat two cycles after the pointer is written; the first read of the 48-bit
	   status would take its upper subregister from the previous word: read the pointer back first */
	(void)roma_vm_adr_read();
	return sign_extend(roma_vm_rdat_read(), ROMA_VEC_BITS);
}

int64_t accel_logit(uint32_t index)
{
	return accel_vm_read(ROMA_VM_LOGITS * 32 + index);
}

static void vm_write(uint32_t element, int64_t value)
{
	roma_vm_adr_write(element);
	roma_vm_wdat_write((uint64_t)value);
}

/* The program's last command is the ARGMAX over the logits (the first maximum wins): run alone k times, each
   winner set below every 48-bit logit in between, it gives the top k in the golden sampler's order in k passes
   of vocab / 32 words, where reading every logit over the CSRs took some 275 cycles a token id. The logits are
   restored afterwards. */
void accel_top_k(uint32_t k, int64_t *top_l, uint16_t *top_i)
{
	const int64_t below = -((int64_t)1 << (ROMA_VEC_BITS - 1));
	for (uint32_t j = 0; j < k; j++) {
		if (j)
			run_at(prog_base + prog_cmds - 1, 0, 1);
		top_i[j] = roma_token_read();
		top_l[j] = accel_logit(top_i[j]);
		vm_write(ROMA_VM_LOGITS * 32 + top_i[j], below);
	}
	for (uint32_t j = 0; j < k; j++)
		vm_write(ROMA_VM_LOGITS * 32 + top_i[j], top_l[j]);
}

void accel_read_counters(struct accel_counters *c)
{
	int i = 0;
#define READ_COUNTER(name) c->v[i++] = roma_##name##_read();
	ROMA_COUNTERS(READ_COUNTER)
#undef READ_COUNTER
}
