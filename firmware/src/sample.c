#include "roma_config.h"
#include "sample.h"

static int64_t top_l[ROMA_MAX_TOP_K];
static uint16_t top_i[ROMA_MAX_TOP_K];
static int64_t cum[ROMA_MAX_TOP_K];

static uint32_t xorshift32(uint32_t x)
{
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return x;
}

/* exp(d) for d <= 0 (vector format) in Q16: host/golden/functions.py exp_neg */
static int64_t exp_neg(int64_t d)
{
	int64_t nd = -d;
	if (nd > ROMA_EXP_IN_MAX)
		nd = ROMA_EXP_IN_MAX;
	int64_t t = (nd * ROMA_LOG2E_Q) >> 16;
	int64_t n = t >> ROMA_VEC_FRAC;
	const int low = ROMA_VEC_FRAC - ROMA_EXP_TABLE_BITS;
	int64_t f = t & ((1LL << ROMA_VEC_FRAC) - 1);
	int64_t i = f >> low;
	int64_t t0 = roma_exp2_table[i];
	int64_t v = t0 + (((roma_exp2_table[i + 1] - t0) * (f & ((1LL << low) - 1))) >> low);
	return n >= 32 ? 0 : v >> n;
}

uint16_t sample_token(struct sampling *s, uint32_t vocab, void (*top_k)(uint32_t, int64_t *, uint16_t *),
		      uint16_t greedy_token)
{
	if (s->temp_q == 0)
		return greedy_token;
	uint32_t k = s->top_k < vocab ? s->top_k : vocab;
	top_k(k, top_l, top_i);
	int64_t total = 0;
	for (uint32_t j = 0; j < k; j++) {
		int64_t d = -(((top_l[0] - top_l[j]) << ROMA_TEMP_FRAC) / s->temp_q);
		total += exp_neg(d);
		cum[j] = total;
	}
	int64_t need = (total * (int64_t)s->top_p_q) >> ROMA_TOP_P_FRAC;
	uint32_t keep = 0;
	while (keep < k && cum[keep] < need)
		keep++;
	keep += 1;
	if (keep > k)
		keep = k;
	int64_t kept = cum[keep - 1];
	s->state = xorshift32(s->state);
	int64_t u = (int64_t)(((uint64_t)s->state * (uint64_t)kept) >> 32);
	uint32_t j = 0;
	while (j < keep && cum[j] <= u)
		j++;
	return top_i[j];
}
