/* ROMA firmware: serves the host protocol (host/protocol.py) and runs generation on the accelerator:
   prefill the prompt position by position, then decode, sampling as the golden model does and streaming
   each token the moment it exists. Every length and index from the host is checked; nothing is allocated. */
#include <generated/csr.h>
#include <generated/soc.h>
#include <string.h>

#include "accel.h"
#include "adapter.h"
#include "link.h"
#include "roma_config.h"
#include "sample.h"
#include "timebase.h"

#define FIRMWARE_VERSION 1

static struct frame req, side;

static uint16_t rd16(const uint8_t *p) { return p[0] | (p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return rd16(p) | ((uint32_t)rd16(p + 2) << 16); }
static uint8_t *wr16(uint8_t *p, uint32_t v) { p[0] = v & 0xff; p[1] = (v >> 8) & 0xff; return p + 2; }
static uint8_t *wr32(uint8_t *p, uint32_t v) { return wr16(wr16(p, v & 0xffff), v >> 16); }

static void send_info(uint8_t seq)
{
	uint8_t p[PROTO_INFO_SIZE], *q = p;
	static const uint16_t geo[] = {PROTO_VERSION, FIRMWARE_VERSION, ROMA_DIM, ROMA_N_LAYERS, ROMA_N_HEADS,
				       ROMA_N_KV_HEADS, ROMA_HEAD_DIM, ROMA_HIDDEN, ROMA_VOCAB, ROMA_CONTEXT,
				       ROMA_LANES, ROMA_MACS};
	for (unsigned i = 0; i < sizeof(geo) / sizeof(geo[0]); i++)
		q = wr16(q, geo[i]);
	*q++ = ROMA_CODE_BITS;
	*q++ = ROMA_HEAD_BITS;
	*q++ = ROMA_HEAD_SIGNED;
	*q++ = 0;
	q = wr32(q, ROMA_N_CMDS);
	q = wr32(q, ROMA_LAYER_CMDS);
	q = wr32(q, CONFIG_CLOCK_FREQUENCY);
	q = wr32(q, PROTO_MAX_PAYLOAD);
	memcpy(q, roma_model_hash, 16);
	q += 16;
	memset(q, 0, 32);
	memcpy(q, ROMA_MODEL_NAME, sizeof(ROMA_MODEL_NAME) - 1 < 32 ? sizeof(ROMA_MODEL_NAME) - 1 : 32);
	q += 32;
	adapter_info(q, q + 16, q + 17);
	q += 18;
	*q++ = ROMA_LORA_RANK;
	*q++ = 0;
	q = wr32(q, ROMA_MAX_CMDS);
	link_send(T_INFO_REPLY, seq, p, sizeof(p));
}

static void send_stats(uint8_t seq)
{
	uint8_t p[PROTO_STATS_SIZE], *q = p;
	const uint32_t *s = &link_stats.frames;
	for (int i = 0; i < PROTO_STATS_SIZE / 4; i++)
		q = wr32(q, s[i]);
	link_send(T_STATS_REPLY, seq, p, sizeof(p));
}

/* Between forward passes: a CANCEL ends the generation; any other request is refused as busy. */
static int cancel_requested(void)
{
	while (link_poll(&side)) {
		link_stats.requests++;
		if (side.type == T_CANCEL) {
			link_stats.cancelled++;
			return 1;
		}
		link_stats.busy_rejects++;
		link_error(side.seq, ERR_BUSY, side.type, "busy generating: only CANCEL is accepted");
	}
	return 0;
}

static void generate(const struct frame *f)
{
	if (f->len < PROTO_GENERATE_SIZE) {
		link_error(f->seq, ERR_PAYLOAD, f->len, "GENERATE payload too short");
		return;
	}
	const uint8_t *p = f->payload;
	uint32_t max_new = rd16(p), n_stop = rd16(p + 16), n_prompt = rd16(p + 18);
	struct sampling s = {.temp_q = rd16(p + 2), .top_k = rd16(p + 4), .top_p_q = rd32(p + 8),
			     .state = rd32(p + 12)};
	if (!s.state)
		s.state = ROMA_DEFAULT_SEED;
	if (n_stop > PROTO_MAX_STOP || f->len != PROTO_GENERATE_SIZE + 2 * (n_stop + n_prompt)) {
		link_error(f->seq, ERR_PAYLOAD, f->len, "GENERATE payload size does not match its token counts");
		return;
	}
	if (n_prompt == 0) {
		link_error(f->seq, ERR_PAYLOAD, 0, "empty prompt");
		return;
	}
	if (s.temp_q && (s.top_k < 1 || s.top_k > ROMA_MAX_TOP_K)) {
		link_error(f->seq, ERR_PAYLOAD, s.top_k, "top_k out of range");
		return;
	}
	if (s.top_p_q < 1 || s.top_p_q > (1u << ROMA_TOP_P_FRAC)) {
		link_error(f->seq, ERR_PAYLOAD, 0, "top_p out of range");
		return;
	}
	if (n_prompt >= ROMA_CONTEXT) {
		link_error(f->seq, ERR_CONTEXT, n_prompt, "prompt does not fit the KV cache (context)");
		return;
	}
	const uint8_t *stops = p + PROTO_GENERATE_SIZE, *prompt = stops + 2 * n_stop;
	for (uint32_t i = 0; i < n_prompt + n_stop; i++)
		if (rd16(stops + 2 * i) >= ROMA_VOCAB) {
			link_error(f->seq, ERR_TOKEN_RANGE, rd16(stops + 2 * i), "token id outside the vocabulary");
			return;
		}
	int clamped = n_prompt + max_new > ROMA_CONTEXT;
	if (clamped)
		max_new = ROMA_CONTEXT - n_prompt;

	struct accel_counters c0, c1;
	accel_read_counters(&c0);
	uint64_t t0 = uptime();
	uint32_t prefill = 0, decode = 0, pos = 0, n_new = 0, reason = DONE_MAX_TOKENS, cycles = 0;
	for (; pos < n_prompt; pos++) {
		accel_embed(rd16(prompt + 2 * pos));
		cycles = accel_forward(pos, pos == n_prompt - 1);
		prefill += cycles;
	}
	while (n_new < max_new) {
		uint64_t t_step = uptime();
		uint16_t tok = sample_token(&s, ROMA_VOCAB, accel_top_k, accel_argmax());
		uint8_t ev[PROTO_TOKEN_SIZE], *q = ev;
		q = wr16(q, n_new);
		q = wr16(q, pos);
		q = wr16(q, tok);
		q = wr16(q, 0);
		q = wr32(q, cycles);
		wr32(q, (uint32_t)(uptime() - t_step));
		link_send(T_TOKEN, f->seq, ev, sizeof(ev));
		link_stats.tokens++;
		n_new++;
		int stop = 0;
		for (uint32_t i = 0; i < n_stop; i++)
			stop |= rd16(stops + 2 * i) == tok;
		if (stop) {
			reason = DONE_STOP;
			break;
		}
		if (pos >= ROMA_CONTEXT) {
			reason = DONE_CONTEXT;
			break;
		}
		if (n_new == max_new) {
			if (clamped)
				reason = DONE_CONTEXT;     /* the KV cache is full */
			break;
		}
		if (cancel_requested()) {
			reason = DONE_CANCELLED;
			break;
		}
		accel_embed(tok);
		cycles = accel_forward(pos, 1);
		decode += cycles;
		pos++;
	}
	accel_read_counters(&c1);
	uint8_t d[PROTO_DONE_SIZE], *q = d;
	*q++ = reason;
	*q++ = 0;
	q = wr16(q, n_new);
	q = wr16(q, n_prompt);
	q = wr16(q, 0);
	q = wr32(q, prefill);
	q = wr32(q, decode);
	q = wr32(q, (uint32_t)(uptime() - t0));
	for (int i = 0; i < ROMA_N_COUNTERS; i++)
		q = wr32(q, c1.v[i] - c0.v[i]);
	link_send(T_DONE, f->seq, d, sizeof(d));
}

static void read_vm(const struct frame *f)
{
	static uint8_t out[PROTO_MAX_READ_VM * 8];
	if (f->len != PROTO_READ_VM_SIZE) {
		link_error(f->seq, ERR_PAYLOAD, f->len, "READ_VM payload size");
		return;
	}
	uint32_t adr = rd32(f->payload), n = rd16(f->payload + 4);
	if (n > PROTO_MAX_READ_VM || adr > ROMA_VM_WORDS * 32 || n > ROMA_VM_WORDS * 32 - adr) {
		link_error(f->seq, ERR_PAYLOAD, n, "READ_VM outside the vector memory");
		return;
	}
	for (uint32_t i = 0; i < n; i++) {
		uint64_t v = (uint64_t)accel_vm_read(adr + i);
		wr32(wr32(out + 8 * i, (uint32_t)v), (uint32_t)(v >> 32));
	}
	link_send(T_VM_REPLY, f->seq, out, 8 * n);
}

static void embed(const struct frame *f)
{
	if (f->len != 2 || rd16(f->payload) >= ROMA_VOCAB) {
		link_error(f->seq, ERR_PAYLOAD, f->len, "EMBED takes one token id inside the vocabulary");
		return;
	}
	accel_embed(rd16(f->payload));
	link_send(T_ACK, f->seq, 0, 0);
}

static void run(const struct frame *f)
{
	uint8_t out[8];
	if (f->len != 4 || rd16(f->payload) >= ROMA_CONTEXT || rd16(f->payload + 2) > accel_program_cmds()) {
		link_error(f->seq, ERR_PAYLOAD, f->len, "RUN takes a position inside the context and a command count");
		return;
	}
	wr16(wr32(out, accel_run(rd16(f->payload), rd16(f->payload + 2))), accel_argmax());
	link_send(T_ACK, f->seq, out, 6);
}

int main(void)
{
	link_init();
	accel_load_program();
	for (;;) {
		if (!link_poll(&req))
			continue;
		link_stats.requests++;
		switch (req.type) {
		case T_PING:
			link_send(T_ACK, req.seq, req.payload, req.len);
			break;
		case T_INFO:
			send_info(req.seq);
			break;
		case T_STATS:
			send_stats(req.seq);
			break;
		case T_CANCEL:
			link_send(T_ACK, req.seq, 0, 0);
			break;
		case T_GENERATE:
			generate(&req);
			break;
		case T_EMBED:
			embed(&req);
			break;
		case T_READ_VM:
			read_vm(&req);
			break;
		case T_RUN:
			run(&req);
			break;
		case T_ADAPTER_BEGIN:
			adapter_begin(&req);
			break;
		case T_ADAPTER_CMDS:
			adapter_cmds(&req);
			break;
		case T_ADAPTER_DATA:
			adapter_data(&req);
			break;
		case T_ADAPTER_END:
			adapter_end(&req);
			break;
		case T_SELECT:
			adapter_select(&req);
			break;
		}
	}
	return 0;
}
