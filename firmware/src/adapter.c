#include <string.h>

#include "accel.h"
#include "adapter.h"
#include "roma_config.h"

enum { NONE, LOADING, LOADED };
static int state = NONE, selected;
static uint8_t hash[16];
static uint32_t n_cmds, layer_cmds, cmds_written, crc;

static uint16_t rd16(const uint8_t *p) { return p[0] | (p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return rd16(p) | ((uint32_t)rd16(p + 2) << 16); }

/* CRC-32 (zlib's: reflected, poly 0xEDB88320), continued over every CMDS and DATA payload in order; a byte
   at a time from a table made on first use */
static uint32_t crc_table[256];

static uint32_t crc32(uint32_t c, const uint8_t *p, uint32_t n)
{
	if (!crc_table[1])
		for (uint32_t i = 0; i < 256; i++) {
			uint32_t t = i;
			for (int k = 0; k < 8; k++)
				t = (t >> 1) ^ (0xEDB88320u & -(t & 1));
			crc_table[i] = t;
		}
	c = ~c;
	while (n--)
		c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
	return ~c;
}

static void unselect(void)
{
	selected = 0;
	accel_select(0, ROMA_N_CMDS, ROMA_LAYER_CMDS);
}

void adapter_begin(const struct frame *f)
{
	if (f->len != PROTO_ADAPTER_BEGIN_SIZE) {
		link_error(f->seq, ERR_PAYLOAD, f->len, "ADAPTER_BEGIN payload size");
		return;
	}
	const uint8_t *p = f->payload;
	if (ROMA_LORA_RANK == 0) {
		link_error(f->seq, ERR_ADAPTER, 0, "this device was built without adapter capacity (lora_rank 0)");
		return;
	}
	if (memcmp(p, roma_model_hash, 16)) {
		link_error(f->seq, ERR_ADAPTER, 0, "the adapter is for another base model (model hash differs)");
		return;
	}
	uint32_t n = rd16(p + 32), layer = rd16(p + 34);
	/* layers first, then the head, which is the base program's */
	if (layer == 0 || n - layer != ROMA_N_CMDS - ROMA_LAYER_CMDS || n > ROMA_MAX_CMDS - ROMA_N_CMDS) {
		link_error(f->seq, ERR_ADAPTER, n, "the adapter's program does not fit the command memory");
		return;
	}
	unselect();
	state = LOADING;
	memcpy(hash, p + 16, 16);
	n_cmds = n;
	layer_cmds = layer;
	cmds_written = 0;
	crc = 0;
	link_send(T_ACK, f->seq, 0, 0);
}

void adapter_cmds(const struct frame *f)
{
	const uint32_t words = ROMA_CMD_WORDS * 4;
	uint32_t index = rd16(f->payload), count = rd16(f->payload + 2);
	if (state != LOADING) {
		link_error(f->seq, ERR_ADAPTER, 0, "no adapter load in progress (ADAPTER_BEGIN first)");
		return;
	}
	/* in order, so that END can tell the whole program arrived */
	if (f->len < 4 || f->len != 4 + count * words || index != cmds_written || count > n_cmds - index) {
		state = NONE;
		link_error(f->seq, ERR_PAYLOAD, f->len, "ADAPTER_CMDS out of order or outside the adapter's program");
		return;
	}
	cmds_written += count;
	/* (the payload is only 2-byte aligned: each command is copied out before its words are read) */
	for (uint32_t k = 0; k < count; k++) {
		uint32_t w[ROMA_CMD_WORDS];
		memcpy(w, f->payload + 4 + k * words, words);
		accel_write_cmds(ROMA_N_CMDS + index + k, w, 1);
	}
	crc = crc32(crc, f->payload, f->len);
	link_send(T_ACK, f->seq, 0, 0);
}

/* one record: kind u8, bank u8, n u16, address u32, then its data; returns its size, or 0 if it is bad */
static uint32_t data_record(const uint8_t *p, uint32_t left)
{
	if (left < 8)
		return 0;
	uint32_t kind = p[0], bank = p[1], n = rd16(p + 2), adr = rd32(p + 4);
	/* weights: words of ROMA_MACS int16; row exponents: int8; zero words: no data (the padding of A's rows
	   and B's columns to whole groups); all only past the KV cache's part */
	uint32_t size = kind == 0 ? 2 * ROMA_MACS : kind == 1 ? 1 : 0;
	uint32_t lo = kind == 1 ? ROMA_KV_ROWS : ROMA_KV_WORDS, hi = kind == 1 ? ROMA_LORA_ROWS : ROMA_LORA_WORDS;
	if (kind > 2 || bank >= ROMA_LANES || 8 + n * size > left || adr < lo || adr > hi || n > hi - adr)
		return 0;
	if (kind == 0)
		accel_h_weights(bank, adr, (const int16_t *)(p + 8), n);
	else if (kind == 1)
		accel_h_exponents(bank, adr, (const int8_t *)(p + 8), n);
	else
		accel_h_weights(bank, adr, 0, n);
	/* the next record starts 2-byte aligned (int16 weights) */
	return (8 + n * size + 1) & ~1u;
}

void adapter_data(const struct frame *f)
{
	if (state != LOADING) {
		link_error(f->seq, ERR_ADAPTER, 0, "no adapter load in progress (ADAPTER_BEGIN first)");
		return;
	}
	for (uint32_t at = 0; at < f->len;) {
		uint32_t used = data_record(f->payload + at, f->len - at);
		if (!used || used > f->len - at) {
			state = NONE;
			link_error(f->seq, ERR_PAYLOAD, at, "ADAPTER_DATA record outside the adapter's part of the H-unit banks");
			return;
		}
		at += used;
	}
	crc = crc32(crc, f->payload, f->len);
	link_send(T_ACK, f->seq, 0, 0);
}

void adapter_end(const struct frame *f)
{
	if (f->len != 4 || state != LOADING) {
		link_error(f->seq, ERR_ADAPTER, f->len, "ADAPTER_END without a load in progress");
		return;
	}
	if (cmds_written != n_cmds) {
		state = NONE;
		link_error(f->seq, ERR_ADAPTER, cmds_written, "the adapter's program did not all arrive: load it again");
		return;
	}
	if (rd32(f->payload) != crc) {
		state = NONE;
		link_error(f->seq, ERR_ADAPTER, 0, "adapter checksum mismatch: load it again");
		return;
	}
	state = LOADED;
	link_send(T_ACK, f->seq, 0, 0);
}

void adapter_select(const struct frame *f)
{
	if (f->len != 1 || f->payload[0] > 1) {
		link_error(f->seq, ERR_PAYLOAD, f->len, "SELECT takes one byte: 0 base model, 1 the loaded adapter");
		return;
	}
	if (f->payload[0] == 0) {
		unselect();
	} else if (state != LOADED) {
		link_error(f->seq, ERR_ADAPTER, 0, "no adapter loaded");
		return;
	} else {
		selected = 1;
		accel_select(ROMA_N_CMDS, n_cmds, layer_cmds);
	}
	link_send(T_ACK, f->seq, 0, 0);
}

void adapter_info(uint8_t *hash16, uint8_t *loaded, uint8_t *sel)
{
	if (state == LOADED)
		memcpy(hash16, hash, 16);
	else
		memset(hash16, 0, 16);
	*loaded = state == LOADED;
	*sel = selected;
}
