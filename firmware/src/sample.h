/* Token sampling exactly as host/golden/sampler.py defines it (greedy, or temperature / top-k / top-p). */
#pragma once
#include <stdint.h>

struct sampling {
	uint16_t temp_q;        /* temperature * 256; 0: greedy */
	uint16_t top_k;
	uint32_t top_p_q;       /* top_p * 65536 */
	uint32_t state;         /* xorshift32 */
};

/* top_k(k, l, i) fills the k largest vector-format logits and their token ids, largest first, an equal logit
   to the lower id first; greedy uses the hardware's argmax alone */
uint16_t sample_token(struct sampling *s, uint32_t vocab, void (*top_k)(uint32_t, int64_t *, uint16_t *),
		      uint16_t greedy_token);
