/* Framed, CRC-checked messages over the UART (host/protocol.py defines the format). */
#pragma once
#include <stdint.h>
#include "roma_protocol.h"

struct frame {
	uint8_t type;
	uint8_t seq;
	uint16_t len;
	uint8_t payload[PROTO_MAX_PAYLOAD];
};

struct link_stats {
	uint32_t frames, crc_errors, truncated, bad_frames, requests, tokens, cancelled, busy_rejects;
};

extern struct link_stats link_stats;

void link_init(void);
/* Feeds the bytes the UART has; returns 1 when `f` holds a whole, checked request. Malformed frames are
   answered with an ERROR here and never returned. Never blocks. */
int link_poll(struct frame *f);
void link_send(uint8_t type, uint8_t seq, const void *payload, uint16_t len);
void link_error(uint8_t seq, uint8_t code, uint16_t detail, const char *msg);
uint16_t frame_crc(const uint8_t *data, uint32_t len, uint16_t crc);
