/* The receive side is a byte-at-a-time state machine, so generation can poll for CANCEL between forward
   passes; a frame that stops arriving is dropped after PROTO_FRAME_TIMEOUT_MS.
   The UART is polled through its CSRs (no interrupts): bytes that arrived while the CPU booted wait in the
   hardware FIFO and are read like any others. */
#include <generated/csr.h>
#include <generated/soc.h>
#include <libbase/uart.h>      /* UART_EV_RX, UART_EV_TX */
#include <string.h>

#include "link.h"
#include "timebase.h"

struct link_stats link_stats;

enum { S_SYNC0, S_SYNC1, S_HEADER, S_PAYLOAD, S_CRC };

static int state;
static uint8_t header[PROTO_HEADER_SIZE];
static uint32_t got;
static uint8_t crc_bytes[2];
static uint64_t last_byte;
static struct frame rx;

/* CRC-16/CCITT-FALSE a byte at a time (the table is made by link_init: bulk loads are CRC-bound otherwise) */
static uint16_t crc_table[256];

uint16_t frame_crc(const uint8_t *data, uint32_t len, uint16_t crc)
{
	for (uint32_t i = 0; i < len; i++)
		crc = (uint16_t)(crc << 8) ^ crc_table[(crc >> 8) ^ data[i]];
	return crc;
}

void link_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint16_t c = (uint16_t)(i << 8);
		for (int b = 0; b < 8; b++)
			c = (c & 0x8000) ? (uint16_t)((c << 1) ^ 0x1021) : (uint16_t)(c << 1);
		crc_table[i] = c;
	}
	uart_ev_enable_write(0);
	uart_ev_pending_write(uart_ev_pending_read());
	state = S_SYNC0;
	memset(&link_stats, 0, sizeof(link_stats));
}

static int rx_ready(void)
{
	return !uart_rxempty_read();
}

static uint8_t rx_byte(void)
{
	uint8_t c = uart_rxtx_read();
	uart_ev_pending_write(UART_EV_RX);
	return c;
}

static void put(const uint8_t *p, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		while (uart_txfull_read())
			;
		uart_rxtx_write(p[i]);
		uart_ev_pending_write(UART_EV_TX);
	}
}

void link_send(uint8_t type, uint8_t seq, const void *payload, uint16_t len)
{
	uint8_t h[2 + PROTO_HEADER_SIZE] = {PROTO_SYNC0, PROTO_SYNC1, PROTO_VERSION, type, seq,
					    (uint8_t)(len & 0xff), (uint8_t)(len >> 8)};
	uint16_t crc = frame_crc(h + 2, PROTO_HEADER_SIZE, 0xffff);
	crc = frame_crc(payload, len, crc);
	uint8_t c[2] = {(uint8_t)(crc & 0xff), (uint8_t)(crc >> 8)};
	put(h, sizeof(h));
	put(payload, len);
	put(c, 2);
}

void link_error(uint8_t seq, uint8_t code, uint16_t detail, const char *msg)
{
	uint8_t p[PROTO_ERROR_SIZE + 96];
	uint32_t n = strlen(msg);
	if (n > 96)
		n = 96;
	p[0] = code;
	p[1] = 0;
	p[2] = detail & 0xff;
	p[3] = detail >> 8;
	memcpy(p + PROTO_ERROR_SIZE, msg, n);
	link_send(T_ERROR, seq, p, PROTO_ERROR_SIZE + n);
}

static int known_request(uint8_t t)
{
	return t == T_PING || t == T_INFO || t == T_GENERATE || t == T_CANCEL || t == T_STATS || t == T_EMBED ||
	       t == T_READ_VM || t == T_RUN || t == T_ADAPTER_BEGIN || t == T_ADAPTER_CMDS || t == T_ADAPTER_DATA ||
	       t == T_ADAPTER_END || t == T_SELECT;
}

int link_poll(struct frame *f)
{
	uint64_t now = uptime();
	/* only a frame whose next byte has not arrived times out (a long forward pass may leave bytes waiting) */
	if (state != S_SYNC0 && !rx_ready() && now - last_byte > timeout_cycles(PROTO_FRAME_TIMEOUT_MS)) {
		link_stats.truncated++;
		link_error(state > S_HEADER ? rx.seq : 0, ERR_TRUNCATED, (uint16_t)got,
			   "frame truncated: no byte for the frame timeout");
		state = S_SYNC0;
	}
	int any = 0;
	while (rx_ready()) {
		uint8_t c = rx_byte();
		any = 1;
		switch (state) {
		case S_SYNC0:
			if (c == PROTO_SYNC0)
				state = S_SYNC1;
			break;
		case S_SYNC1:
			state = c == PROTO_SYNC1 ? S_HEADER : (c == PROTO_SYNC0 ? S_SYNC1 : S_SYNC0);
			got = 0;
			break;
		case S_HEADER:
			header[got++] = c;
			if (got == PROTO_HEADER_SIZE) {
				rx.type = header[1];
				rx.seq = header[2];
				rx.len = header[3] | (header[4] << 8);
				got = 0;
				if (rx.len > PROTO_MAX_PAYLOAD) {
					link_stats.bad_frames++;
					link_error(rx.seq, ERR_LENGTH, rx.len, "frame longer than the maximum payload");
					state = S_SYNC0;
				} else {
					state = rx.len ? S_PAYLOAD : S_CRC;
				}
			}
			break;
		case S_PAYLOAD:
			rx.payload[got++] = c;
			if (got == rx.len) {
				got = 0;
				state = S_CRC;
			}
			break;
		case S_CRC:
			crc_bytes[got++] = c;
			if (got == 2) {
				uint16_t want = crc_bytes[0] | (crc_bytes[1] << 8);
				uint16_t crc = frame_crc(header, PROTO_HEADER_SIZE, 0xffff);
				crc = frame_crc(rx.payload, rx.len, crc);
				state = S_SYNC0;
				if (crc != want) {
					link_stats.crc_errors++;
					link_error(rx.seq, ERR_CRC, 0, "CRC mismatch: frame dropped");
				} else if (header[0] != PROTO_VERSION) {
					link_stats.bad_frames++;
					link_error(rx.seq, ERR_VERSION, header[0], "unsupported protocol version");
				} else if (!known_request(rx.type)) {
					link_stats.bad_frames++;
					link_error(rx.seq, ERR_TYPE, rx.type, "unknown frame type");
				} else {
					link_stats.frames++;
					memcpy(f, &rx, sizeof(rx) - PROTO_MAX_PAYLOAD + rx.len);
					last_byte = uptime();
					return 1;
				}
			}
			break;
		}
	}
	if (any)
		last_byte = uptime();
	return 0;
}
