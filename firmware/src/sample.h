/* Token sampling exactly as host/golden/sampler.py defines it (greedy, or temperature / top-k / top-p). */
#pragma once
#include <stdint.h>

struct sampling {
	uint16_t temp_q;        /* temperature * 256; 0: greedy */
	uint16_t top_k;
	uint32_t top_p_q;       /* top_p * 65536 */
	uint32_t state;         /* xorshift32 */
};

/* logit(i) gives the vector-format logit of token i; greedy uses the hardware's argmax instead */
uint16_t sample_token(struct sampling *s, uint32_t vocab, int64_t (*logit)(uint32_t), uint16_t greedy_token);
